"""A host's additive raw figures, and the one way figures of several hosts become a Snapshot.

:class:`HostFigures` is what a :class:`~service.metrics.store.Snapshot` is computed from,
in a form that adds across hosts without knowing what each figure means:

- ``counters``: lifetime totals (requests by route and class, durations, proxy errors...);
  they keep counting after their host is gone;
- ``gauges``: what is true *now* (open heartbeat sockets, live workers); only live hosts'
  count;
- ``latest``: wall-clock instants (the last heartbeat activity); the newest wins;
- ``rings``: time buckets keyed by *wall-clock* epoch (``int(wall_time / resolution)``), each
  a sparse ``{index: value}``; buckets of the same epoch add index by index, and a reader
  keeps those inside its window, so a host that stops publishing ages out by itself.

A new figure is a new key (or a new ring) here and one line where the snapshot reads it:
publishing, merging and the wire format carry it without change.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from service.metrics.store import HIST_BINS, STATUS_CLASSES, WINDOW_S, Snapshot

Buckets = dict[int, dict[int, float]]  # wall-clock epoch -> {index: value}

WINDOW_RING, HISTOGRAM_RING = "window", "histogram"  # (count, duration sum); latency bins
# A ring read from another replica: a resolution outside these would divide by zero or make
# an epoch too large for an integer when a reader computes its window.
MIN_RESOLUTION_S, MAX_RESOLUTION_S = 0.001, 3600.0


@dataclass(slots=True)
class Ring:
    resolution_s: float
    buckets: Buckets = field(default_factory=dict)

    def in_window(self, now_wall: float, window_s: float = WINDOW_S) -> Iterable[dict[int, float]]:
        """The buckets of the ``window_s`` seconds ending at ``now_wall``."""
        newest = math.floor(now_wall / self.resolution_s)
        oldest = newest - round(window_s / self.resolution_s)
        return (b for epoch, b in self.buckets.items() if oldest < epoch <= newest)


@dataclass(slots=True)
class HostFigures:
    counters: dict[str, float] = field(default_factory=dict)
    gauges: dict[str, float] = field(default_factory=dict)
    latest: dict[str, float] = field(default_factory=dict)
    rings: dict[str, Ring] = field(default_factory=dict)

    def to_wire(self) -> dict[str, Any]:
        """A JSON-able form. A ring's bucket is ``[epoch, [index...], [value...]]``: lists of
        numbers that JSON parsers read natively, so reading one back costs no per-key
        conversion."""
        return {
            "counters": self.counters,
            "gauges": self.gauges,
            "latest": self.latest,
            "rings": {
                name: {
                    "resolution_s": ring.resolution_s,
                    "buckets": [
                        [epoch, list(values), list(values.values())]
                        for epoch, values in ring.buckets.items()
                    ],
                }
                for name, ring in self.rings.items()
            },
        }

    @classmethod
    def from_wire(cls, data: dict[str, Any]) -> HostFigures:
        """The inverse of :meth:`to_wire`; raises ``ValueError``/``TypeError``/``KeyError``
        on a malformed document (so nothing malformed reaches a reader)."""
        rings = {}
        for name, ring in data.get("rings", {}).items():
            buckets: Buckets = {}
            for epoch, indices, values in ring["buckets"]:
                sum(indices) + sum(values) + epoch  # TypeError unless all are numbers
                buckets[epoch] = dict(zip(indices, values, strict=True))
            resolution = float(ring["resolution_s"])
            if not MIN_RESOLUTION_S <= resolution <= MAX_RESOLUTION_S:
                raise ValueError(f"ring {name!r}: resolution {resolution!r} s is out of range")
            rings[str(name)] = Ring(resolution, buckets)
        return cls(
            counters={str(k): float(v) for k, v in data.get("counters", {}).items()},
            gauges={str(k): float(v) for k, v in data.get("gauges", {}).items()},
            latest={str(k): float(v) for k, v in data.get("latest", {}).items()},
            rings=rings,
        )


def merge(hosts: Iterable[HostFigures], *, live: Iterable[HostFigures]) -> HostFigures:
    """Every host's counters, rings and instants; the gauges of the ``live`` hosts only."""
    merged = HostFigures()
    for host in hosts:
        _add(merged.counters, host.counters)
        for key, instant in host.latest.items():
            merged.latest[key] = max(instant, merged.latest.get(key, instant))
        for name, ring in host.rings.items():
            into = merged.rings.setdefault(name, Ring(ring.resolution_s)).buckets
            for epoch, values in ring.buckets.items():
                # the hot loop of a cold /stats read with many replicas: kept inline
                bucket = into.get(epoch)
                if bucket is None:
                    into[epoch] = dict(values)
                else:
                    get = bucket.get
                    for index, value in values.items():
                        bucket[index] = get(index, 0.0) + value
    for host in live:
        _add(merged.gauges, host.gauges)
    return merged


