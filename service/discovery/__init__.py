"""DNS discovery: the targets of a ``url;resolve`` entry are the addresses its host name
resolves to, looked up again while serving (nginx's ``resolve``, Envoy's ``STRICT_DNS``).

- ``entries``: the ``resolve`` entries of the settings, numbered the same in every process;
- ``resolver``: one lookup (A and AAAA) on dnspython's asyncio resolver, classified;
- ``state``: what the workers share about each entry, and the lease;
- ``refresher``: the loop that looks names up (one worker per host) and writes the answers
  to the table of target slots (``service.pools.slots``), which every worker follows.

``startup(app)`` starts the refresher after the server has started: start-up never waits for
DNS, and a pool whose targets are all resolved is empty until the first answer. Nothing here
runs on a request's path.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from urllib.parse import urlsplit

from sanic import Sanic

from service.discovery.entries import Entry, entries_of
from service.discovery.refresher import Refresher, describe
from service.discovery.resolver import RESULTS, Lookup, Resolver
from service.discovery.state import DiscoveryLayout, DiscoveryState
from service.pools import Pool
from service.settings import Settings
from service.sharedmem import Plan
from service.sharedmem.block import process_alive

__all__ = [
    "RESULTS",
    "Discovery",
    "DiscoveryLayout",
    "Entry",
    "Lookup",
    "Resolver",
    "entries_of",
    "reserve",
    "startup",
]


def reserve(plan: Plan, settings: Settings) -> DiscoveryLayout:
    """Discovery's space in the shared block: the lease and a record per ``resolve`` entry."""
    return DiscoveryLayout(plan, len(entries_of(settings)))


@dataclass(eq=False)
class Discovery:
    """This worker's discovery: the entries, their shared records, and the refresher."""

    entries: Sequence[Entry]
    state: DiscoveryState
    refresher: Refresher
    task: asyncio.Task[None] | None = None

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


def startup(app: Sanic) -> None:
    @app.before_server_start
    async def open_discovery(app: Sanic) -> None:
        lb = app.ctx.lb
        entries = entries_of(lb.settings)
        if not entries:
            return
        state = DiscoveryState(lb.row.block, lb.discovery_layout)
        refresher = Refresher(
            entries, Resolver(lb.settings.resolver), state, lb.slots, lb.settings.resolver,
            process_alive,
        )  # fmt: skip
        lb.discovery = Discovery(entries, state, refresher)

    @app.after_server_start
    async def start_lookups(app: Sanic) -> None:
        discovery = app.ctx.lb.discovery
        if discovery is not None:
            discovery.task = asyncio.create_task(discovery.refresher.run())

    @app.before_server_stop
    async def stop_lookups(app: Sanic) -> None:
        discovery = app.ctx.lb.discovery
        if discovery is not None and discovery.task is not None:
            discovery.task.cancel()
