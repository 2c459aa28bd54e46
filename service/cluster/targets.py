"""Per-target figures across the cluster: each replica's requests, failures, in-flight and
window figures per pool target, added up.

Only the figures travel; the targets' *state* (ejections, health verdicts) stays each host's
own, as in nginx and Envoy. Keys are ``target:<pool>|<url>:<figure>`` in the host's figures:
lifetime ``requests``/``failures`` as counters (they keep counting after a replica is
gone), ``outstanding`` and the window's ``window_requests``/``window_duration`` as gauges
(only live replicas', and as of their last publication).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from service.metrics import HostFigures
from service.pools import Pool

PREFIX = "target:"
COUNTERS = ("requests", "failures")
GAUGES = ("outstanding", "window_requests", "window_duration")


def add_target_figures(figures: HostFigures, pools: Mapping[str, Pool]) -> HostFigures:
    """``figures`` with every target's figures (all this host's workers) added."""
    for name, pool in pools.items():
        for target in pool.targets:
            f = target.state.figures(target.index)
            key = f"{PREFIX}{name}|{target.url}:"
            figures.counters[key + "requests"] = f.requests
            figures.counters[key + "failures"] = f.failures
            figures.gauges[key + "outstanding"] = f.outstanding
            figures.gauges[key + "window_requests"] = f.window_count
            figures.gauges[key + "window_duration"] = f.window_duration_s
    return figures


def cluster_targets(figures: HostFigures) -> dict[str, dict[str, dict[str, Any]]]:
    """``{pool: {url: {requests, failures, outstanding, window_requests, window_avg_ms}}}``
    from merged figures."""
    raw: dict[tuple[str, str], dict[str, float]] = {}
    for source in (figures.counters, figures.gauges):
        for key, value in source.items():
            if key.startswith(PREFIX):
                target, _, figure = key.removeprefix(PREFIX).rpartition(":")
                pool, _, url = target.partition("|")
                raw.setdefault((pool, url), {})[figure] = value
    out: dict[str, dict[str, dict[str, Any]]] = {}
    for (pool, url), values in sorted(raw.items()):
        count = int(values.get("window_requests", 0))
        duration = values.get("window_duration", 0.0)
        out.setdefault(pool, {})[url] = {
            "requests": int(values.get("requests", 0)),
            "failures": int(values.get("failures", 0)),
            "outstanding": int(values.get("outstanding", 0)),
            "window_requests": count,
            "window_avg_ms": round(1000 * duration / count, 3) if count else 0.0,
        }
    return out
