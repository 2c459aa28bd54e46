"""A worker's DNS discovery, built one way at start-up and at a reload:
:func:`build_discovery`.

The result, :class:`Discovery`, says what the ``resolve`` entries found (``/stats``) and
looks them up again in the background (:meth:`Discovery.start`, :meth:`Discovery.cancel`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from urllib.parse import urlsplit

from service.background import Background
from service.discovery.entries import Entry
from service.discovery.refresher import TICK_S, Refresher, describe
from service.discovery.resolver import Resolver
from service.discovery.state import DUE_AT, DiscoveryLayout, DiscoveryState
from service.pools import Pool, SlotTable
from service.settings import ResolverSettings
from service.sharedmem import SharedBlock
from service.sharedmem.block import process_alive


class Discovery:
    """This worker's discovery: the entries, their shared records, and the lookups."""

    def __init__(
        self,
        entries: Sequence[Entry],
        state: DiscoveryState,
        refresher: Refresher,
        resolver: ResolverSettings,
    ) -> None:
        self.entries = tuple(entries)
        self.state = state
        self.resolver = resolver  # the settings the lookups run with
        self._lookups = Background.every(TICK_S, refresher.turn)

    def start(self) -> None:
        self._lookups.start()

    def cancel(self) -> None:
        self._lookups.cancel()

    def describe(self, pools: Mapping[str, Pool]) -> dict[str, list[dict[str, object]]]:
        """``{pool: [entry, ...]}`` for ``/stats``: each entry's name and the addresses this
        worker's pool holds from it, with the shared record's figures."""
        out: dict[str, list[dict[str, object]]] = {}
        for entry in self.entries:
            pool = pools.get(entry.pool)
            targets = pool.targets if pool is not None else ()
            addresses = [urlsplit(t.url).hostname or "" for t in targets if t.origin == entry.host]
            out.setdefault(entry.pool, []).append(describe(entry, self.state, addresses))
        return out


def build_discovery(
    entries: Sequence[Entry],
    resolver: ResolverSettings,
    *,
    block: SharedBlock,
    layout: DiscoveryLayout,
    table: SlotTable,
    previous: Discovery | None = None,
) -> Discovery | None:
    """Lookups of ``entries`` with ``resolver``; None without entries. ``previous``: what
    this worker ran until now (a reload): returned as it is when nothing changed; otherwise
    its records are kept, and an entry whose weight or place changed is due at once, so its
    targets take the change on the next turn rather than at the next refresh."""
    entries = tuple(entries)
    if previous is not None and (previous.entries, previous.resolver) == (entries, resolver):
        return previous
    if not entries:
        return None
    state = previous.state if previous is not None else DiscoveryState(block, layout)
    before = {e.number: e for e in (previous.entries if previous is not None else ())}
    for entry in entries:
        if before.get(entry.number, entry) != entry:
            state.set(entry.number, DUE_AT, 0)
    refresher = Refresher(entries, Resolver(resolver), state, table, resolver, process_alive)
    return Discovery(entries, state, refresher, resolver)
