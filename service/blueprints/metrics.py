"""``GET /metrics``: the same report as ``/stats``, in Prometheus' text format, all workers.

prometheus_client writes the format; this module only maps one report
(``service.stats.report``) onto metric families, in a collector built per scrape. It is
imported at the first scrape, not at start-up (here and in the features' ``exposition``
modules): a process that is never scraped does not hold it (about 3 MiB, 57 modules).

Every per-upstream series is labelled ``upstream`` with the pool's name (``blog-service``),
so ``lb_upstream_up`` joins ``lb_target_*`` in PromQL; ``lb_upstream_up`` also carries the
upstream's ``/stats`` key (``stats_key="blog_service"``).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING

from sanic import Blueprint, Request
from sanic.response import HTTPResponse, raw

from service.access import admin_only
from service.features import Families
from service.settings import Upstream
from service.stats import Report, build_report
from service.logs import answered_here

if TYPE_CHECKING:
    from prometheus_client.core import Metric

bp = Blueprint("metrics")


class ReportCollector:
    """A prometheus_client collector over one report."""

    def __init__(
        self, report: Report, upstreams: tuple[Upstream, ...], families: Sequence[Families] = ()
    ) -> None:
        """``families``: the features' (``service.features.Show``), written after these."""
        self._families = families
        self._report = report
        self._snap = report.snapshot
        self._services = report.services
        self._pools = report.pools
        self._upstreams = upstreams

    def collect(self) -> Iterator[Metric]:
        from prometheus_client.core import (  # at the first scrape: see the module's docstring
            CounterMetricFamily,
            GaugeMetricFamily,
            HistogramMetricFamily,
        )

        snap = self._snap
        requests = CounterMetricFamily(
            "lb_requests", "Proxied requests by route and status class.", labels=["route", "code"]
        )
        for route, classes in snap.by_route.items():
            for status_class, count in classes.items():
                requests.add_metric([route, status_class], count)
        yield requests
        durations = HistogramMetricFamily(
            "lb_request_duration_seconds",
            "Duration of proxied requests by route, from request received to last byte handed "
            "over.",
            labels=["route"],
        )
        for route, buckets in snap.route_buckets.items():
            durations.add_metric(
                [route],
                [(_bound(b), c) for b, c in buckets],
                sum_value=snap.route_duration_s.get(route, 0.0),
            )
        yield durations
        real = CounterMetricFamily(
            "lb_real_api_requests", "Real API requests (the contract's definition).",
            labels=["outcome"],
        )  # fmt: skip
        real.add_metric(["success"], snap.real_success)
        real.add_metric(["failure"], snap.real_count - snap.real_success)
        yield real
        errors = CounterMetricFamily(
            "lb_proxy_errors", "Error responses the proxy produced itself.", labels=["code"]
        )
        errors.add_metric(["502"], snap.proxy_502)
        errors.add_metric(["504"], snap.proxy_504)
        yield errors
        yield GaugeMetricFamily("lb_ws_connections", "Open heartbeat sockets.", snap.ws_connections)
        yield GaugeMetricFamily("lb_workers", "Live worker processes.", snap.workers)
        yield GaugeMetricFamily("lb_uptime_seconds", "Seconds since start.", snap.uptime_s)
        yield GaugeMetricFamily(
            "lb_draining", "1 once a graceful shutdown has begun.", float(self._report.draining)
        )
        yield GaugeMetricFamily(
            "lb_pools_without_live_target",
            "Upstream pools none of whose targets is in rotation and answering.",
            self._report.pools_without_live_target,
        )
        up = GaugeMetricFamily(
            "lb_upstream_up",
            "1 if the upstream's /stats entry says it is online or healthy.",
            labels=["upstream", "stats_key"],
        )
        for upstream in self._upstreams:
            entry = self._services.get(upstream.stats_key or "")
            if entry is None:
                continue  # not aggregated: no /stats entry to judge by
            online = entry.get("service_status") == "online" or entry.get("status") == "healthy"
            up.add_metric([upstream.name, upstream.stats_key], 1.0 if online else 0.0)
        yield up
        for families in self._families:
            yield from families(self._report)


def _bound(bound: float) -> str:
    return "+Inf" if bound == float("inf") else repr(bound)


@bp.get("/metrics")
@answered_here
@admin_only
async def metrics(request: Request) -> HTTPResponse:
    from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

    registry = CollectorRegistry(auto_describe=False)
    lb = request.app.ctx.lb
    report = await build_report(lb)
    families = lb.show.ordered_families()
    registry.register(ReportCollector(report, lb.settings.upstreams, families))
    return raw(generate_latest(registry), content_type=CONTENT_TYPE_LATEST)
