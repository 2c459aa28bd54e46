"""An upstream's pool of targets in one worker: choice, outstanding requests, passive health.

A target is *available* unless it is ejected (passive health: too many failures within
``fail_timeout``; any worker's ejection counts for all, through the shared block) or the
active checker has marked it down. Ejection lasts ``fail_timeout`` the first time and doubles
on each ejection that follows a failed return, up to ``max_ejection`` (Envoy's outlier
detection); a success after an ejection resets the streak. State changes are logged once, by
the worker that makes them.
"""

from __future__ import annotations

import asyncio
import logging
import math
import random
import time
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from types import TracebackType
from typing import Generic, TypeVar

import httpx

from service.errors import NoTargets, UpstreamError
from service.metrics.bins import coarse_quantile_ms
from service.pools.affinity import Affinity, HashOn, set_cookie, sticky_id
from service.pools.balancing import LeastRequest, RoundRobin
from service.pools.hashring import HashRing, key_hash
from service.pools.retries import RetryBudget, RetryRule, backoff
from service.pools.slowstart import SlowStart
from service.pools.state import (
    ACTIVE_DOWN,
    CHECKED_AT,
    EJECTED_UNTIL,
    EJECTIONS,
    FAIL_STREAK,
    LAST_CONTACT,
    OK_STREAK,
    PoolState,
)
from service.pools.slots import Member
from service.settings import Upstream

log = logging.getLogger("service.pool")

T = TypeVar("T")


@dataclass(slots=True, eq=False)
class Target:
    """One instance of an upstream, as this worker sees it."""

    index: int  # position in the shared block (unique across pools)
    position: int  # position within its pool
    url: str
    weight: int
    state: PoolState
    base_url: httpx.URL = field(init=False)  # ``url`` parsed once, for every request to it
    authority: bytes = field(init=False)  # host[:port], for a Host header of our own
    outstanding: int = 0
    recent_failures: deque[float] = field(default_factory=deque)
    origin: str = ""  # the host name a resolved target came from; "" for a configured one
    share: float = field(init=False)  # the weight the pickers use (less while slow-starting)
    joined: float = 0.0  # when its slot joined the pool while serving; 0: at start-up
    sticky_id: str = ""  # its sticky cookie's value, when the pool has one
    sticky_field: tuple[bytes, bytes] = (b"", b"")  # and the Set-Cookie field naming it

    def __post_init__(self) -> None:
        self.base_url = httpx.URL(self.url)
        self.authority = self.base_url.netloc
        self.share = self.weight

    def ejected(self) -> bool:
        return self.state.get(self.index, EJECTED_UNTIL) > self.state.clock()

    def available(self) -> bool:
        return not self.ejected() and not self.state.get(self.index, ACTIVE_DOWN)

    def reachable(self) -> bool | None:
        """Whether the last contact with this target (a proxied attempt, an active check, a
        ``/stats`` call) succeeded; None if it was never contacted. "In rotation" alone
        would call a target nobody has tried "up"."""
        last = self.state.get(self.index, LAST_CONTACT)
        return None if last == 0 else last > 0

    def contacted(self, ok: bool) -> None:
        self.state.set(self.index, LAST_CONTACT, 1 if ok else -1)

    def describe(self, active_checks: bool = False) -> dict[str, object]:
        """This target for ``/stats``: its state and its figures across all workers, and the
        active checker's verdict when ``active_checks`` (the pool has a health path)."""
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
            "name": self.origin or None,
            "weight": self.weight,
            "state": status,
            "reachable": self.reachable(),
            "ejected_for_s": round(ejected_for, 3) if ejected_for > 0 else 0.0,
            "ejections": int(self.state.get(self.index, EJECTIONS)),
            "outstanding": figures.outstanding,
            "requests": figures.requests,
            "failures": figures.failures,
            "window_requests": count,
            "window_avg_ms": round(1000 * figures.window_duration_s / count, 3) if count else 0.0,
            "window_p50_ms": coarse_quantile_ms(figures.window_histogram, 0.50),
            "window_p95_ms": coarse_quantile_ms(figures.window_histogram, 0.95),
            "window_p99_ms": coarse_quantile_ms(figures.window_histogram, 0.99),
            "health_check": self._health_check() if active_checks else None,
        }

    def _health_check(self) -> dict[str, object]:
        """The active checker's view: its verdict, the streaks and the last check's age."""
        checked_at = self.state.get(self.index, CHECKED_AT)
        return {
            "verdict": "down" if self.state.get(self.index, ACTIVE_DOWN) else "up",
            "passes_in_row": int(self.state.get(self.index, OK_STREAK)),
            "failures_in_row": int(self.state.get(self.index, FAIL_STREAK)),
            "last_check_s_ago": (round(self.state.clock() - checked_at, 3) if checked_at else None),
        }


