"""The last 15 minutes in 5 s buckets: what the status page charts, kept in the shared block.

Every worker writes its own ring of buckets (``RING``, in its row, no lock, like the rest of
the store). A bucket is stamped with its *wall-clock* epoch (``int(time.time() / 5)``),
not the monotonic one the 10 s window uses, so that buckets of different hosts cover the
same 5 s and a cluster store can merge replicas with :meth:`History.merged` exactly as a
read merges the workers of one host. Memory is fixed at start-up: 184 buckets of 66 doubles
per worker row (95 KiB).

Only *completed* buckets are read: the current one is still filling, and charting it would
show a dip at the end of every line.
"""

from __future__ import annotations

import operator
from dataclasses import dataclass
from typing import Any

from service.metrics.bins import COARSE_BINS, coarse_quantile_ms
from service.sharedmem import TimeRing

HISTORY_RESOLUTION_S = 5.0
HISTORY_SPAN_S = 900.0
# count of every proxied request, of those answered 5xx (or not at all), of real API
# requests, of those not answered below 400, their summed duration, their latency histogram
REQUESTS, SERVER_ERRORS, REAL, REAL_FAILED, REAL_DURATION = range(5)
HIST_AT = 5
_SPAN_BUCKETS = round(HISTORY_SPAN_S / HISTORY_RESOLUTION_S)
RING = TimeRing(  # the completed buckets of the span, and the one filling
    resolution_s=HISTORY_RESOLUTION_S,
    in_window=_SPAN_BUCKETS + 1,
    slots=_SPAN_BUCKETS + 4,
    values=HIST_AT + COARSE_BINS,
)


@dataclass(frozen=True, slots=True)
class Bucket:
    """The traffic of one 5 s span, summed over every worker (and replica) that had any."""

    epoch: int  # int(wall-clock time / resolution): the span starts at epoch * resolution
    requests: int  # every proxied request finished in it
    server_errors: int  # ... answered 5xx by the upstream or the proxy, or never answered
    real_requests: int  # real API requests (the contract's definition)
    real_failures: int  # ... not answered below 400 (the complement of success_rate)
    real_duration_s: float
    histogram: tuple[float, ...]  # real API latency, coarse bins (service.metrics.bins)

    @classmethod
    def read(cls, epoch: int, values: list[float]) -> Bucket:
        """A bucket from a ring's values (``RING.values`` doubles)."""
        return cls(
            epoch,
            int(values[REQUESTS]),
            int(values[SERVER_ERRORS]),
            int(values[REAL]),
            int(values[REAL_FAILED]),
            values[REAL_DURATION],
            tuple(values[HIST_AT:]),
        )

    def merged(self, other: Bucket) -> Bucket:
        """The sum of two buckets of the same epoch (two workers, two replicas)."""
        return Bucket(
            self.epoch,
            self.requests + other.requests,
            self.server_errors + other.server_errors,
            self.real_requests + other.real_requests,
            self.real_failures + other.real_failures,
            self.real_duration_s + other.real_duration_s,
            tuple(map(operator.add, self.histogram, other.histogram)),
        )

    def document(self) -> dict[str, Any]:
        """The bucket as the status page reads it: rates and percentiles, not raw counts."""
        real = self.real_requests
        return {
            "t": self.epoch * HISTORY_RESOLUTION_S,
            "requests": self.requests,
            "requests_per_second": round(self.requests / HISTORY_RESOLUTION_S, 3),
            "real_requests_per_second": round(real / HISTORY_RESOLUTION_S, 3),
            "error_rate": round(100.0 * self.server_errors / self.requests, 3)
            if self.requests
            else 0.0,
            "real_failure_rate": round(100.0 * self.real_failures / real, 3) if real else 0.0,
            "avg_ms": round(1000.0 * self.real_duration_s / real, 3) if real else None,
            "p50_ms": coarse_quantile_ms(self.histogram, 0.50) if real else None,
            "p95_ms": coarse_quantile_ms(self.histogram, 0.95) if real else None,
            "p99_ms": coarse_quantile_ms(self.histogram, 0.99) if real else None,
        }


@dataclass(frozen=True, slots=True)
class History:
    """Completed buckets of the last ``HISTORY_SPAN_S`` that saw traffic, oldest first.

    A bucket with no traffic is absent, not zero: a reader fills the gaps (no requests,
    no latency) itself.
    """

    buckets: tuple[Bucket, ...]
    resolution_s: float = HISTORY_RESOLUTION_S
    span_s: float = HISTORY_SPAN_S

    @classmethod
    def of(cls, buckets: list[Bucket]) -> History:
        """Buckets of several sources (workers, replicas), merged by epoch."""
        by_epoch: dict[int, Bucket] = {}
        for bucket in buckets:
            seen = by_epoch.get(bucket.epoch)
            by_epoch[bucket.epoch] = bucket if seen is None else seen.merged(bucket)
        return cls(tuple(by_epoch[e] for e in sorted(by_epoch)))

    def merged(self, other: History) -> History:
        """This host's history with another's (the cluster store's replica merge)."""
        return History.of([*self.buckets, *other.buckets])

    def to_wire(self) -> list[list[Any]]:
        """A JSON-able form for other replicas: one list per bucket, the histogram sparse."""
        return [
            [
                b.epoch, b.requests, b.server_errors, b.real_requests, b.real_failures,
                b.real_duration_s,
                [i for i, n in enumerate(b.histogram) if n],
                [n for n in b.histogram if n],
            ]
            for b in self.buckets
        ]  # fmt: skip

    @classmethod
    def from_wire(cls, wire: list[list[Any]], now_wall: float) -> History:
        """What ``to_wire`` wrote, buckets older than the span left out; ValueError, TypeError
        or IndexError if it is not that shape."""
        oldest = int(now_wall / HISTORY_RESOLUTION_S) - _SPAN_BUCKETS
        buckets = []
        for epoch, requests, errors, real, failures, duration, bins, counts in wire:
            if int(epoch) < oldest:
                continue
            histogram = [0.0] * (RING.values - HIST_AT)
            for index, count in zip(bins, counts, strict=True):
                histogram[int(index)] = float(count)
            buckets.append(
                Bucket(
                    int(epoch), int(requests), int(errors), int(real), int(failures),
                    float(duration), tuple(histogram),
                )
            )  # fmt: skip
        return cls.of(buckets)

    def document(self) -> dict[str, Any]:
        return {
            "resolution_s": self.resolution_s,
            "span_s": self.span_s,
            "buckets": [bucket.document() for bucket in self.buckets],
        }


def read_history(mem: memoryview, rings: list[int], now_wall: float) -> History:
    """Every completed bucket within the span, of the rings at ``rings``, merged by epoch."""
    current = int(now_wall / HISTORY_RESOLUTION_S)
    buckets = []
    for at in rings:
        for epoch, values in RING.stamped(mem, at, now_wall):
            if epoch < current and mem[values + REQUESTS]:
                buckets.append(Bucket.read(epoch, mem[values : values + RING.values].tolist()))
    return History.of(buckets)
