"""The one admission check on a request's path: :meth:`Gate.admit`, called by the proxy once
the route is known and before any upstream is chosen (and in front of ``/stats``, by
``endpoints.admitted``).

One decision takes the host lock once and, inside it, reads and writes nothing but the
shared tables: every limit that covers the request is asked first (GCRA: the key's
theoretical arrival time ``tat``; a request fits while ``max(tat, now) + interval - now``
stays within ``burst * interval``), then the client's and the pool's requests in flight;
only if everything admits is anything written (each limit's new ``tat``, the counts in
flight), so a refused request consumes nothing. A dry-run limit is asked and counted like the
others but never refuses. Counting (per worker, no lock) and logging happen after the lock
is given back.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from typing import Any

from sanic import Request

from service.frontdoor.client import ClientAddresses
from service.admission.layout import (
    ADMITTED,
    FACTOR,
    H_DRY,
    H_LIMITED,
    H_OVERLOADED,
    HISTORY,
    IN_FLIGHT,
    LIMITED,
    OVERLOADED,
    PER_LIMIT,
    PER_POOL,
    TAT,
    AdmissionLayout,
)
from service.admission.episodes import log_start
from service.admission.policy import (
    CLIENT_LIMIT,
    HASH_CACHE,
    Limit,
    RoutePlan,
    key_hash,
    route_plans,
)
from service.admission.table import ClientTable, RateTable
from service.errors import Overloaded, RateLimited
from service.settings import Settings
from service.sharedmem import SharedLock

_EPSILON = 1e-9  # float slack: a request exactly at the budget's edge fits
ANSWERS = 4096  # shared fields-only admissions kept per limit


class Admission:
    """An admitted request: the fields it answers with, and what to give back at its end."""

    __slots__ = ("_client_at", "_gate", "_pool", "fields", "raw_fields")

    def __init__(self, gate: Gate, fields: dict[str, str], client_at: int, pool: int) -> None:
        self._gate = gate
        self.fields = fields  # RateLimit-Policy and RateLimit, when sent
        # the same as a streamed response's head takes them (shared answers encode once)
        self.raw_fields = [(k.encode("ascii"), v.encode()) for k, v in fields.items()]
        self._client_at = client_at
        self._pool = pool

    def release(self) -> None:
        """The request is over (its last byte sent, or it failed): it is no longer in flight.
        Only this worker's own counters are written, so no lock is taken."""
        if self._client_at >= 0:
            self._gate.clients.leave(self._client_at, self._gate.column)
            self._client_at = -1
        if self._pool >= 0:
            self._gate.mem[self._gate.pool_at + self._pool * PER_POOL + IN_FLIGHT] -= 1
            self._pool = -1


