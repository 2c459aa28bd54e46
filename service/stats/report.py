"""The one builder of the load balancer's figures, which ``/stats`` and ``/metrics`` both read.

A :class:`Report` is one moment of the whole service: the metrics snapshot (every worker),
every pool's targets, and every aggregated service's entry. ``document()`` is the ``/stats``
payload; the Prometheus exposition maps the same report.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from service.metrics import WINDOW_S, Snapshot

if TYPE_CHECKING:
    from service.context import WorkerContext

Entry = dict[str, Any]
LIFTED = ("database", "cache")  # copied to the top level from the user_service entry


@dataclass(frozen=True, slots=True)
class Report:
    snapshot: Snapshot
    pools: dict[str, Entry]  # pool name -> its balance, panic flag and targets
    services: dict[str, Entry]  # stats key -> the service's entry (or its offline reason)
    draining: bool = False  # a graceful shutdown has begun: the process still serves
    pools_without_live_target: int = 0  # pools none of whose targets is in rotation and answering
    cluster: Entry | None = None  # replicas and their status, when a cluster is configured
    tls: Entry | None = None  # the served certificate, when LB_TLS_CERT is set
    limits: Entry | None = None  # admission control: rate limits, caps (service.admission)
    config: Entry | None = None  # the configuration this worker runs (service.reload)

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
        if self.cluster is not None:
            entry["cluster"] = self.cluster
        if self.tls is not None:
            entry["tls"] = self.tls
        if self.limits is not None:
            entry["limits"] = self.limits
        if self.config is not None:
            entry["config"] = self.config
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


async def build_report(lb: WorkerContext, *, history: bool = False) -> Report:
    """Ask the services (in parallel, bounded) and read this host's figures, fresh;
    ``history``: with the last 15 minutes too (the status page's charts). The pools are
    described after the fan-out, so a target the fan-out just found dead shows so."""
    if lb.cluster is None:
        services = await lb.aggregator.collect()
        snapshot, cluster = lb.metrics.snapshot(history=history), None
    else:
        # With replicas: every replica's figures (one bounded Redis round trip) merged with
        # this host's, read while the services are asked.
        services, (snapshot, cluster) = await asyncio.gather(
            lb.aggregator.collect(), lb.cluster.read(lb.metrics, history=history)
        )
    pools = {name: pool.describe() for name, pool in lb.pools.items()}
    for name, entry in pools.items():  # what targets that left had counted stays counted
        retired = lb.slots.retired(name)
        entry["retired"] = {
            "targets": retired.targets, "requests": retired.requests,
            "failures": retired.failures,
        }  # fmt: skip
    if lb.discovery is not None:
        for name, entries in lb.discovery.describe(lb.pools).items():
            pools[name]["discovery"] = entries
    dead = sum(not pool.has_live_target() for pool in lb.pools.values())
    tls = lb.tls.describe() if lb.tls is not None else None
    limits = lb.admission.entry()
    config = lb.reload.describe() if lb.reload is not None else None
    return Report(
        snapshot, pools, services, lb.draining, dead, cluster, tls=tls, limits=limits, config=config
    )


def _mean_ms(total_s: float, count: int) -> float:
    return round(1000.0 * total_s / count, 3) if count else 0.0
