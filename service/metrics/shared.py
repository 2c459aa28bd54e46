"""The metrics store shared by every worker process of one host, on the shared block.

Each worker writes only its own row (``service.sharedmem``), so recording is lock-free and
O(1); ``snapshot`` sums every row. A row holds lifetime counters, per-route counters and two
time rings for the sliding window: fine buckets (50 ms: count and duration sum, so the 10 s
window is exact to 0.5 %) and coarse buckets (250 ms: the latency histogram for
percentiles); and the 15-minute history of 5 s buckets (``service.metrics.history``), read
only when a snapshot asks for it.
"""

from __future__ import annotations

import math
import time
from bisect import bisect_left
from collections.abc import Callable, Sequence

from service.metrics.bins import coarse_bin
from service.metrics.history import HIST_AT, REAL, REAL_DURATION, REAL_FAILED, SERVER_ERRORS
from service.metrics.history import RING as HISTORY
from service.metrics.history import read_history
from service.metrics.figures import HISTOGRAM_RING, WINDOW_RING, HostFigures, Ring
from service.metrics.sample import LOCAL, RequestSample
from service.metrics.store import HIST_BINS, STATUS_CLASSES, WINDOW_S, Snapshot, histogram_bin
from service.sharedmem import Plan, RingCursor, TimeRing, WorkerRow

FINE = TimeRing(resolution_s=0.05, in_window=round(WINDOW_S / 0.05), slots=256, values=2)
COARSE = TimeRing(resolution_s=0.25, in_window=round(WINDOW_S / 0.25), slots=48, values=HIST_BINS)
# Upper bounds (s) of the lifetime duration histograms (one per route) exported to
# Prometheus. Proxied requests here take 1-3 ms: Prometheus' default buckets start at 5 ms
# and would put nearly every sample in the first one, so the low end is fine-grained.
LIFETIME_BOUNDS = (
    0.0005, 0.001, 0.0015, 0.002, 0.003, 0.004, 0.005, 0.0075, 0.01, 0.025, 0.05,
    0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
)  # fmt: skip
_N_BUCKETS = len(LIFETIME_BOUNDS) + 1  # and +Inf
_DURATION_WIDTH = _N_BUCKETS + 1  # a route's buckets, then its duration sum

