"""Each worker's sign of life in the shared block, so the main process can tell a stalled one.

A worker whose event loop stops (``kill -STOP``, a blocking call, a deadlock) is still
alive to the operating system, so Sanic's manager, which only notices dead processes, keeps
it for ever while its accepted connections hang. Here every worker stamps its row of the
shared block from its own event loop, every ``STAMP_INTERVAL`` seconds, with its pid and the
monotonic clock (one clock for every process of the host); the main process reads the
stamps (``frontdoor.supervision``) and replaces a worker whose stamp is older than
``LB_WORKER_STALL_TIMEOUT``.

The stamp carries the pid because a row outlives its worker: a replacement takes over the
dead worker's row, and until its own first stamp the row still holds its predecessor's.
Each row has one writer, and a stamp is two aligned 8-byte stores, so it takes no lock.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

from service.sharedmem import Plan, Region, SharedBlock, WorkerRow

STAMP_INTERVAL = 1.0  # seconds between a worker's stamps
STAMP_WIDTH = 2
_PID, _AT = range(STAMP_WIDTH)


def reserve(plan: Plan) -> Region:
    """The stamp's place in every worker row; call when the app is built."""
    return plan.per_worker(STAMP_WIDTH)


class Liveness:
    """The stamps of every worker row of ``block``, at ``region`` (from :func:`reserve`)."""

    def __init__(
        self, block: SharedBlock, region: Region, *, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._block = block
        self._at = region.at
        self.clock = clock

    def stamp(self, row: WorkerRow) -> None:
        """This worker is alive now (called by the row's owner only)."""
        at = row.at + self._at
        self._block.mem[at + _AT] = self.clock()
        self._block.mem[at + _PID] = row.pid  # last: a reader matching the pid sees the time

    def last_stamps(self) -> dict[int, float]:
        """When each worker pid last stamped its row; a worker that has not stamped yet is
        not in it."""
        mem, found = self._block.mem, {}
        for row in self._block.claimed_rows():
            pid = int(mem[row + self._at + _PID])
            if pid:
                found[pid] = mem[row + self._at + _AT]
        return found

    def start_stamping(self, row: WorkerRow, interval: float = STAMP_INTERVAL) -> None:
        """Stamp now, then every ``interval`` seconds for as long as the running loop runs,
        through a graceful shutdown too: a timer, not a task, so Sanic's shutdown does not
        cancel it."""
        loop = asyncio.get_running_loop()

        def stamp_and_rearm() -> None:
            self.stamp(row)
            loop.call_later(interval, stamp_and_rearm)

        stamp_and_rearm()


class StallWatch:
    """The main process's reading of the stamps: which workers have been silent longer than
    ``timeout`` seconds.

    Silence is counted from the later of a worker's last stamp and the last time this
    process itself was seen to resume (a gap of more than ``RESUMED_AFTER`` between two
    looks): when the whole process group was stopped and continued (Ctrl-Z then ``fg``, a
    frozen container), every stamp is old for a reason that is no worker's fault, and each
    worker gets ``timeout`` seconds to stamp again.
    """

    RESUMED_AFTER = 2.0  # seconds between two looks that mean this process was not running

    def __init__(self, liveness: Liveness, timeout: float) -> None:
        self.liveness = liveness
        self.timeout = timeout
        self._resumed_at = self._last_look = liveness.clock()

    def look(self, pids: list[int]) -> dict[int, float]:
        """The pids among ``pids`` silent for longer than the timeout, and for how long."""
        now = self.liveness.clock()
        if now - self._last_look > self.RESUMED_AFTER:
            self._resumed_at = now
        self._last_look = now
        stamps = self.liveness.last_stamps()
        stalled = {}
        for pid in pids:
            if pid in stamps and now - max(stamps[pid], self._resumed_at) > self.timeout:
                stalled[pid] = now - stamps[pid]
        return stalled
