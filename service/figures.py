"""The ``load-balancer`` entry of ``/stats``, computed from one metrics snapshot.

Key names and meanings of the first seven keys are the contract's and do not change; the
rest are additions.
"""

from __future__ import annotations

from typing import Any

from service.metrics import WINDOW_S, Snapshot


def load_balancer_entry(snap: Snapshot) -> dict[str, Any]:
    heartbeat_recent = snap.heartbeat_age_s is not None and snap.heartbeat_age_s <= WINDOW_S
    return {
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
    }


def _mean_ms(total_s: float, count: int) -> float:
    return round(1000.0 * total_s / count, 3) if count else 0.0