class Pool:
    def __init__(
        self,
        upstream: Upstream,
        first_index: int,
        state: PoolState,
        *,
        rng: random.Random | None = None,
    ) -> None:
        """``rng`` feeds the least-request draws and the retries' waits (seeded in tests;
        the OS seeds it else)."""
        self.upstream = upstream
        self.name = upstream.name
        self.targets = tuple(
            Target(first_index + i, i, spec.url, spec.weight, state)
            for i, spec in enumerate(upstream.static_targets)
        )
        self._rng = rng or random.Random()
        # hash: requests without a key are balanced by least_request
        self._picker: LeastRequest | RoundRobin = (
            RoundRobin() if upstream.balance == "round_robin" else LeastRequest(self._rng)
        )
        self._state = state
        self._single = len(self.targets) == 1
        self._fail_statuses = upstream.passive.fail_statuses
        self.retry_budget = RetryBudget(ratio=upstream.retry_budget / 100)
        # Each feature below is None (or "") when not configured: choose() then skips it.
        self._slow_start = SlowStart(upstream.slow_start, state) if upstream.slow_start else None
        self.hash_on = HashOn.parse(upstream.hash_on) if upstream.balance == "hash" else None
        self.sticky_cookie = upstream.sticky_cookie
        self.keyed = self.hash_on is not None or bool(self.sticky_cookie)  # reads a request
        self._ring: HashRing | None = None
        self._sticky: dict[str, Target] = {}
        self._keyed_targets()

    def replace_targets(self, members: Sequence[Member]) -> list[Target]:
        """Make ``members`` (slots of the shared table, in order) this pool's targets; the
        targets that left, whose in-flight requests finish on the objects they hold.

        A target whose slot stays keeps its object, and with it this worker's outstanding
        count and recent failures (its shared state is the slot's anyway). Positions are
        renumbered: a retry that straddles the change may so try the same target again.
        """
        kept = {t.index: t for t in self.targets}
        targets, gone = [], []
        for position, member in enumerate(members):
            target = kept.pop(member.index, None)
            if target is not None and target.url != member.url:  # the slot changed hands
                gone.append(target)
                target = None
            if target is None:
                target = Target(member.index, position, member.url, member.weight, self._state)
            target.position, target.weight, target.origin = position, member.weight, member.origin
            target.joined = member.joined
            if member.origin:  # a Host of our own names the service, as nginx's $proxy_host
                port = target.base_url.port
                target.authority = (f"{member.origin}:{port}" if port else member.origin).encode()
            targets.append(target)
        self.targets = tuple(targets)
        self._single = len(self.targets) == 1
        if isinstance(self._picker, RoundRobin):
            self._picker = RoundRobin()  # its per-target credit is keyed by object
        for target in self.targets:
            target.share = target.weight
        if self._slow_start is not None:
            self._slow_start.forget()
        self._keyed_targets()
        return gone + list(kept.values())

    def _keyed_targets(self) -> None:
        """The ring and the sticky ids of the current targets (only if configured)."""
        if self.hash_on is not None:
            self._ring = HashRing([(t.url, t.weight) for t in self.targets])
        if self.sticky_cookie:
            for target in self.targets:
                target.sticky_id = sticky_id(self.name, target.url)
                target.sticky_field = set_cookie(self.sticky_cookie, target.sticky_id)
            self._sticky = {t.sticky_id: t for t in self.targets}

    def describe(self) -> dict[str, object]:
        return {
            "balance": self.upstream.balance,
            "panic": bool(self.targets) and not any(t.available() for t in self.targets),
            "targets": [t.describe(self.upstream.active is not None) for t in self.targets],
        }

    def has_live_target(self) -> bool:
        """A target in rotation whose last contact did not fail (never contacted counts)."""
        return any(t.available() and t.reachable() is not False for t in self.targets)

    def contacted(self, url: str, ok: bool) -> None:
        """Record the outcome of a contact that was not traffic (the ``/stats`` call)."""
        for target in self.targets:
            if target.url == url:
                target.contacted(ok)

    def choose(
        self, tried: frozenset[int] = frozenset(), affinity: Affinity | None = None
    ) -> Target:
        """The target for the next attempt; ``tried`` holds positions already attempted;
        ``affinity`` the request's hash key and sticky cookie (None: the pool needs neither).
        Raises :class:`NoTargets` when the pool has none (a name that resolves to nothing)."""
        if self._single:  # the common case: no choice to make, panic or not
            return self.targets[0]
        if not self.targets:
            raise NoTargets(self.name)
        ramp = self._slow_start
        if ramp is not None and ramp.due() and ramp.refresh(self.targets):
            self._picker.forget()
        if affinity is not None:
            if affinity.sticky is not None and not tried:
                target = self._sticky.get(affinity.sticky)
                if target is not None and target.available():
                    return target
            if affinity.key is not None and self._ring is not None:
                target = self._on_ring(affinity.key, tried)
                if target is not None:
                    return target
        return self._picker.pick(self.targets, tried)

    def _on_ring(self, key: str, tried: frozenset[int]) -> Target | None:
        """The first target in rotation, not yet tried, on the ring from ``key``'s point; with
        ``HASH_BALANCE_FACTOR``, also under its bound: that percentage of the mean requests
        in flight (this worker's) per unit of weight, counting this one (consistent hashing
        with bounded loads, Mirrokni et al.). None: no such target (then least_request)."""
        targets = self.targets
        factor = self.upstream.hash_balance_factor
        per_weight = 0.0
        if factor:
            live = [t for t in targets if t.available()] or targets
            in_flight = sum(t.outstanding for t in live) + 1
            per_weight = factor / 100 * in_flight / sum(t.weight for t in live)
        assert self._ring is not None
        for position in self._ring.walk(key_hash(key)):
            target = targets[position]
            if position in tried or not target.available():
                continue
            if factor and target.outstanding + 1 > math.ceil(per_weight * target.weight):
                continue
            return target
        return None

    def peek(self) -> Target:
        """A target for a read that is not traffic (``/stats``): the first available one,
        else the first. The picker is not consulted, so balancing is not disturbed."""
        if not self.targets:
            raise NoTargets(self.name)
        return next((t for t in self.targets if t.available()), self.targets[0])

    async def attempt(
        self,
        send: Callable[[Target], Awaitable[T]],
        rule: RetryRule,
        *,
        status: Callable[[T], int] | None = None,
        discard: Callable[[T], Awaitable[None]] | None = None,
        affinity: Affinity | None = None,
    ) -> Attempt[T]:
        """``send`` to a target, and after a failure ``rule`` allows, again to another, up
        to ``RETRIES`` times (each after its backoff, each within the pool's retry budget).

        Returns the attempt that answered, still open: the caller finishes it (``async
        with attempt:``) once the answer has been relayed. ``status`` reads an answer's
        status: one in the upstream's ``fail_statuses`` is a failure of the target (retried
        if the rule allows, else returned with ``failed`` set); any other is the target
        answering. ``discard`` drops an answer that is retried. ``affinity``: see
        :meth:`choose`. Raises the last :class:`UpstreamError`, naming the target it came
        from.
        """
        budget = self.retry_budget
        budget.request()
        tried: frozenset[int] = frozenset()
        retries = 0
        while True:
            target = self.choose(tried, affinity)
            attempt: Attempt[T] = Attempt(self, target, budget if retries else None)
            may_retry = retries < self.upstream.retries and len(self.targets) > 1
            try:
                answer = await send(target)
            except UpstreamError as error:
                attempt.finish(failed=True)
                error.target = target.url
                if may_retry and rule.after_error(error) and budget.try_spend():
                    retries += 1
                    tried = tried | {target.position}
                    await self._back_off(retries)
                    continue
                raise
            except BaseException:
                attempt.finish(failed=False)
                raise
            failed = status is not None and status(answer) in self._fail_statuses
            if failed and may_retry and rule.after_failed_answer() and budget.try_spend():
                retries += 1
                tried = tried | {target.position}
                try:
                    if discard is not None:
                        await discard(answer)
                except BaseException:
                    budget.ended()
                    raise
                finally:
                    attempt.finish(failed=True)
                await self._back_off(retries)
                continue
            attempt.answer, attempt.failed = answer, failed
            return attempt

    async def _back_off(self, retry: int) -> None:
        """Wait before retry number ``retry`` (spent already: given back if cancelled)."""
        delay = backoff(retry, self.upstream.retry_backoff, self._rng)
        if delay:
            try:
                await asyncio.sleep(delay)
            except BaseException:
                self.retry_budget.ended()
                raise

    def started(self, target: Target) -> None:
        target.outstanding += 1
        self._state.started(target.index)

    def finished(self, target: Target, duration_s: float, *, failed: bool) -> None:
        target.outstanding -= 1
        self._state.finished(target.index, duration_s, failed)
        target.contacted(not failed)
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
        if len(recent) < passive.max_fails or target.ejected() or self._ejection_capped():
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

    def _ejection_capped(self) -> bool:
        """Envoy's ``max_ejection_percent``: when that share of the pool is already out, no
        more is ejected (at least one target may be), so a failure every target shares (a
        dependency behind all of them) cannot empty the pool into panic. Workers read the
        shared state without a lock: two ejecting at the same instant may pass the cap by one.
        """
        ejected = sum(1 for t in self.targets if t.ejected())
        allowed = max(1, len(self.targets) * self.upstream.passive.max_ejection_percent // 100)
        return ejected >= allowed


class Attempt(Generic[T]):
    """One try of one target, from its choice to its end: the pool's books for it.

    Counted as outstanding from creation until :meth:`finish`; ``async with attempt:``
    finishes it on the way out, as a failure if ``failed`` was set or an UpstreamError left
    the block. ``answer`` is what the target answered.
    """

    __slots__ = ("_done", "_retry", "_started", "answer", "failed", "pool", "target")

    def __init__(self, pool: Pool, target: Target, retry: RetryBudget | None = None) -> None:
        """``retry``: the budget this attempt is a retry of (it is in flight until done)."""
        self.pool, self.target = pool, target
        self.failed = False
        self._done = False
        self._retry = retry
        pool.started(target)
        self._started = time.perf_counter()

    def finish(self, *, failed: bool) -> None:
        if not self._done:
            self._done = True
            self.pool.finished(self.target, time.perf_counter() - self._started, failed=failed)
            if self._retry is not None:
                self._retry.ended()

    async def __aenter__(self) -> Attempt[T]:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.finish(failed=self.failed or isinstance(exc, UpstreamError))
