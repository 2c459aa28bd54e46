"""``/stats`` and ``/metrics``' data: every service's own ``/stats``, asked in parallel
(``fanout``), and the one builder of the load balancer's figures (``report``).

``startup(app)`` builds this worker's fan-out.
"""

from __future__ import annotations

from sanic import Sanic

from service.stats.fanout import StatsAggregator, unwrap
from service.stats.report import Report, build_report

__all__ = ["Report", "StatsAggregator", "build_report", "startup", "unwrap"]


def startup(app: Sanic) -> None:
    @app.before_server_start
    async def open_aggregator(app: Sanic) -> None:
        lb = app.ctx.lb
        lb.aggregator = StatsAggregator(
            lb.settings.upstreams,
            client_for=lambda name: lb.clients[name],
            url_for=lambda name: lb.pools[name].peek().url,
            settings=lb.settings.stats,
            contacted=lambda name, url, ok: lb.pools[name].contacted(url, ok),
        )
