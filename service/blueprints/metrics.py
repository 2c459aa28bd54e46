"""``GET /metrics``: the same report as ``/stats``, in Prometheus' text format, all workers.

prometheus_client writes the format; this module only maps one report
(``service.stats.report``) onto metric families, in a collector built per scrape.

Every per-upstream series is labelled ``upstream`` with the pool's name (``blog-service``),
so ``lb_upstream_up`` joins ``lb_target_*`` in PromQL; ``lb_upstream_up`` also carries the
upstream's ``/stats`` key (``stats_key="blog_service"``).
"""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from sanic import Blueprint, Request
from sanic.response import HTTPResponse, raw

from service.access import admin_only
from service.settings import Upstream
from service.stats import Report, build_report
from service.logs import answered_here

bp = Blueprint("metrics")


class ReportCollector:
    """A prometheus_client collector over one report."""

    def __init__(
        self,
        report: Report,
        upstreams: tuple[Upstream, ...],
        admission: tuple[dict[str, int], dict[str, int]] = ({}, {}),
    ) -> None:
        """``admission``: requests limited by limit and overloaded by pool
        (``AdmissionView.metrics``)."""
        self._admission = admission
        self._report = report
        self._snap = report.snapshot
        self._services = report.services
        self._pools = report.pools
        self._upstreams = upstreams

    def collect(self) -> Iterator[Metric]:
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
        if self._report.tls is not None:
            expiry = GaugeMetricFamily(
                "lb_tls_certificate_expiry_seconds",
                "Seconds until the served TLS certificate expires (negative: expired).",
                labels=["subject"],
            )
            expiry.add_metric([self._report.tls["subject"]], self._report.tls["expires_in_s"])
            yield expiry
        yield from self._targets()
        yield from self._config()
        yield from self._discovery()
        yield from self._admitted()

    def _admitted(self) -> Iterator[Metric]:
        limited_by, overloaded_by = self._admission
        limited = CounterMetricFamily(
            "lb_limited_requests",
            "Requests over a rate limit (answered 429; a dry-run limit's would-be 429s) or over "
            'LB_MAX_CLIENT_REQUESTS (limit="max_client_requests").',
            labels=["limit"],
        )
        for name, count in limited_by.items():
            limited.add_metric([name], count)
        overloaded = CounterMetricFamily(
            "lb_overloaded_requests",
            "Requests answered 503 because the pool had max_requests in flight (this host).",
            labels=["upstream"],
        )
        for name, count in overloaded_by.items():
            overloaded.add_metric([name], count)
        yield from (limited, overloaded)

    def _config(self) -> Iterator[Metric]:
        config = self._report.config
        if config is None:
            return
        yield GaugeMetricFamily(
            "lb_config_generation",
            "Generation of the configuration this worker runs (1 at start, +1 per reload "
            "that changed it).",
            config["generation"],
        )
        reloads = CounterMetricFamily(
            "lb_config_reloads",
            "Reloads of the configuration file on this host, by result: applied, unchanged "
            "(the file was already running), failed (nothing changed).",
            labels=["result"],
        )
        for result, count in config["reloads"].items():
            reloads.add_metric([result], count)
        yield reloads
        yield GaugeMetricFamily(
            "lb_config_last_reload_successful",
            "0 while the last reload failed (see /stats load-balancer.config.last_error).",
            0.0 if config["last_error"] else 1.0,
        )

    def _targets(self) -> Iterator[Metric]:
        labels = ["upstream", "target"]
        up = GaugeMetricFamily(
            "lb_target_up",
            "1 if the target is in rotation and its last contact (a proxied request, an active "
            "check or a /stats call) succeeded; 0 if it failed or never happened.",
            labels=labels,
        )
        outstanding = GaugeMetricFamily(
            "lb_target_outstanding", "Requests in flight to the target.", labels=labels
        )
        requests = CounterMetricFamily(
            "lb_target_requests", "Attempts sent to the target.", labels=labels
        )
        failures = CounterMetricFamily("lb_target_failures", "Failed attempts.", labels=labels)
        for name, pool in self._pools.items():
            for target in pool["targets"]:
                key = [name, target["url"]]
                live = target["state"] == "up" and target.get("reachable") is True
                up.add_metric(key, 1.0 if live else 0.0)
                outstanding.add_metric(key, target["outstanding"])
                requests.add_metric(key, target["requests"])
                failures.add_metric(key, target["failures"])
        yield from (up, outstanding, requests, failures)

    def _discovery(self) -> Iterator[Metric]:
        """DNS discovery, per pool with ``;resolve`` entries (none without them)."""
        lookups = CounterMetricFamily(
            "lb_discovery_lookups",
            "DNS lookups of the pool's resolve entries, by result (ok, nxdomain, nodata, "
            "timeout, servfail, refused, no_servers, error).",
            labels=["upstream", "result"],
        )
        targets = GaugeMetricFamily(
            "lb_discovery_targets",
            "Targets the pool has from its resolve entries now.",
            labels=["upstream"],
        )
        for name, pool in self._pools.items():
            entries = pool.get("discovery")
            if not entries:
                continue
            totals: dict[str, int] = {}
            for entry in entries:
                for result, count in entry["lookups"].items():
                    totals[result] = totals.get(result, 0) + count
            for result, count in totals.items():
                lookups.add_metric([name, result], count)
            targets.add_metric([name], sum(len(entry["addresses"]) for entry in entries))
        yield from (lookups, targets)


def _bound(bound: float) -> str:
    return "+Inf" if bound == float("inf") else repr(bound)


@bp.get("/metrics")
@answered_here
@admin_only
async def metrics(request: Request) -> HTTPResponse:
    registry = CollectorRegistry(auto_describe=False)
    lb = request.app.ctx.lb
    report = await build_report(lb)
    registry.register(ReportCollector(report, lb.settings.upstreams, lb.admission.metrics()))
    return raw(generate_latest(registry), content_type=CONTENT_TYPE_LATEST)
