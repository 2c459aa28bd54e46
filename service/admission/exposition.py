"""Admission's ``/metrics`` families, from ``load-balancer.limits``."""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

from service.admission.policy import CLIENT_LIMIT
from service.features import Entry, Figures

if TYPE_CHECKING:
    from prometheus_client.core import Metric

ORDER = 50  # last (as published)


def families(report: Figures) -> Iterator[Metric]:
    """``lb_limited_requests`` by limit, ``lb_overloaded_requests`` by pool."""
    from prometheus_client.core import CounterMetricFamily  # at the first scrape

    limited_by, overloaded_by = counts(report.sections["limits"])
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


def counts(entry: Entry) -> tuple[dict[str, int], dict[str, int]]:
    """Requests limited by limit (the cluster's, with a cluster: like every figure of
    /metrics then) and overloaded by pool (this host's: pools are per host)."""
    limited = {
        name: (item.get("cluster") or item)["limited"] for name, item in entry["rate"].items()
    }
    if entry["max_client_requests"]["max"]:
        limited[CLIENT_LIMIT] = entry["max_client_requests"]["limited"]
    overloaded = {name: pool["overloaded"] for name, pool in entry["pools"].items()}
    return limited, overloaded
