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

A worker that hangs before its first stamp (blocked in a start-up listener, in claiming its
row, stopped as soon as it was spawned) has no stamp to be old, so its silence is counted
from when the main process first saw it running instead, with ``STARTUP_ALLOWANCE`` times
the timeout: a start-up does more before its first stamp than a running loop does between
two (it imports and builds the app in a fresh process: about a second, several on a loaded
host), and a healthy worker killed for a slow start would be replaced by another slow start,
over and over. Three timeouts is, at the default 10 s, the 30 s Sanic itself gives a worker
to start; derived from the timeout rather than fixed, so the one setting still says how
long a silent worker may take everywhere. Initial workers are not judged this way: the main
process waits for them to acknowledge their start (Sanic's 30 s, ``supervision``) before
it watches stamps, and a worker stamps before it acknowledges.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

from service.sharedmem import Plan, Region, SharedBlock, WorkerRow

STAMP_INTERVAL = 1.0  # seconds between a worker's stamps
STARTUP_ALLOWANCE = 3.0  # timeouts a worker may take from its start to its first stamp
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
    worker gets ``timeout`` seconds to stamp again. A worker that has not stamped yet is
    judged from the first look that saw it, with ``STARTUP_ALLOWANCE`` times the timeout
    (see the module doc).
    """

    RESUMED_AFTER = 2.0  # seconds between two looks that mean this process was not running

    def __init__(self, liveness: Liveness, timeout: float) -> None:
        self.liveness = liveness
        self.timeout = timeout
        self.startup_timeout = STARTUP_ALLOWANCE * timeout
        self._resumed_at = self._last_look = liveness.clock()
        self._first_seen: dict[int, float] = {}  # pid -> the first look that saw it running
        self._stamped: set[int] = set()  # the pids that had stamped at the last look

    def look(self, pids: list[int]) -> dict[int, float]:
        """The pids among ``pids`` silent for longer than the timeout, and for how long
        (since their last stamp, or since they were first seen if they never stamped)."""
        now = self.liveness.clock()
        if now - self._last_look > self.RESUMED_AFTER:
            self._resumed_at = now
        self._last_look = now
        stamps = self.liveness.last_stamps()
        self._first_seen = {pid: self._first_seen.get(pid, now) for pid in pids}
        self._stamped = {pid for pid in pids if pid in stamps}
        stalled = {}
        for pid in pids:
            if pid in stamps:
                since, timeout = stamps[pid], self.timeout
            else:
                since, timeout = self._first_seen[pid], self.startup_timeout
            if now - max(since, self._resumed_at) > timeout:
                stalled[pid] = now - since
        return stalled

    def never_stamped(self, pid: int) -> bool:
        """At the last look, ``pid`` had not stamped yet (it hung while starting)."""
        return pid not in self._stamped
