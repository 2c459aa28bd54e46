"""Looking the names up while serving, once per host, and writing the answers to the slot table.

Every worker takes :meth:`Refresher.turn`; only the one holding the discovery lease looks names
up (another takes over within a lease term if it dies). An entry is due again after the
lower of ``LB_RESOLVER_VALID`` and its records' TTL, never under 1 s; its due time is in the
shared block, so a new holder carries on the same pace. An answer is applied to the slot
table (``service.pools.slots``): its addresses acquired, the entry's other targets released,
in one change; every worker's pools follow within ``pools.sync.INTERVAL_S``. A failed lookup
changes nothing. Changes, failures and recoveries are logged once, by the holder.

**A late answer is not applied.** A lookup can take seconds (a slow server, retries), and the
lease can move meanwhile (this worker stalled past the term): the new holder asks again and
writes its answer, and the old one's, arriving later, may be older news. So a worker writes
an answer only if it still holds the lease when the answer arrives and the entry's record is
at the generation it saw when it asked (``state.WRITTEN``, moved by every write); for an
answer with addresses, that is checked again under the slot table's lock, with the write.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Callable, Sequence

from service.discovery.entries import Entry
from service.discovery.resolver import NO_ADDRESS, OK, Address, Lookup, Resolver
from service.discovery.state import (
    ADDRESSES,
    DUE_AT,
    FAILING,
    REFRESHED_AT,
    TRUNCATED,
    TTL,
    WRITTEN,
    DiscoveryState,
)
from service.pools import SlotsExhausted, SlotTable
from service.settings import ResolverSettings

TICK_S = 0.1  # how often a worker looks at the lease and at what is due
LEASE_TERM_S = 2.0
MIN_INTERVAL_S = 1.0

log = logging.getLogger("service.discovery")


class Refresher:
    def __init__(
        self,
        entries: Sequence[Entry],
        resolver: Resolver,
        state: DiscoveryState,
        table: SlotTable,
        settings: ResolverSettings,
        alive: Callable[[int], bool],
    ) -> None:
        self._entries, self._resolver, self._settings = entries, resolver, settings
        self._state, self._table = state, table  # the records, and the slots they fill
        self._alive = alive
        self._pid = os.getpid()
        self._in_flight: dict[int, asyncio.Task[None]] = {}

    def turn(self) -> None:
        """One look (every :data:`TICK_S`, ``service.discovery.build``): if this worker holds
        the lease, a lookup for every entry that is due and not being looked up."""
        if not self._state.hold_lease(self._pid, LEASE_TERM_S, self._alive):
            return
        now = self._state.clock()
        for entry in self._entries:
            due = self._state.get(entry.number, DUE_AT) <= now
            if due and entry.number not in self._in_flight:
                task = asyncio.create_task(self.refresh(entry))
                self._in_flight[entry.number] = task
                task.add_done_callback(lambda _, n=entry.number: self._in_flight.pop(n))

    async def refresh(self, entry: Entry) -> Lookup:
        """Look ``entry`` up now and apply what came back, unless it came back late."""
        asked = self._state.get(entry.number, WRITTEN)
        lookup = await self._resolver.lookup(entry.host)
        try:
            if not self.record(entry, lookup, asked):
                log.info(
                    "discovery of %s: an answer that arrived after the lease moved or the "
                    "entry was written again is not applied", entry.host,
                )  # fmt: skip
        except TimeoutError as exc:  # the slot table's lock: due again on the next tick
            log.warning("discovery of %s: %s", entry.host, exc)
        return lookup

    def current(self, entry: Entry, asked: float | None) -> bool:
        """Whether this worker may write ``entry``'s answer: it holds the lease, and nothing
        was written since it asked (``asked``: the record's generation then; None: now)."""
        if not self._state.holds_lease(self._pid):
            return False
        return asked is None or self._state.get(entry.number, WRITTEN) == asked

    def record(self, entry: Entry, lookup: Lookup, asked: float | None = None) -> bool:
        """Write what ``lookup`` found; False (and nothing written) if it came too late."""
        state, n = self._state, entry.number
        if not self.current(entry, asked):
            return False
        previous = state.result(n)
        now = state.clock()
        valid = self._settings.valid
        if lookup.answered:
            addresses = self._kept(entry, lookup.addresses)
            if not self._apply(entry, addresses, asked):
                return False
            if state.get(n, FAILING):
                state.set(n, FAILING, 0)
                log.warning(
                    "upstream %s: lookup of %s recovered (%d address(es))",
                    entry.pool, entry.host, len(addresses),
                )  # fmt: skip
            if lookup.result in NO_ADDRESS and previous not in NO_ADDRESS:
                log.warning(
                    "upstream %s: %s has no address (%s): the entry has no target",
                    entry.pool, entry.host, lookup.result.upper(),
                )  # fmt: skip
            state.set(n, REFRESHED_AT, now)
            state.set(n, TTL, lookup.ttl if lookup.ttl is not None else -1)
            state.set(n, ADDRESSES, len(addresses))
            ttl = lookup.ttl if lookup.ttl is not None else valid
        else:
            if not state.get(n, FAILING):
                state.set(n, FAILING, 1)
                log.warning(
                    "upstream %s: lookup of %s failed (%s); keeping its last %d address(es)",
                    entry.pool, entry.host, lookup.detail or lookup.result,
                    int(state.get(n, ADDRESSES)),
                )  # fmt: skip
            last = state.get(n, TTL)
            ttl = last if last > 0 else valid
        state.count(n, lookup.result)
        state.set(n, DUE_AT, now + max(MIN_INTERVAL_S, min(valid, ttl)))
        if not lookup.answered:  # an answer's generation moved with its change, in _apply
            state.set(n, WRITTEN, state.get(n, WRITTEN) + 1)
        return True

    def _kept(self, entry: Entry, addresses: tuple[Address, ...]) -> tuple[Address, ...]:
        """At most ``max_targets`` addresses (the first, sorted); cutting is warned once."""
        limit = self._settings.max_targets
        state, n = self._state, entry.number
        if len(addresses) <= limit:
            state.set(n, TRUNCATED, 0)
            return addresses
        if not state.get(n, TRUNCATED):
            state.set(n, TRUNCATED, 1)
            log.warning(
                "upstream %s: %s has %d addresses; keeping the first %d "
                "(LB_RESOLVER_MAX_TARGETS)",
                entry.pool, entry.host, len(addresses), limit,
            )  # fmt: skip
        return addresses[:limit]

    def _apply(self, entry: Entry, addresses: tuple[Address, ...], asked: float | None) -> bool:
        """Make the entry's targets in its pool exactly ``addresses``, in one change; False
        (nothing changed) if, under the table's lock, the answer is no longer current."""
        wanted = {entry.target_url(a): rank for rank, a in enumerate(addresses)}
        added: list[str] = []
        removed: list[str] = []
        with self._table.change() as change:
            if not self.current(entry, asked):
                return False
            # moved under the lock: a late answer checked after this finds the record written
            self._state.set(entry.number, WRITTEN, self._state.get(entry.number, WRITTEN) + 1)
            members = change.members(entry.pool)
            mine = {m.url for m in members if entry.owns(m)}
            taken = {m.url for m in members if not entry.owns(m)}  # configured, or another entry's
            for url in sorted(mine - wanted.keys()):
                change.release(entry.pool, url)
                removed.append(url)
            for url, rank in wanted.items():
                if url in taken:
                    continue
                try:
                    change.acquire(
                        entry.pool, url, weight=entry.weight, origin=entry.host,
                        order=entry.order(rank),
                    )  # fmt: skip
                except SlotsExhausted as exc:
                    log.warning("upstream %s: %s; %s left out", entry.pool, exc, url)
                    continue
                if url not in mine:
                    added.append(url)
        if added or removed:
            log.info(
                "upstream %s: %s now has %d target(s)%s%s",
                entry.pool, entry.host, len(addresses),
                f"; added {', '.join(added)}" if added else "",
                f"; removed {', '.join(removed)}" if removed else "",
            )  # fmt: skip
        return True


def describe(entry: Entry, state: DiscoveryState, addresses: list[str]) -> dict[str, object]:
    """The entry for ``/stats``' ``discovery`` list: the name, the addresses in use, when it
    was last answered and with which TTL, and why the last lookup failed (else None)."""
    n = entry.number
    refreshed = state.get(n, REFRESHED_AT)
    ttl = state.get(n, TTL)
    result = state.result(n)
    error = None
    if result is not None and result != OK:
        error = result
    return {
        "name": entry.host,
        "url": entry.url,
        "addresses": addresses,
        "refreshed_s_ago": round(state.clock() - refreshed, 3) if refreshed else None,
        "ttl_s": ttl if ttl > 0 else None,
        "error": error,
        "lookups": state.lookups(n),
    }
