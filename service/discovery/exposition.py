"""Discovery's ``/metrics`` families, from the pools' ``discovery`` entries."""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

from service.features import Figures

if TYPE_CHECKING:
    from prometheus_client.core import Metric

ORDER = 40  # after the configuration's generation, before admission (as published)


def families(report: Figures) -> Iterator[Metric]:
    """DNS discovery, per pool with ``;resolve`` entries (none without them)."""
    from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily  # at the first scrape

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
    for name, pool in report.pools.items():
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
