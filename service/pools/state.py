"""Per-target state that every worker of a host must agree on, on the shared block.

- *Shared per target* (one copy for the host): when its ejection ends, how many times in a
  row it has been ejected, the active health checker's verdict, and when the checker last
  brought it back (``service.pools.slowstart`` ramps it from there). Any worker may eject a
  target; only the worker that holds the checker lease writes the active verdict.
- *Per worker, per target* (in each worker's row, written only by that worker): outstanding
  requests, requests, failures and a ring of 1 s latency buckets (count, duration sum and a
  coarse latency histogram for the window's percentiles: ``service.metrics.bins``, 60
  counts, so 6 KiB per target per worker row), summed for ``/stats``.
"""

from __future__ import annotations

import operator
import time
from collections.abc import Callable
from dataclasses import dataclass

from service.metrics.bins import COARSE_BINS, coarse_bin
from service.pools.slots import SPARE_POOLS, SlotLayout
from service.sharedmem import Plan, RingCursor, TimeRing, WorkerRow
from service.sharedmem.lease import LEASE_WIDTH, Lease

# count, duration sum, then the latency histogram
WINDOW = TimeRing(resolution_s=1.0, in_window=10, slots=12, values=2 + COARSE_BINS)
_HIST = 2

# shared, per target; LAST_CONTACT: 0 never contacted, 1 answered, -1 failed (the last of a
# proxied attempt, an active check or a /stats call, whichever came last); RETURNED_AT: when
# the active checker last brought it back into rotation (the start of its slow start)
(EJECTED_UNTIL, EJECTIONS, ACTIVE_DOWN, OK_STREAK, FAIL_STREAK, CHECKED_AT, LAST_CONTACT,
 RETURNED_AT) = range(8)  # fmt: skip
_SHARED_WIDTH = 8
# per worker, per target
OUTSTANDING, REQUESTS, FAILURES = range(3)
_RING_AT = 3
_ROW_WIDTH = _RING_AT + WINDOW.size


@dataclass(frozen=True, slots=True)
class TargetFigures:
    outstanding: int
    requests: int
    failures: int
    window_count: int
    window_duration_s: float
    window_histogram: tuple[float, ...]  # coarse bins (service.metrics.bins)


class PoolLayout:
    """The pools' regions of the block, reserved on ``plan`` for ``targets`` targets (target
    slots: ``service.pools.slots``, whose table is reserved here too, for ``pools`` pools)."""

    def __init__(self, plan: Plan, targets: int, *, pools: int = 1) -> None:
        self.targets = targets
        self.lease = plan.shared(LEASE_WIDTH)
        self.shared = plan.shared(targets * _SHARED_WIDTH)
        self.per_worker = plan.per_worker(targets * _ROW_WIDTH)
        self.slots = SlotLayout(plan, slots=targets, pools=pools + SPARE_POOLS)


class PoolState:
    """This worker's view of the pools' state: its own row plus the shared fields."""

    def __init__(
        self, row: WorkerRow, layout: PoolLayout, *, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._block = row.block
        self._mem = row.block.mem
        self._layout = layout
        self._row = row.at
        self.clock = clock
        for target in range(layout.targets):  # a dead predecessor's requests died with it
            at = self._row_at(target, row.at) + OUTSTANDING
            if self._mem[at]:  # written only if needed: unused slots' pages stay untouched
                self._mem[at] = 0
        # each target's fields in this worker's row, and its window ring's cursor
        self._mine = [self._row_at(target, row.at) for target in range(layout.targets)]
        self._windows = [RingCursor(WINDOW, self._mem, at + _RING_AT) for at in self._mine]

    def _shared_at(self, target: int) -> int:
        return self._layout.shared.at + target * _SHARED_WIDTH

    def _row_at(self, target: int, row_at: int) -> int:
        return row_at + self._layout.per_worker.at + target * _ROW_WIDTH

    # -- shared fields ----------------------------------------------------------------------

    def get(self, target: int, field: int) -> float:
        return self._mem[self._shared_at(target) + field]

    def set(self, target: int, field: int, value: float) -> None:
        self._mem[self._shared_at(target) + field] = value

    def lease(self, pid: int, term_s: float, alive: Callable[[int], bool]) -> bool:
        """Hold or take the active-checker lease; True if this worker holds it now."""
        return Lease(self._block, self._layout.lease, clock=self.clock).hold(pid, term_s, alive)

    # -- this worker's row --------------------------------------------------------------------

    def started(self, target: int) -> None:
        mem, at = self._mem, self._mine[target]
        mem[at + OUTSTANDING] += 1
        mem[at + REQUESTS] += 1

    def finished(self, target: int, duration_s: float, failed: bool) -> None:
        mem, at = self._mem, self._mine[target]
        mem[at + OUTSTANDING] -= 1
        if failed:
            mem[at + FAILURES] += 1
        bucket = self._windows[target].current(self.clock())
        mem[bucket] += 1
        mem[bucket + 1] += duration_s
        mem[bucket + _HIST + coarse_bin(duration_s)] += 1

    # -- a target slot that is freed (service.pools.slots) --------------------------------

    def lifetime(self, target: int) -> tuple[int, int]:
        """(requests, failures) of ``target`` over every row: what a freed slot leaves to
        its pool's totals."""
        figures = self.figures(target)
        return figures.requests, figures.failures

    def outstanding_in(self, target: int, rows: list[int]) -> int:
        """Requests in flight to ``target`` in the rows at ``rows`` (live workers')."""
        return int(sum(self._mem[self._row_at(target, at) + OUTSTANDING] for at in rows))

    def clear(self, target: int) -> None:
        """Zero ``target``'s shared fields and its fields in every row, for its next owner.
        Only for a slot nobody writes any more (see ``SlotTable.reclaim``)."""
        at = self._shared_at(target)
        self._mem[at : at + _SHARED_WIDTH] = memoryview(bytes(8 * _SHARED_WIDTH)).cast("d")
        zeros = memoryview(bytes(8 * _ROW_WIDTH)).cast("d")
        for row_at in self._block.claimed_rows():  # a row never claimed is zeros already
            start = self._row_at(target, row_at)
            self._mem[start : start + _ROW_WIDTH] = zeros

    # -- reading every row ----------------------------------------------------------------

    def figures(self, target: int) -> TargetFigures:
        now = self.clock()
        sums = [0.0, 0.0, 0.0]
        count, duration = 0.0, 0.0
        histogram = [0.0] * COARSE_BINS
        for row_at in self._block.claimed_rows():
            at = self._row_at(target, row_at)
            for field in (OUTSTANDING, REQUESTS, FAILURES):
                sums[field] += self._mem[at + field]
            for bucket in WINDOW.window(self._mem, at + _RING_AT, now):
                if self._mem[bucket]:
                    count += self._mem[bucket]
                    duration += self._mem[bucket + 1]
                    counts = self._mem[bucket + _HIST : bucket + WINDOW.values]
                    histogram = list(map(operator.add, histogram, counts))
        return TargetFigures(
            int(sums[0]), int(sums[1]), int(sums[2]), int(count), duration, tuple(histogram)
        )
