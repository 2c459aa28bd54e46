"""A lease in the shared block: one worker of the host does a job, another takes over if it dies.

Two doubles: the holder's pid and when its term ends (monotonic clock). Used for the jobs
that must run once per host, not once per worker: the active health checks and the
cluster publisher.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from service.sharedmem.block import Region, SharedBlock

LEASE_WIDTH = 2
_PID, _UNTIL = range(LEASE_WIDTH)


class Lease:
    """The lease stored at ``region`` (reserved with ``plan.shared(LEASE_WIDTH)``)."""

    def __init__(
        self, block: SharedBlock, region: Region, *, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._mem = block.mem
        self._at = region.at
        self.clock = clock

    def hold(self, pid: int, term_s: float, alive: Callable[[int], bool]) -> bool:
        """Hold or take the lease; True if ``pid`` holds it now.

        Two workers can both see an expired lease at the same instant and both act once;
        the jobs that use a lease are idempotent, and the next renewal settles on one holder.
        """
        now, at = self.clock(), self._at
        holder = int(self._mem[at + _PID])
        expired = self._mem[at + _UNTIL] < now or not alive(holder)
        if holder == pid or holder == 0 or expired:
            self._mem[at + _PID] = pid
            self._mem[at + _UNTIL] = now + term_s
        return int(self._mem[at + _PID]) == pid

    def held_by(self, pid: int) -> bool:
        """Whether ``pid`` holds the lease now (a read: it neither renews nor takes it)."""
        return (
            int(self._mem[self._at + _PID]) == pid and self._mem[self._at + _UNTIL] >= self.clock()
        )