# Lifetime fields of a row, in order.
_FIELDS = (
    "total", "real_count", "real_duration", "real_success", "proxy_502", "proxy_504",
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
_WS_OPEN, _LAST_HEARTBEAT = F["ws_open"], F["last_heartbeat"]
_N_CLASSES = len(STATUS_CLASSES)
_CLASSES_AT = len(_FIELDS)
_ROUTES_AT = _CLASSES_AT + _N_CLASSES


class MetricsLayout:
    """The store's per-worker region of the block, reserved on ``plan`` for ``routes`` and
    ``spare`` more, named while serving (upstreams a reload adds: ``name_routes``)."""

    def __init__(self, plan: Plan, routes: tuple[str, ...], spare: int = 0) -> None:
        self.routes = routes
        self.capacity = len(routes) + spare
        self.durations_at = _ROUTES_AT + self.capacity * _N_CLASSES
        self.fine_at = self.durations_at + self.capacity * _DURATION_WIDTH
        self.coarse_at = self.fine_at + FINE.size
        self.history_at = self.coarse_at + COARSE.size
        self.region = plan.per_worker(self.history_at + HISTORY.size)


class SharedMemoryStore:
    """A :class:`~service.metrics.store.MetricsStore` over the worker rows of the block."""

    def __init__(
        self,
        row: WorkerRow,
        layout: MetricsLayout,
        *,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        """``wall_clock`` stamps the history, whose buckets must line up across hosts."""
        self._block = row.block
        self._layout = layout
        self._clock = clock
        self._wall_clock = wall_clock
        self._mem = row.block.mem
        self._routes = list(layout.routes)
        self._route_index = {name: i for i, name in enumerate(layout.routes)}
        self._row = row.at + layout.region.at
        self._fine_at = self._row + layout.fine_at
        self._durations_at = self._row + layout.durations_at
        self._coarse_at = self._row + layout.coarse_at
        self._history_at = self._row + layout.history_at
        self._fine = RingCursor(FINE, self._mem, self._fine_at)
        self._coarse = RingCursor(COARSE, self._mem, self._coarse_at)
        self._history = RingCursor(HISTORY, self._mem, self._history_at)
        self._mem[self._row + _WS_OPEN] = 0  # a dead predecessor's sockets died with it

    def name_routes(self, names: Sequence[str]) -> None:
        """Give spare route counters to the routes of ``names`` that have none, in order. Every
        worker passes the same grow-only list (the slot table's pool directory), so they all
        agree on which counters are whose; beyond the spares a route is counted only in the
        totals."""
        for name in names:
            if name not in self._route_index and len(self._routes) < self._layout.capacity:
                self._route_index[name] = len(self._routes)
                self._routes.append(name)

    # -- writing (this worker's row only) -------------------------------------------------

    def record(self, sample: RequestSample) -> None:
        """One finished request. An answer the load balancer made itself instead of routing
        (route ``local``: a redirect, a bad path) is counted in its route's figures only:
        ``total_requests`` and every whole-service figure count proxied requests (contract)."""
        mem, row = self._mem, self._row
        duration = sample.duration_s
        route = self._route_index.get(sample.route)
        if route is not None:
            durations = self._durations_at + route * _DURATION_WIDTH
            mem[durations + bisect_left(LIFETIME_BOUNDS, duration)] += 1
            mem[durations + _N_BUCKETS] += duration
        status = sample.status
        if sample.route == LOCAL:
            if status and route is not None:
                mem[row + _ROUTES_AT + route * _N_CLASSES + _status_class(status)] += 1
            return
        mem[row + _TOTAL] += 1
        mem[row + _DURATION_SUM] += duration
        self._record_history(sample.real_api, status, duration)
        if status:
            status_class = _status_class(status)
            mem[row + _CLASSES_AT + status_class] += 1
            if route is not None:
                mem[row + _ROUTES_AT + route * _N_CLASSES + status_class] += 1
            if sample.proxy_error and status in (502, 504):
                mem[row + (_PROXY_502 if status == 502 else _PROXY_504)] += 1
        if sample.real_api:
            self._record_real(duration, status)

    def _record_history(self, real_api: bool, status: int, duration: float) -> None:
        mem = self._mem
        bucket = self._history.current(self._wall_clock())
        mem[bucket] += 1  # REQUESTS
        if status >= 500 or not status:
            mem[bucket + SERVER_ERRORS] += 1
        if real_api:
            mem[bucket + REAL] += 1
            mem[bucket + REAL_DURATION] += duration
            mem[bucket + HIST_AT + coarse_bin(duration)] += 1
            if not 0 < status < 400:
                mem[bucket + REAL_FAILED] += 1

    def _record_real(self, duration: float, status: int) -> None:
        mem, row = self._mem, self._row
        mem[row + _REAL_COUNT] += 1
        mem[row + _REAL_DURATION] += duration
        if 0 < status < 400:
            mem[row + _REAL_SUCCESS] += 1
        now = self._clock()
        fine = self._fine.current(now)
        mem[fine] += 1
        mem[fine + 1] += duration
        mem[self._coarse.current(now) + histogram_bin(duration)] += 1

    def heartbeat(self) -> None:
        self._mem[self._row + _LAST_HEARTBEAT] = self._clock()

    def socket_opened(self) -> None:
        self._mem[self._row + _WS_OPEN] += 1
        self.heartbeat()

    def socket_closed(self) -> None:
        self._mem[self._row + _WS_OPEN] -= 1

    # -- reading (every row) --------------------------------------------------------------

    def snapshot(self, *, history: bool = False) -> Snapshot:
        """Every figure of every row; the history too if asked (it costs about a millisecond
        per worker under steady traffic, which ``/stats`` need not pay)."""
        now = self._clock()
        claimed = self._block.claimed_rows()
        live = self._block.live_rows()
        rows = [at + self._layout.region.at for at in claimed]
        mem, layout = self._mem, self._layout

        def total(field: int) -> float:
            return sum(mem[r + field] for r in rows)

        window_count, window_duration = self._window_totals(rows, now)
        classes = _column_sums(mem, rows, _CLASSES_AT, _N_CLASSES)
        by_route = {}
        for i, name in enumerate(self._routes):
            counts = _column_sums(mem, rows, _ROUTES_AT + i * _N_CLASSES, _N_CLASSES)
            by_route[name] = dict(zip(STATUS_CLASSES, map(int, counts), strict=True))
        last_heartbeat = max((mem[r + _LAST_HEARTBEAT] for r in rows), default=0.0)
        durations = self._durations(rows)
        return Snapshot(
            total_requests=int(total(_TOTAL)),
            window_count=window_count,
            window_duration_s=window_duration,
            window_histogram=self._window_histogram(rows, now),
            real_count=int(total(_REAL_COUNT)),
            real_duration_s=total(_REAL_DURATION),
            real_success=int(total(_REAL_SUCCESS)),
            status_classes=dict(zip(STATUS_CLASSES, map(int, classes), strict=True)),
            proxy_502=int(total(_PROXY_502)),
            proxy_504=int(total(_PROXY_504)),
            by_route=by_route,
            lifetime_buckets=_cumulative(durations[0][1]) if durations else (),
            lifetime_duration_s=total(_DURATION_SUM),
            # a dead worker's sockets died with it; its lifetime counters still count
            ws_connections=int(sum(mem[at + layout.region.at + _WS_OPEN] for at in live)),
            heartbeat_age_s=(now - last_heartbeat) if last_heartbeat else None,
            workers=len(live),
            uptime_s=max(0.0, now - self._block.started_at),
            requests_by_worker={
                str(self._block.owner(at)): int(mem[at + layout.region.at + _TOTAL])
                for at in claimed
            },
            history=read_history(mem, [r + layout.history_at for r in rows], self._wall_clock())
            if history
            else None,
            route_buckets={name: _cumulative(d) for name, d in durations[1:]},
            route_duration_s={name: d[_N_BUCKETS] for name, d in durations[1:]},
        )

    def _durations(self, rows: Sequence[int]) -> list[tuple[str, list[float]]]:
        """Every route's bucket counts and duration sum, all workers; first, all routes."""
        per_route = [
            (name, _column_sums(self._mem, rows, self._layout.durations_at + i * _DURATION_WIDTH,
                                _DURATION_WIDTH))
            for i, name in enumerate(self._routes)
        ]  # fmt: skip
        every = [sum(column) for column in zip(*(d for _, d in per_route), strict=True)]
        return [("", every), *per_route] if per_route else []

    def figures(self) -> HostFigures:
        """This host's additive raw figures (every worker), rings keyed by wall-clock epoch:
        what another host needs to compute the same snapshot (``service.metrics.figures``)."""
        now = self._clock()
        offset = time.time() - now  # monotonic -> wall clock
        mem, layout = self._mem, self._layout
        rows = [at + layout.region.at for at in self._block.claimed_rows()]
        live = [at + layout.region.at for at in self._block.live_rows()]
        counters: dict[str, float] = {}
        for name in _FIELDS:
            if name not in ("ws_open", "last_heartbeat"):
                counters[name] = sum(mem[r + F[name]] for r in rows)
        classes = _column_sums(mem, rows, _CLASSES_AT, _N_CLASSES)
        counters.update(zip((f"class:{s}" for s in STATUS_CLASSES), classes, strict=True))
        for i, route in enumerate(self._routes):
            counts = _column_sums(mem, rows, _ROUTES_AT + i * _N_CLASSES, _N_CLASSES)
            counters.update(
                zip((f"route:{route}:{s}" for s in STATUS_CLASSES), counts, strict=True)
            )
        for route, durations in self._durations(rows)[1:]:
            counters.update((f"duration:{route}:{i}", n) for i, n in enumerate(durations))
        last_heartbeat = max((mem[r + _LAST_HEARTBEAT] for r in rows), default=0.0)
        return HostFigures(
            counters=counters,
            gauges={"ws_open": sum(mem[r + _WS_OPEN] for r in live), "workers": len(live)},
            latest={"heartbeat": last_heartbeat + offset} if last_heartbeat else {},
            rings={
                WINDOW_RING: self._ring(FINE, rows, layout.fine_at, now, offset),
                HISTOGRAM_RING: self._ring(COARSE, rows, layout.coarse_at, now, offset),
            },
        )

    def _ring(
        self, ring: TimeRing, rows: Sequence[int], at: int, now: float, offset: float
    ) -> Ring:
        """Every row's buckets of ``ring`` in the window, sparse, keyed by wall-clock epoch."""
        # floor, not round: the bucket being written must never land after the reader's now
        shift = math.floor(offset / ring.resolution_s)
        buckets: dict[int, dict[int, float]] = {}
        for r in rows:
            for value_at in ring.window(self._mem, r + at, now):
                epoch = int(self._mem[value_at - 1]) + shift
                into = buckets.setdefault(epoch, {})
                for i, value in enumerate(self._mem[value_at : value_at + ring.values]):
                    if value:
                        into[i] = into.get(i, 0.0) + value
        return Ring(ring.resolution_s, buckets)

    def _window_totals(self, rows: Sequence[int], now: float) -> tuple[int, float]:
        count, duration = 0.0, 0.0
        for r in rows:
            for at in FINE.window(self._mem, r + self._layout.fine_at, now):
                count += self._mem[at]
                duration += self._mem[at + 1]
        return int(count), duration

    def _window_histogram(self, rows: Sequence[int], now: float) -> tuple[int, ...]:
        merged = [0.0] * HIST_BINS
        for r in rows:
            for at in COARSE.window(self._mem, r + self._layout.coarse_at, now):
                merged = [
                    a + b for a, b in zip(merged, self._mem[at : at + HIST_BINS], strict=True)
                ]
        return tuple(int(c) for c in merged)


def _cumulative(counts: Sequence[float]) -> tuple[tuple[float, int], ...]:
    """(upper bound, cumulative count) pairs, +Inf last, as Prometheus wants them."""
    total, buckets = 0, []
    for bound, count in zip((*LIFETIME_BOUNDS, math.inf), counts[:_N_BUCKETS], strict=True):
        total += int(count)
        buckets.append((bound, total))
    return tuple(buckets)


def _status_class(status: int) -> int:
    """The index of ``status``'s class in STATUS_CLASSES (1xx ... 5xx)."""
    return (5 if status >= 500 else status // 100 if status >= 100 else 1) - 1


def _column_sums(mem: memoryview, rows: Sequence[int], at: int, width: int) -> list[float]:
    sums = [0.0] * width
    for r in rows:
        sums = [a + b for a, b in zip(sums, mem[r + at : r + at + width], strict=True)]
    return sums
