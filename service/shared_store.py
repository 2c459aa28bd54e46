"""The metrics store shared by every worker process of one host.

One block of shared memory (a ``multiprocessing.RawArray`` of doubles, exact for integers up
to 2**53) made in ``main_process_start`` and handed to the workers through
``app.shared_ctx``. Each worker claims a row once, at start-up, and from then on is the
only writer of that row, so recording takes no lock and no worker ever waits on another;
``snapshot`` sums every row. A worker that replaces a dead one takes over its row and keeps
adding to it, so lifetime totals survive worker restarts.

A row holds lifetime counters, per-route counters and two rings of time buckets for the
sliding window: fine buckets (50 ms: count and duration sum, so the 10 s window is exact
to 0.5 %) and coarse buckets (250 ms: the latency histogram for percentiles). A bucket is
stamped with the epoch it belongs to and reset by its writer when the ring comes round;
readers skip buckets whose stamp is outside the window. Memory is fixed at start-up.
"""

from __future__ import annotations

import math
import multiprocessing
import os
import time
from bisect import bisect_left
from collections.abc import Callable, Sequence
from ctypes import c_double
from dataclasses import dataclass
from typing import Any

from service.metrics import (
    HIST_BINS,
    STATUS_CLASSES,
    WINDOW_S,
    RequestSample,
    Snapshot,
    histogram_bin,
)

FINE_S = 0.05
FINE_IN_WINDOW = round(WINDOW_S / FINE_S)
FINE_RING = FINE_IN_WINDOW + 56
COARSE_S = 0.25
COARSE_IN_WINDOW = round(WINDOW_S / COARSE_S)
COARSE_RING = COARSE_IN_WINDOW + 8
# Upper bounds (s) of the lifetime duration histogram exported to Prometheus.
LIFETIME_BOUNDS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)

# Lifetime fields of a row, in order.
_FIELDS = (
    "pid", "total", "real_count", "real_duration", "real_success", "proxy_502", "proxy_504",
    "ws_open", "last_heartbeat", "duration_sum",
)  # fmt: skip
F = {name: i for i, name in enumerate(_FIELDS)}
_TOTAL, _REAL_COUNT, _REAL_DURATION, _REAL_SUCCESS = (
    F["total"],
    F["real_count"],
    F["real_duration"],
    F["real_success"],
)
_PROXY_502, _PROXY_504, _DURATION_SUM = F["proxy_502"], F["proxy_504"], F["duration_sum"]
_N_CLASSES = len(STATUS_CLASSES)
_CLASSES_AT = len(_FIELDS)
_LIFETIME_AT = _CLASSES_AT + len(STATUS_CLASSES)
_ROUTES_AT = _LIFETIME_AT + len(LIFETIME_BOUNDS) + 1
_FINE_WIDTH = 3  # epoch, count, duration sum
_COARSE_WIDTH = 1 + HIST_BINS  # epoch, histogram
_HEADER = 2  # start time (monotonic), start time (wall clock)


@dataclass(frozen=True, slots=True)
class Layout:
    """Where everything sits in the block, for a given route list and row count."""

    routes: tuple[str, ...]
    rows: int

    @property
    def fine_at(self) -> int:
        return _ROUTES_AT + len(self.routes) * len(STATUS_CLASSES)

    @property
    def coarse_at(self) -> int:
        return self.fine_at + FINE_RING * _FINE_WIDTH

    @property
    def row_size(self) -> int:
        return self.coarse_at + COARSE_RING * _COARSE_WIDTH

    @property
    def size(self) -> int:
        return _HEADER + self.rows * self.row_size


def allocate(layout: Layout, clock: Callable[[], float] = time.monotonic) -> Any:
    """The shared block; call in the main process before the workers start."""
    block = multiprocessing.RawArray(c_double, layout.size)
    block[0] = clock()
    block[1] = time.time()
    return block


