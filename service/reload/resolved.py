"""A reload's side of DNS discovery (``service.discovery``): the ``;resolve`` entries of a new
file, numbered as the host started with them (``service.discovery.build_discovery`` then
builds a worker's lookups on them).

Each entry has a record in the shared block, numbered when the host started (its last answer,
TTL, due time, lookup counters). A reload may change an entry's weight or place, drop an
entry, and change ``LB_RESOLVER``, ``LB_RESOLVER_VALID`` and ``LB_RESOLVER_TIMEOUT``; an entry
the host did not start with has no record, so it needs a restart, and the file is refused as
a whole (all or nothing) with that reason. An entry keeps its record, hence its addresses and
figures, by its pool and URL.
"""

from __future__ import annotations

import dataclasses

from service.discovery import Entry, entries_of
from service.settings import Settings, SettingsError


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
