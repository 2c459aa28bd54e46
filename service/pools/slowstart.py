"""Slow start: a target that joins a pool while it serves ramps up to its weight.

Envoy's ``slow_start_window`` with ``min_weight_percent`` 10 and a linear ramp (HAProxy's
``slowstart``): for ``window`` seconds after it joins, a target's share of the draws is its
weight times ``0.1 + 0.9 * elapsed / window``. A target joins when its slot is taken
(a new DNS address, a reload that adds it: ``Member.joined``, written once by the writer of
the slot table), when its passive ejection ends (``EJECTED_UNTIL``, in the past), or when the
active checker brings it back (``RETURNED_AT``). All three instants are in the shared block
and on the host's monotonic clock, so every worker ramps a target from the same instant.
Targets in rotation from start-up have none of them, and are not ramped.

Shares are recomputed at most every :data:`REFRESH_S` (a few reads of shared memory per
target), not per request.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from service.pools.state import EJECTED_UNTIL, RETURNED_AT, PoolState

MIN_SHARE = 0.1  # of the weight, at the start of the ramp
REFRESH_S = 0.05


class Ramped(Protocol):
    index: int
    weight: int
    share: float
    joined: float


class SlowStart:
    def __init__(self, window: float, state: PoolState) -> None:
        self.window = window
        self._state = state
        self._next = 0.0  # when the shares are next recomputed

    def due(self) -> bool:
        return self._state.clock() >= self._next

    def refresh(self, targets: Sequence[Ramped]) -> bool:
        """Set every target's ``share``; True if one changed (the pickers' caches then go)."""
        state = self._state
        now = state.clock()
        self._next = now + REFRESH_S
        changed = False
        for target in targets:
            share = target.weight * self.factor(self.joined_at(target, now), now)
            if share != target.share:
                target.share, changed = share, True
        return changed

    def joined_at(self, target: Ramped, now: float) -> float:
        """The last instant ``target`` joined the rotation (0: in it from start-up)."""
        back = self._state.get(target.index, EJECTED_UNTIL)
        returned = self._state.get(target.index, RETURNED_AT)
        return max(target.joined, back if back <= now else 0.0, returned)

    def factor(self, joined: float, now: float) -> float:
        if not joined:
            return 1.0
        elapsed = now - joined
        if elapsed >= self.window:
            return 1.0
        return MIN_SHARE + (1.0 - MIN_SHARE) * max(elapsed, 0.0) / self.window

    def forget(self) -> None:
        """Recompute at the next choice (the targets changed)."""
        self._next = 0.0