def _add(into: dict[Any, float], values: dict[Any, float]) -> None:
    get = into.get
    for key, value in values.items():
        into[key] = get(key, 0.0) + value


# -- figures -> snapshot ----------------------------------------------------------------------


def counter_key(*parts: str) -> str:
    return ":".join(parts)


def to_snapshot(figures: HostFigures, now_wall: float, base: Snapshot) -> Snapshot:
    """``base`` (this host's snapshot) with every additive figure taken from ``figures``.

    What is not additive across hosts (uptime, per-worker pids) stays ``base``'s.
    """
    c = figures.counters
    window_count, window_duration = 0.0, 0.0
    if ring := figures.rings.get(WINDOW_RING):
        for bucket in ring.in_window(now_wall):
            window_count += bucket.get(0, 0.0)
            window_duration += bucket.get(1, 0.0)
    histogram = [0.0] * HIST_BINS
    if ring := figures.rings.get(HISTOGRAM_RING):
        for bucket in ring.in_window(now_wall):
            for index, count in bucket.items():
                if type(index) is int and 0 <= index < HIST_BINS:
                    histogram[index] += count
    routes = dict.fromkeys(base.by_route, None) | {
        key.removeprefix("route:").rpartition(":")[0]: None for key in c if key.startswith("route:")
    }
    # every route's duration histogram (its buckets, then its sum), and all routes' together
    durations = {
        route: [c.get(counter_key("duration", route, str(i)), 0.0) for i in range(width)]
        for route in base.route_buckets
        for width in (len(base.lifetime_buckets) + 1,)
    }
    every = [sum(column) for column in zip(*durations.values(), strict=True)]
    heartbeat = figures.latest.get("heartbeat")
    return dataclasses.replace(
        base,
        total_requests=int(c.get("total", 0)),
        window_count=int(window_count),
        window_duration_s=window_duration,
        window_histogram=tuple(int(n) for n in histogram),
        real_count=int(c.get("real_count", 0)),
        real_duration_s=c.get("real_duration", 0.0),
        real_success=int(c.get("real_success", 0)),
        status_classes={s: int(c.get(counter_key("class", s), 0)) for s in STATUS_CLASSES},
        proxy_502=int(c.get("proxy_502", 0)),
        proxy_504=int(c.get("proxy_504", 0)),
        by_route={
            route: {s: int(c.get(counter_key("route", route, s), 0)) for s in STATUS_CLASSES}
            for route in routes
        },
        lifetime_buckets=_cumulative(base.lifetime_buckets, every) if every else (),
        route_buckets={
            route: _cumulative(base.lifetime_buckets, d) for route, d in durations.items()
        },
        route_duration_s={route: d[-1] for route, d in durations.items()},
        lifetime_duration_s=c.get("duration_sum", 0.0),
        ws_connections=int(figures.gauges.get("ws_open", 0)),
        heartbeat_age_s=max(0.0, now_wall - heartbeat) if heartbeat else None,
        workers=int(figures.gauges.get("workers", 0)),
    )


def _cumulative(
    bounds: tuple[tuple[float, int], ...], counts: list[float]
) -> tuple[tuple[float, int], ...]:
    """``(upper bound, cumulative count)`` pairs over ``bounds``' upper bounds."""
    total, out = 0, []
    for (bound, _), count in zip(bounds, counts, strict=False):
        total += int(count)
        out.append((bound, total))
    return tuple(out)
