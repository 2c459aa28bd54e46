"""A reload's side of DNS discovery (``service.discovery``): the ``;resolve`` entries of a new
file, and a worker's lookups rebuilt on them.

Each entry has a record in the shared block, numbered when the host started (its last answer,
TTL, due time, lookup counters). A reload may change an entry's weight or place, drop an
entry, and change ``LB_RESOLVER``, ``LB_RESOLVER_VALID`` and ``LB_RESOLVER_TIMEOUT``; an entry
the host did not start with has no record, so it needs a restart, and the file is refused as
a whole (all or nothing) with that reason. An entry keeps its record, hence its addresses and
figures, by its pool and URL.
"""

from __future__ import annotations

import asyncio
import dataclasses
from typing import TYPE_CHECKING

from service.discovery import Discovery, Entry, Resolver, entries_of
from service.discovery.refresher import Refresher
from service.discovery.state import DUE_AT, DiscoveryState
from service.settings import Settings, SettingsError
from service.sharedmem.block import process_alive

if TYPE_CHECKING:
    from service.context import WorkerContext


def entries_for(settings: Settings, started: Settings) -> tuple[Entry, ...]:
    """The ``resolve`` entries of ``settings``, numbered as the host started with them;
    :class:`SettingsError` for one it did not start with."""
    numbers = {(e.pool, e.url): e.number for e in entries_of(started)}
    entries = []
    for entry in entries_of(settings):
        number = numbers.get((entry.pool, entry.url))
        if number is None:
            raise SettingsError(
                f"upstream {entry.pool!r}: {entry.url};resolve is a new ;resolve entry (each has "
                "a record in the shared block, sized at start-up): needs a restart"
            )
        entries.append(dataclasses.replace(entry, number=number))
    return tuple(entries)


def rebuild(lb: WorkerContext, settings: Settings, entries: tuple[Entry, ...]) -> bool:
    """Make ``lb.discovery`` look up ``entries`` with ``settings.resolver``; True if it was
    replaced (its lookups are then started by the caller, or by discovery's own listener
    before the server starts). An entry whose weight or place changed is due at once, so
    its targets take the change on the next turn rather than at the next refresh."""
    old = lb.discovery
    same_resolver = lb.settings.resolver == settings.resolver
    if old is not None and tuple(old.entries) == entries and same_resolver:
        return False
    if old is not None and old.task is not None:
        old.task.cancel()
    if not entries:
        lb.discovery = None
        return True
    state = old.state if old is not None else DiscoveryState(lb.row.block, lb.discovery_layout)
    before = {e.number: e for e in (old.entries if old is not None else ())}
    for entry in entries:
        if before.get(entry.number, entry) != entry:
            state.set(entry.number, DUE_AT, 0)
    refresher = Refresher(
        entries, Resolver(settings.resolver), state, lb.slots, settings.resolver, process_alive
    )
    lb.discovery = Discovery(entries, state, refresher)
    return True


def start(lb: WorkerContext) -> None:
    if lb.discovery is not None:
        lb.discovery.task = asyncio.create_task(lb.discovery.refresher.run())
