"""``/stats`` and ``/metrics``' data: every service's own ``/stats``, asked in parallel
(``fanout``), and the one builder of the load balancer's figures (``report``).

``startup(app)`` builds this worker's fan-out.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING

from sanic import Sanic

from service.settings import Settings
from service.stats.fanout import StatsAggregator, unwrap
from service.stats.report import Report, build_report

if TYPE_CHECKING:
    from service.pools import Pool
    from service.transport import UpstreamClients

__all__ = ["Report", "StatsAggregator", "build_aggregator", "build_report", "startup", "unwrap"]


def build_aggregator(
    settings: Settings, clients: UpstreamClients, pools: Mapping[str, Pool]
) -> StatsAggregator:
    """The fan-out over these clients and pools. Bound to them, not to whatever the worker
    holds later: a fan-out in flight when a reload swaps them finishes on its own."""
    return StatsAggregator(
        settings.upstreams,
        client_for=clients.__getitem__,
        url_for=lambda name: pools[name].peek().url,
        settings=settings.stats,
        contacted=lambda name, url, ok: pools[name].contacted(url, ok),
    )


def startup(app: Sanic) -> None:
    @app.before_server_start
    async def open_aggregator(app: Sanic) -> None:
        lb = app.ctx.lb
        lb.aggregator = build_aggregator(lb.settings, lb.clients, lb.pools)
