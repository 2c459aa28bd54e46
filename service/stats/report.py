"""The one builder of the load balancer's figures, which ``/stats`` and ``/metrics`` both read.

A :class:`Report` is one moment of the whole service: the metrics snapshot (every worker),
every pool's targets, and every aggregated service's entry. ``document()`` is the ``/stats``
payload; the Prometheus exposition maps the same report.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from service.features import Section, Show
from service.metrics import WINDOW_S, MetricsStore, Snapshot
from service.pools import Pool, SlotTable
from service.stats.fanout import StatsAggregator

Entry = dict[str, Any]
LIFTED = ("database", "cache")  # copied to the top level from the user_service entry


@dataclass(frozen=True, slots=True)
class Report:
    snapshot: Snapshot
    pools: dict[str, Entry]  # pool name -> its balance, panic flag and targets
    services: dict[str, Entry]  # stats key -> the service's entry (or its offline reason)
    draining: bool = False  # a graceful shutdown has begun: the process still serves
    pools_without_live_target: int = 0  # pools none of whose targets is in rotation and answering
    # what the features show (``service.features.Show``), by key, in their order: cluster,
    # tls, limits, config...
    sections: dict[str, Section] = field(default_factory=dict)

    def load_balancer_entry(self) -> Entry:
        """The ``load-balancer`` entry. The first seven keys are the contract's and do not
        change; the rest are additions."""
        snap = self.snapshot
        heartbeat_recent = snap.heartbeat_age_s is not None and snap.heartbeat_age_s <= WINDOW_S
        entry: Entry = {
            "status": "healthy",
            "total_requests": snap.total_requests,
            "requests_per_second": round(snap.window_count / WINDOW_S, 3),
            "avg_response_time_ms": _mean_ms(snap.window_duration_s, snap.window_count),
            "avg_response_time_ms_lifetime": _mean_ms(snap.real_duration_s, snap.real_count),
            "success_rate": (
                round(100.0 * snap.real_success / snap.real_count, 3) if snap.real_count else 0.0
            ),
            "has_real_traffic": snap.window_count > 0 or heartbeat_recent,
            "p50_ms": round(snap.percentile_ms(0.50), 3),
            "p95_ms": round(snap.percentile_ms(0.95), 3),
            "p99_ms": round(snap.percentile_ms(0.99), 3),
            "window_s": WINDOW_S,
            "real_requests_in_window": snap.window_count,
            "real_requests_total": snap.real_count,
            "responses_by_class": snap.status_classes,
            "proxy_errors": {"502": snap.proxy_502, "504": snap.proxy_504},
            "ws_connections": snap.ws_connections,
            "workers": snap.workers,
            "uptime_s": round(snap.uptime_s, 3),
            "requests_by_worker": snap.requests_by_worker,
            "upstreams": self.pools,
            "draining": self.draining,
            "pools_without_live_target": self.pools_without_live_target,
        }
        entry.update(self.sections)
        return entry

    def document(self) -> Entry:
        """The whole ``/stats`` payload."""
        document: Entry = {"load-balancer": self.load_balancer_entry()}
        document.update(self.services)
        user_service = self.services.get("user_service", {})
        for key in LIFTED:
            if key in user_service:
                document[key] = user_service[key]
        return document


class Serving(Protocol):
    """What the report reads of a worker (``service.context.WorkerContext``)."""

    aggregator: StatsAggregator
    metrics: MetricsStore
    pools: Mapping[str, Pool]
    slots: SlotTable
    draining: bool
    show: Show


async def build_report(lb: Serving, *, history: bool = False) -> Report:
    """Ask the services (in parallel, bounded) and read this host's figures, fresh;
    ``history``: with the last 15 minutes too (the status page's charts). The pools are
    described after the fan-out, so a target the fan-out just found dead shows so."""
    sections: dict[str, Section] = {}
    if lb.show.figures is None:
        services = await lb.aggregator.collect()
        snapshot = lb.metrics.snapshot(history=history)
    else:
        # With replicas: every replica's figures (one bounded Redis round trip) merged with
        # this host's, read while the services are asked.
        key, read = lb.show.figures
        services, (snapshot, sections[key]) = await asyncio.gather(
            lb.aggregator.collect(), read(history)
        )
    pools = {name: pool.describe() for name, pool in lb.pools.items()}
    for name, entry in pools.items():  # what targets that left had counted stays counted
        retired = lb.slots.retired(name)
        entry["retired"] = {
            "targets": retired.targets, "requests": retired.requests,
            "failures": retired.failures,
        }  # fmt: skip
    for add in lb.show.pool_details:
        add(pools)
    dead = sum(not pool.has_live_target() for pool in lb.pools.values())
    for key, read_section in lb.show.sections:
        section = read_section()
        if section is not None:
            sections[key] = section
    return Report(snapshot, pools, services, lb.draining, dead, sections)


def _mean_ms(total_s: float, count: int) -> float:
    return round(1000.0 * total_s / count, 3) if count else 0.0
