"""Per-target state that every worker of a host must agree on, in one shared block.

Two kinds of fields, laid out in a ``multiprocessing.RawArray`` of doubles:

- *Shared per target* (one copy): when its ejection ends, how many times in a row it has
  been ejected, and the active health checker's verdict. Any worker may eject a target
  (a single aligned 8-byte store, so a reader never sees half a value); only the worker
  that holds the checker lease writes the active verdict.
- *Per worker, per target* (one copy per worker row, written only by that worker):
  outstanding requests, requests, failures and 1 s latency buckets, summed for ``/stats``.

The worker rows are the metrics store's: a worker uses the row index it claimed there.
"""

from __future__ import annotations

import multiprocessing
import time
from collections.abc import Callable
from ctypes import c_double
from dataclasses import dataclass
from typing import Any

WINDOW_BUCKET_S = 1.0
WINDOW_BUCKETS = 10  # the window: the current second and the nine before it
_RING = WINDOW_BUCKETS + 2

# shared, per target
EJECTED_UNTIL, EJECTIONS, ACTIVE_DOWN, OK_STREAK, FAIL_STREAK, CHECKED_AT = range(6)
_SHARED_WIDTH = 6
# per worker row, per target
OUTSTANDING, REQUESTS, FAILURES = range(3)
_RING_AT = 3
_ROW_WIDTH = _RING_AT + _RING * 3  # ring of (epoch, count, duration sum)
# block header
LEASE_PID, LEASE_UNTIL = range(2)
_HEADER = 2


@dataclass(frozen=True, slots=True)
class TargetFigures:
    outstanding: int
    requests: int
    failures: int
    window_count: int
    window_duration_s: float


def allocate(targets: int, rows: int) -> Any:
    return multiprocessing.RawArray(
        c_double, _HEADER + targets * (_SHARED_WIDTH + rows * _ROW_WIDTH)
    )


class PoolState:
    """This worker's view of the shared block: its own row plus the shared fields."""

    def __init__(
        self,
        block: Any,
        *,
        targets: int,
        rows: int,
        row: int,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._mem = memoryview(block).cast("B").cast("d")
        self._targets, self._rows, self._row = targets, rows, row
        self.clock = clock
        for target in range(targets):  # a dead predecessor's requests died with it
            self._mem[self._row_at(target, row) + OUTSTANDING] = 0

    def _shared_at(self, target: int) -> int:
        return _HEADER + target * _SHARED_WIDTH

    def _row_at(self, target: int, row: int) -> int:
        return _HEADER + self._targets * _SHARED_WIDTH + (row * self._targets + target) * _ROW_WIDTH

    # -- shared fields ----------------------------------------------------------------------

    def get(self, target: int, field: int) -> float:
        return self._mem[self._shared_at(target) + field]

    def set(self, target: int, field: int, value: float) -> None:
        self._mem[self._shared_at(target) + field] = value

    def lease(self, pid: int, term_s: float, alive: Callable[[int], bool]) -> bool:
        """Hold or take the active-checker lease; True if this worker holds it now.

        Two workers can both see an expired lease at the same instant and both check
        once; the checks are idempotent, and the next renewal settles on one holder.
        """
        now = self.clock()
        holder = int(self._mem[LEASE_PID])
        expired = self._mem[LEASE_UNTIL] < now or not alive(holder)
        if holder == pid or holder == 0 or expired:
            self._mem[LEASE_PID] = pid
            self._mem[LEASE_UNTIL] = now + term_s
        return int(self._mem[LEASE_PID]) == pid

    # -- this worker's row --------------------------------------------------------------------

    def started(self, target: int) -> None:
        at = self._row_at(target, self._row)
        self._mem[at + OUTSTANDING] += 1
        self._mem[at + REQUESTS] += 1

    def finished(self, target: int, duration_s: float, failed: bool) -> None:
        at = self._row_at(target, self._row)
        self._mem[at + OUTSTANDING] -= 1
        if failed:
            self._mem[at + FAILURES] += 1
        epoch = int(self.clock() / WINDOW_BUCKET_S)
        bucket = at + _RING_AT + (epoch % _RING) * 3
        if self._mem[bucket] != epoch:
            self._mem[bucket : bucket + 3] = memoryview(bytes(24)).cast("d")
            self._mem[bucket] = epoch
        self._mem[bucket + 1] += 1
        self._mem[bucket + 2] += duration_s

    # -- reading every row ----------------------------------------------------------------

    def figures(self, target: int) -> TargetFigures:
        newest = int(self.clock() / WINDOW_BUCKET_S)
        sums = [0.0, 0.0, 0.0]
        count, duration = 0.0, 0.0
        for row in range(self._rows):
            at = self._row_at(target, row)
            for field in (OUTSTANDING, REQUESTS, FAILURES):
                sums[field] += self._mem[at + field]
            for bucket in range(at + _RING_AT, at + _RING_AT + _RING * 3, 3):
                if newest - WINDOW_BUCKETS < self._mem[bucket] <= newest:
                    count += self._mem[bucket + 1]
                    duration += self._mem[bucket + 2]
        return TargetFigures(int(sums[0]), int(sums[1]), int(sums[2]), int(count), duration)