class SharedMemoryStore:
    """A :class:`~service.metrics.MetricsStore` over one shared block (see module docstring)."""

    def __init__(
        self,
        block: Any,
        layout: Layout,
        *,
        claim_lock: Any = None,
        clock: Callable[[], float] = time.monotonic,
        pid: int | None = None,
    ) -> None:
        self._layout = layout
        self._clock = clock
        self._mem = memoryview(block).cast("B").cast("d")
        self._route_index = {name: i for i, name in enumerate(layout.routes)}
        self.row_index = self._claim_row(claim_lock, pid or os.getpid())
        self._row = _HEADER + self.row_index * layout.row_size
        self._fine_at = self._row + layout.fine_at
        self._coarse_at = self._row + layout.coarse_at

    # -- writing (this worker's row only) -------------------------------------------------

    def record(self, sample: RequestSample) -> None:
        mem, row = self._mem, self._row
        duration = sample.duration_s
        mem[row + _TOTAL] += 1
        mem[row + _DURATION_SUM] += duration
        mem[row + _LIFETIME_AT + bisect_left(LIFETIME_BOUNDS, duration)] += 1
        status = sample.status
        if status:
            status_class = (5 if status >= 500 else status // 100 if status >= 100 else 1) - 1
            mem[row + _CLASSES_AT + status_class] += 1
            route = self._route_index.get(sample.route)
            if route is not None:
                mem[row + _ROUTES_AT + route * _N_CLASSES + status_class] += 1
            if sample.proxy_error and status in (502, 504):
                mem[row + (_PROXY_502 if status == 502 else _PROXY_504)] += 1
        if sample.real_api:
            self._record_real(duration, status)

    def _record_real(self, duration: float, status: int) -> None:
        mem, row = self._mem, self._row
        mem[row + _REAL_COUNT] += 1
        mem[row + _REAL_DURATION] += duration
        if 0 < status < 400:
            mem[row + _REAL_SUCCESS] += 1
        now = self._clock()
        fine = self._bucket(self._fine_at, _FINE_WIDTH, FINE_RING, int(now / FINE_S))
        mem[fine + 1] += 1
        mem[fine + 2] += duration
        coarse = self._bucket(self._coarse_at, _COARSE_WIDTH, COARSE_RING, int(now / COARSE_S))
        mem[coarse + 1 + histogram_bin(duration)] += 1

    def _bucket(self, ring_at: int, width: int, ring: int, epoch: int) -> int:
        """Offset of the current bucket of a ring, reset first if it holds an old epoch."""
        at = ring_at + (epoch % ring) * width
        if self._mem[at] != epoch:
            self._mem[at + 1 : at + width] = memoryview(bytes(8 * (width - 1))).cast("d")
            self._mem[at] = epoch
        return at

    def heartbeat(self) -> None:
        self._mem[self._row + F["last_heartbeat"]] = self._clock()

    def socket_opened(self) -> None:
        self._mem[self._row + F["ws_open"]] += 1
        self.heartbeat()

    def socket_closed(self) -> None:
        self._mem[self._row + F["ws_open"]] -= 1

    # -- reading (every row) --------------------------------------------------------------

    def snapshot(self) -> Snapshot:
        now = self._clock()
        rows = [r for r in self._row_offsets() if self._mem[r + F["pid"]]]
        live = [r for r in rows if process_alive(int(self._mem[r + F["pid"]]))]
        mem, layout = self._mem, self._layout

        def total(field: str) -> float:
            return sum(mem[r + F[field]] for r in rows)

        window_count, window_duration = self._window_totals(rows, now)
        classes = _column_sums(mem, rows, _CLASSES_AT, len(STATUS_CLASSES))
        lifetime = _column_sums(mem, rows, _LIFETIME_AT, len(LIFETIME_BOUNDS) + 1)
        by_route = {}
        for i, name in enumerate(layout.routes):
            counts = _column_sums(mem, rows, _ROUTES_AT + i * len(STATUS_CLASSES), 5)
            by_route[name] = dict(zip(STATUS_CLASSES, map(int, counts), strict=True))
        last_heartbeat = max((mem[r + F["last_heartbeat"]] for r in rows), default=0.0)
        cumulative = 0
        buckets = []
        for bound, count in zip((*LIFETIME_BOUNDS, math.inf), lifetime, strict=True):
            cumulative += int(count)
            buckets.append((bound, cumulative))
        return Snapshot(
            total_requests=int(total("total")),
            window_count=window_count,
            window_duration_s=window_duration,
            window_histogram=self._window_histogram(rows, now),
            real_count=int(total("real_count")),
            real_duration_s=total("real_duration"),
            real_success=int(total("real_success")),
            status_classes=dict(zip(STATUS_CLASSES, map(int, classes), strict=True)),
            proxy_502=int(total("proxy_502")),
            proxy_504=int(total("proxy_504")),
            by_route=by_route,
            lifetime_buckets=tuple(buckets),
            lifetime_duration_s=total("duration_sum"),
            # a dead worker's sockets died with it; its lifetime counters still count
            ws_connections=int(sum(mem[r + F["ws_open"]] for r in live)),
            heartbeat_age_s=(now - last_heartbeat) if last_heartbeat else None,
            workers=len(live),
            uptime_s=max(0.0, now - mem[0]),
            requests_by_worker={str(int(mem[r + F["pid"]])): int(mem[r + _TOTAL]) for r in rows},
        )

    def _window_totals(self, rows: Sequence[int], now: float) -> tuple[int, float]:
        newest = math.floor(now / FINE_S)
        count, duration = 0.0, 0.0
        for r in rows:
            for at in self._ring(r + self._layout.fine_at, _FINE_WIDTH, FINE_RING):
                if newest - FINE_IN_WINDOW < self._mem[at] <= newest:
                    count += self._mem[at + 1]
                    duration += self._mem[at + 2]
        return int(count), duration

    def _window_histogram(self, rows: Sequence[int], now: float) -> tuple[int, ...]:
        newest = math.floor(now / COARSE_S)
        merged = [0.0] * HIST_BINS
        for r in rows:
            for at in self._ring(r + self._layout.coarse_at, _COARSE_WIDTH, COARSE_RING):
                if newest - COARSE_IN_WINDOW < self._mem[at] <= newest:
                    merged = [
                        a + b
                        for a, b in zip(merged, self._mem[at + 1 : at + _COARSE_WIDTH], strict=True)
                    ]
        return tuple(int(c) for c in merged)

    @staticmethod
    def _ring(start: int, width: int, ring: int) -> range:
        return range(start, start + width * ring, width)

    def _row_offsets(self) -> range:
        size = self._layout.row_size
        return range(_HEADER, _HEADER + self._layout.rows * size, size)

    def _claim_row(self, lock: Any, pid: int) -> int:
        """Take the row of a dead worker, or an unused one (start-up only, under a lock)."""
        if lock is not None:
            with lock:
                return self._claim_row(None, pid)
        offsets = list(self._row_offsets())
        for index, at in enumerate(offsets):
            if int(self._mem[at + F["pid"]]) == pid:
                return index
        for index, at in enumerate(offsets):
            owner = int(self._mem[at + F["pid"]])
            if owner == 0 or not process_alive(owner):
                self._mem[at + F["pid"]] = pid
                self._mem[at + F["ws_open"]] = 0  # a dead worker's sockets died with it
                return index
        raise RuntimeError(f"metrics store is full: all {self._layout.rows} worker rows in use")


def _column_sums(mem: memoryview, rows: Sequence[int], at: int, width: int) -> list[float]:
    sums = [0.0] * width
    for r in rows:
        sums = [a + b for a, b in zip(sums, mem[r + at : r + at + width], strict=True)]
    return sums


def process_alive(pid: int) -> bool:
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
