"""What discovery shares between the workers of a host, in the shared block.

Per entry: its generation (so that an answer arriving after another was written, by a
worker that held the lease after this one, is not applied over it), when it was last
answered and with which TTL, when it is due again, the last lookup's result, whether it is
failing (so a failure is logged once and the recovery once, whichever worker holds the
lease), whether its last answer was cut to ``max_targets``, and a counter per result
(``lb_discovery_lookups_total``). Plus the lease: one worker of the host
looks names up, not every worker.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from service.discovery.resolver import RESULTS
from service.sharedmem import LEASE_WIDTH, Lease, Plan, SharedBlock

REFRESHED_AT, TTL, DUE_AT, RESULT, FAILING, TRUNCATED, ADDRESSES = range(7)
WRITTEN = 7  # the record's generation: one more at every lookup's result written
_COUNTERS = 8
_WIDTH = _COUNTERS + len(RESULTS)


class DiscoveryLayout:
    def __init__(self, plan: Plan, entries: int) -> None:
        self.entries = entries
        self.lease = plan.shared(LEASE_WIDTH)
        self.records = plan.shared(max(entries, 1) * _WIDTH)


class DiscoveryState:
    """This process's view of every entry's record and of the lease."""

    def __init__(
        self,
        block: SharedBlock,
        layout: DiscoveryLayout,
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._mem = block.mem
        self._at = layout.records.at
        self._lease = Lease(block, layout.lease, clock=clock)
        self.clock = clock

    def get(self, entry: int, field: int) -> float:
        return self._mem[self._at + entry * _WIDTH + field]

    def set(self, entry: int, field: int, value: float) -> None:
        self._mem[self._at + entry * _WIDTH + field] = value

    def result(self, entry: int) -> str | None:
        code = int(self.get(entry, RESULT))
        return RESULTS[code - 1] if code else None

    def count(self, entry: int, result: str) -> None:
        self._mem[self._at + entry * _WIDTH + _COUNTERS + RESULTS.index(result)] += 1
        self.set(entry, RESULT, RESULTS.index(result) + 1)

    def lookups(self, entry: int) -> dict[str, int]:
        at = self._at + entry * _WIDTH + _COUNTERS
        return {result: int(self._mem[at + i]) for i, result in enumerate(RESULTS)}

    def hold_lease(self, pid: int, term_s: float, alive: Callable[[int], bool]) -> bool:
        return self._lease.hold(pid, term_s, alive)

    def holds_lease(self, pid: int) -> bool:
        """Whether ``pid`` holds the lease now, without renewing or taking it."""
        return self._lease.held_by(pid)
