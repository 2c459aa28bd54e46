"""An upstream's pool of targets in one worker: choice, outstanding requests, passive health.

A target is *available* unless it is ejected (passive health: too many failures within
``fail_timeout``; any worker's ejection counts for all, through the shared block) or the
active checker has marked it down. Ejection lasts ``fail_timeout`` the first time and doubles
on each ejection that follows a failed return, up to ``max_ejection`` (Envoy's outlier
detection); a success after an ejection resets the streak. State changes are logged once, by
the worker that makes them.
"""

from __future__ import annotations

import logging
import time
from collections import deque
from dataclasses import dataclass, field

from service.balancing import PICKERS, LeastRequest, RoundRobin
from service.pool_state import ACTIVE_DOWN, EJECTED_UNTIL, EJECTIONS, PoolState
from service.settings import Upstream

log = logging.getLogger("service.pool")


@dataclass(slots=True, eq=False)
class Target:
    """One instance of an upstream, as this worker sees it."""

    index: int  # position in the shared block (unique across pools)
    position: int  # position within its pool
    url: str
    weight: int
    state: PoolState
    outstanding: int = 0
    recent_failures: deque[float] = field(default_factory=deque)

    def ejected(self) -> bool:
        return self.state.get(self.index, EJECTED_UNTIL) > self.state.clock()

    def available(self) -> bool:
        return not self.ejected() and not self.state.get(self.index, ACTIVE_DOWN)

    def describe(self) -> dict[str, object]:
        """This target for ``/stats``: its state and its figures across all workers."""
        figures = self.state.figures(self.index)
        ejected_for = self.state.get(self.index, EJECTED_UNTIL) - self.state.clock()
        if ejected_for > 0:
            status = "ejected"
        elif self.state.get(self.index, ACTIVE_DOWN):
            status = "down"
        else:
            status = "up"
        count = figures.window_count
        return {
            "url": self.url,
            "weight": self.weight,
            "state": status,
            "ejected_for_s": round(ejected_for, 3) if ejected_for > 0 else 0.0,
            "ejections": int(self.state.get(self.index, EJECTIONS)),
            "outstanding": figures.outstanding,
            "requests": figures.requests,
            "failures": figures.failures,
            "window_requests": count,
            "window_avg_ms": round(1000 * figures.window_duration_s / count, 3) if count else 0.0,
        }


class Pool:
    def __init__(self, upstream: Upstream, first_index: int, state: PoolState) -> None:
        self.upstream = upstream
        self.name = upstream.name
        self.targets = tuple(
            Target(first_index + i, i, spec.url, spec.weight, state)
            for i, spec in enumerate(upstream.targets)
        )
        self._picker: LeastRequest | RoundRobin = PICKERS[upstream.balance]()
        self._state = state

    def describe(self) -> dict[str, object]:
        return {
            "balance": self.upstream.balance,
            "panic": not any(t.available() for t in self.targets),
            "targets": [t.describe() for t in self.targets],
        }

    def choose(self, tried: frozenset[int] = frozenset()) -> Target:
        """The target for the next attempt; ``tried`` holds positions already attempted."""
        return self._picker.pick(self.targets, tried)

    def started(self, target: Target) -> None:
        target.outstanding += 1
        self._state.started(target.index)

    def finished(self, target: Target, duration_s: float, *, failed: bool) -> None:
        target.outstanding -= 1
        self._state.finished(target.index, duration_s, failed)
        if failed:
            self._failed(target)
        elif self._state.get(target.index, EJECTIONS) and not target.ejected():
            self._state.set(target.index, EJECTIONS, 0)
            log.warning("upstream %s target %s recovered", self.name, target.url)

    def _failed(self, target: Target) -> None:
        passive = self.upstream.passive
        now = self._state.clock()
        recent = target.recent_failures
        recent.append(now)
        while recent and recent[0] < now - passive.fail_timeout:
            recent.popleft()
        if len(recent) < passive.max_fails or target.ejected():
            return
        recent.clear()
        streak = int(self._state.get(target.index, EJECTIONS))
        cool_down = min(passive.fail_timeout * 2**streak, passive.max_ejection)
        self._state.set(target.index, EJECTIONS, streak + 1)
        self._state.set(target.index, EJECTED_UNTIL, now + cool_down)
        log.warning(
            "upstream %s target %s ejected for %.1f s after %d failure(s) (ejection #%d)",
            self.name, target.url, cool_down, passive.max_fails, streak + 1,
        )  # fmt: skip


class RetryBudget:
    """Retries may be at most ``ratio`` of the requests of the last ``window_s`` seconds.

    Envoy's retry budget: an outage cannot turn every request into two. ``floor`` retries
    are always allowed per window so that a quiet service can still retry at all. Counts
    are kept in one-second buckets, so memory does not depend on the traffic.
    """

    def __init__(self, ratio: float = 0.2, window_s: int = 10, floor: int = 3) -> None:
        self._ratio, self._window, self._floor = ratio, window_s, floor
        self._buckets: dict[int, list[int]] = {}  # second -> [requests, retries]

    def _current(self, now: float | None) -> list[int]:
        second = int(time.monotonic() if now is None else now)
        if second not in self._buckets:
            for old in [s for s in self._buckets if s <= second - self._window]:
                del self._buckets[old]
            self._buckets[second] = [0, 0]
        return self._buckets[second]

    def request(self, now: float | None = None) -> None:
        self._current(now)[0] += 1

    def try_spend(self, now: float | None = None) -> bool:
        current = self._current(now)
        requests = sum(b[0] for b in self._buckets.values())
        retries = sum(b[1] for b in self._buckets.values())
        if retries >= max(self._floor, self._ratio * requests):
            return False
        current[1] += 1
        return True
