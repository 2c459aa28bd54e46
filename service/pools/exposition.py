"""The pools' ``/metrics`` families: every target's state and counts, from the report's
``load-balancer.upstreams``."""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

from service.features import Figures

if TYPE_CHECKING:
    from prometheus_client.core import Metric

ORDER = 20  # after TLS' expiry, before the configuration's generation (as published)


def families(report: Figures) -> Iterator[Metric]:
    """``lb_target_*``, per pool and target."""
    from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily  # at the first scrape

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
    for name, pool in report.pools.items():
        for target in pool["targets"]:
            key = [name, target["url"]]
            live = target["state"] == "up" and target.get("reachable") is True
            up.add_metric(key, 1.0 if live else 0.0)
            outstanding.add_metric(key, target["outstanding"])
            requests.add_metric(key, target["requests"])
            failures.add_metric(key, target["failures"])
    yield from (up, outstanding, requests, failures)