class Gate:
    def __init__(
        self,
        *,
        mem: memoryview,
        layout: AdmissionLayout,
        lock: SharedLock,
        table: RateTable,
        clients: ClientTable,
        plans: dict[str, RoutePlan],
        limits: Sequence[Limit],
        pool_names: Sequence[str],
        client_addresses: ClientAddresses,
        row_at: int,
        column: int,
        row_offsets: Sequence[int],
        max_client_requests: int,
        send_fields: bool,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.mem, self.layout, self.lock = mem, layout, lock  # the block, and its host lock
        self.table, self.clients = table, clients  # the shared tables of keys and clients
        self.plans, self.limits = plans, tuple(limits)
        self.pool_names = tuple(pool_names)
        self.client_addresses = client_addresses
        self.column = column
        self.counters_at = row_at + layout.counters.at
        self.window_at = row_at + layout.window_at.at
        self.pool_at = row_at + layout.pool_counters.at
        self.history_at = row_at + layout.history.at
        self.misc_at = row_at + layout.misc.at
        self._pool_rows = tuple(o + layout.pool_counters.at for o in row_offsets)
        self.max_client_requests = max_client_requests
        self.send_fields = send_fields
        self.clock = clock
        self._factor_at = layout.state.at + FACTOR if layout.cluster else -1
        self._shared = layout.cluster  # admissions are shared with other replicas
        self._fixed = tuple(table.fixed(i) for i in range(layout.limits))
        self._answers: list[dict[int, Admission]] = [{} for _ in range(layout.limits)]
        self._homes: list[dict[str, tuple[int, int]]] = [{} for _ in range(layout.limits)]
        self._client_hashes: dict[str, int] = {}
        self._try_lock, self._unlock = lock.fast_path()
        self._mutex = lock.mutex
        self._epoch = -1
        self._bucket = 0

    def replan(self, settings: Settings) -> None:
        """A reload's routes (``service.reload``): the limits the host started with, over the
        upstreams ``settings`` has now; pool counters stay those laid out at start-up."""
        self.plans = route_plans(settings, self.limits, self.pool_names)

    # ---- the decision ----------------------------------------------------------------------

    def admit(self, request: Request, route: str) -> Admission | None:
        """Admit ``request`` on ``route``, or raise :class:`RateLimited` (429) or
        :class:`Overloaded` (503). None when nothing applies to the route (the common,
        free case) or the request is admitted with nothing to give back or send."""
        plan = self.plans.get(route)
        if plan is None:
            return None
        if plan.single is not None:
            return self._admit_one(request, plan.single)
        client = self.client_addresses.key_of(request)
        method, path = request.method, request.path
        asks = [
            (limit, key, 0 if limit.per_all else limit.hash_of(key))
            for limit in plan.limits
            if limit.everywhere or limit.covers(method, path)
            for key in (limit.key_of(request, client),)
        ]
        client_fp = self._client_hash(client) if plan.clients else 0
        mem, table = self.mem, self.table
        now = self.clock()
        factor = (mem[self._factor_at] or 1.0) if self._factor_at >= 0 else 1.0

        if not self.lock.acquire():
            mem[self.misc_at + 1] += 1  # went on without the lock
            return None
        try:
            # 1. ask every limit; write nothing yet
            taken: list[tuple[Limit, int, float, float]] = []  # (limit, slot, new tat, interval)
            refusal: tuple[Limit, float, int] | None = None  # (limit, wait s, slot)
            dry: list[tuple[Limit, int]] = []
            untracked = 0
            for limit, key, fp in asks:
                if fp == 0:
                    at = table.fixed(limit.index)
                else:
                    at = table.find(limit.index, fp, key, now)
                    untracked += at == table.fixed(limit.index)
                interval = limit.interval * factor
                tat = mem[at + TAT]
                if tat < now:
                    tat = now
                new = tat + interval
                if new - now > limit.burst * interval + _EPSILON:
                    if limit.dry_run:
                        dry.append((limit, at))
                    elif refusal is None:
                        refusal = (limit, new - now - limit.burst * interval, at)
                    continue
                taken.append((limit, at, new, interval))
            # 2. requests in flight: the client's, then the pool's
            client_at = -1
            if refusal is None and plan.clients:
                client_at = self.clients.enter(
                    client_fp, client, self.column, self.max_client_requests
                )
                if client_at == -1:
                    refusal = (_CLIENT_PSEUDO, 1.0, -1)
            overloaded = False
            if refusal is None and plan.pool >= 0:
                slot = plan.pool * PER_POOL + IN_FLIGHT
                if sum(mem[row + slot] for row in self._pool_rows) >= plan.pool_max:
                    overloaded = True
                    if client_at >= 0:
                        self.clients.leave(client_at, self.column)
            # 3. commit, or note who was limited
            started = [(limit, at) for limit, at in dry if table.limited(at, now)]
            if refusal is not None:
                limit, _, at = refusal
                if at >= 0 and table.limited(at, now):
                    started.append((limit, at))
            elif not overloaded:
                for _, at, new, _ in taken:
                    mem[at + TAT] = new
                    if self.layout.cluster:
                        table.admitted(at)
                if plan.pool >= 0:
                    mem[self.pool_at + plan.pool * PER_POOL + IN_FLIGHT] += 1
            labels = [(limit, table.label(limit.fixed_label, at)) for limit, at in started]
        finally:
            self.lock.release()

        # 4. count (this worker's row, no lock), log and answer, outside the lock
        if untracked:
            mem[self.misc_at] += untracked
        for limit, label in labels:
            log_start(limit, label)
        if refusal is not None or overloaded or dry:
            self._count_refused(now, asks, dry, refusal, overloaded, plan)
            if refusal is not None:
                limit, wait, _ = refusal
                retry = max(1, math.ceil(wait))
                extra: dict[str, str] = {}
                if self.send_fields and limit is not _CLIENT_PSEUDO:
                    extra = {
                        "ratelimit-policy": limit.policy,
                        "ratelimit": f'"{limit.name}";r=0;t={retry}',
                    }
                raise RateLimited(limit.name, retry, extra)
            if overloaded:
                raise Overloaded(self.pool_names[plan.pool], plan.pool_max)
        else:
            self._count_admitted(now, taken)
        sent: dict[str, str] = {}
        if self.send_fields and taken:
            shown = [t for t in taken if not t[0].dry_run]
            if shown:
                sent = {
                    "ratelimit-policy": ", ".join(limit.policy for limit, _, _, _ in shown),
                    "ratelimit": ", ".join(
                        limit.item(new - now, interval) for limit, _, new, interval in shown
                    ),
                }
        if not sent and client_at < 0 and plan.pool < 0:
            return None
        return Admission(self, sent, client_at, plan.pool)

    def _admit_one(self, request: Request, limit: Limit) -> Admission | None:
        """:meth:`admit` for a route with one rate limit and no cap on requests in flight
        (the usual case, ``LB_RATE_LIMIT``): the same decision in fewer steps, since it is
        on every request's path (``bench/admission_cost.py`` measures it)."""
        if not limit.everywhere and not limit.covers(request.method, request.path):
            return None
        if limit.per_client:
            key = self.client_addresses.key_of(request)
        else:
            key = limit.key_of(request, self.client_addresses.key_of(request))
        if limit.per_all:
            fp, home = 0, self._fixed[limit.index]
        else:
            fp, home = self._homes[limit.index].get(key) or self._home(limit, key)
        mem = self.mem
        now = self.clock()
        interval = limit.interval
        if self._shared:
            interval *= mem[self._factor_at] or 1.0
        capacity = limit.burst * interval + _EPSILON
        # The host lock, its uncontended case inline (SharedLock.settle has the rest).
        mutex = self._mutex
        code = self._try_lock(mutex)
        if code and not self.lock.settle(code):
            mem[self.misc_at + 1] += 1  # went on without the lock
            return None
        started = False
        try:
            # the key is where its hash says most of the time: no search then
            at = home if fp == 0 or mem[home] == fp else self.table.find(limit.index, fp, key, now)
            tat = mem[at + TAT]
            if tat < now:
                tat = now
            new = tat + interval
            used = new - now
            if used <= capacity:
                mem[at + TAT] = new
                if self._shared:
                    self.table.admitted(at)
            else:
                started = self.table.limited(at, now)
        finally:
            self._unlock(mutex)
        if used > capacity:
            self._refused_one(limit, key, fp, at, now, used - capacity, started)
            return None  # a dry run: served anyway, nothing shown
        if fp and at == self._fixed[limit.index]:
            mem[self.misc_at] += 1  # untracked: its limit's overflow bucket took it
        epoch = int(now)
        if epoch != self._epoch:
            self._bucket = self.layout.window.current(mem, self.window_at, now)
            self._epoch = epoch
        offset = limit.index * PER_LIMIT + ADMITTED
        mem[self.counters_at + offset] += 1
        mem[self._bucket + offset] += 1
        if not self.send_fields or limit.dry_run:
            return None
        return self._answer(limit, used, interval)

    def _client_hash(self, client: str) -> int:
        """The client's hash in the client table (LB_MAX_CLIENT_REQUESTS), kept like keys'."""
        known = self._client_hashes.get(client)
        if known is None:
            known = key_hash(CLIENT_LIMIT, client)
            if len(self._client_hashes) >= HASH_CACHE:
                self._client_hashes.clear()
            self._client_hashes[client] = known
        return known

    def _home(self, limit: Limit, key: str) -> tuple[int, int]:
        """The key's hash and the slot its neighbourhood starts at, kept for the next time
        (at most HASH_CACHE keys per limit per worker)."""
        homes = self._homes[limit.index]
        fp = key_hash(limit.name, key)
        found = (fp, self.table.home(fp))
        if len(homes) >= HASH_CACHE:
            homes.clear()
        homes[key] = found
        return found

    def _answer(self, limit: Limit, used: float, interval: float) -> Admission:
        """An admission that only sends the RateLimit fields: there are few distinct ones
        (``r`` from 0 to the burst, ``t`` 1 below it at rates of a request a second or more),
        so each is made once and shared (its ``release`` does nothing)."""
        if interval > 1.0:  # a slow rate: ``t`` varies, so made each time
            fields = {"ratelimit-policy": limit.policy, "ratelimit": limit.item(used, interval)}
            return Admission(self, fields, -1, -1)
        remaining = int((limit.burst * interval - used) / interval + _EPSILON)
        answers = self._answers[limit.index]
        answer = answers.get(remaining)
        if answer is None:
            fields = {"ratelimit-policy": limit.policy, "ratelimit": limit.item(used, interval)}
            answer = Admission(self, fields, -1, -1)
            if len(answers) >= ANSWERS:
                answers.clear()
            answers[remaining] = answer
        return answer

    def _refused_one(
        self, limit: Limit, key: str, fp: int, at: int, now: float, wait: float, started: bool
    ) -> None:
        """The rare path of :meth:`_admit_one`: count, log, and raise unless a dry run."""
        if started:
            log_start(limit, self.table.label(limit.fixed_label, at))
        if limit.dry_run:
            self._count_refused(now, [(limit, key, fp)], [(limit, at)], None, False, _NO_PLAN)
            return
        self._count_refused(now, [(limit, key, fp)], [], (limit, wait, at), False, _NO_PLAN)
        retry = max(1, math.ceil(wait))
        extra: dict[str, str] = {}
        if self.send_fields:
            extra = {"ratelimit-policy": limit.policy, "ratelimit": f'"{limit.name}";r=0;t={retry}'}
        raise RateLimited(limit.name, retry, extra)

    def _window(self, now: float) -> int:
        """This worker's current 1 s bucket of the window (found once a second)."""
        epoch = int(now)
        if epoch != self._epoch:
            self._bucket = self.layout.window.current(self.mem, self.window_at, now)
            self._epoch = epoch
        return self._bucket

    def _count_admitted(self, now: float, taken: list[tuple[Limit, int, float, float]]) -> None:
        mem, window, counters = self.mem, self._window(now), self.counters_at
        for limit, _, _, _ in taken:
            offset = limit.index * PER_LIMIT + ADMITTED
            mem[counters + offset] += 1
            mem[window + offset] += 1

    def _count_refused(
        self,
        now: float,
        asks: list[tuple[Limit, str, int]],
        dry: list[tuple[Limit, int]],
        refusal: tuple[Limit, float, int] | None,
        overloaded: bool,
        plan: RoutePlan,
    ) -> None:
        """A request refused (429, 503) or over a dry-run limit: the limited counts, the
        history's, and (served anyway) the admitted counts of the limits that took it."""
        mem, window, counters = self.mem, self._window(now), self.counters_at
        would = {limit.index for limit, _ in dry}
        for index in would:
            mem[counters + index * PER_LIMIT + LIMITED] += 1
            mem[window + index * PER_LIMIT + LIMITED] += 1
        refused = refusal[0] if refusal is not None else None
        if refused is not None:
            index = self.layout.limits if refused is _CLIENT_PSEUDO else refused.index
            mem[counters + index * PER_LIMIT + LIMITED] += 1
            mem[window + index * PER_LIMIT + LIMITED] += 1
        elif overloaded:
            mem[self.pool_at + plan.pool * PER_POOL + OVERLOADED] += 1
        else:  # only dry-run limits said no: the request is served
            for limit, _, _ in asks:
                if limit.index not in would:
                    mem[counters + limit.index * PER_LIMIT + ADMITTED] += 1
                    mem[window + limit.index * PER_LIMIT + ADMITTED] += 1
        bucket = HISTORY.current(mem, self.history_at, time.time())
        if dry:
            mem[bucket + H_DRY] += 1
        if refused is not None:
            mem[bucket + H_LIMITED] += 1
        if overloaded:
            mem[bucket + H_OVERLOADED] += 1


_NO_PLAN = RoutePlan((), -1, 0, False, None)


class _ClientPseudo:
    """``LB_MAX_CLIENT_REQUESTS``' refusals, named like a limit in the 429's body."""

    name = CLIENT_LIMIT


_CLIENT_PSEUDO: Any = _ClientPseudo()
