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

from typing import Any

from sanic import Sanic

from service.discovery import exposition
from service.discovery.build import Discovery, build_discovery
from service.discovery.check import check_lines
from service.discovery.entries import Entry, entries_of
from service.discovery.resolver import RESULTS, Lookup, Resolver
from service.discovery.state import DiscoveryLayout
from service.features import RestartOnly
from service.settings import Settings
from service.sharedmem import Plan

__all__ = [
    "RESULTS",
    "Discovery",
    "DiscoveryLayout",
    "Entry",
    "Lookup",
    "Resolver",
    "build_discovery",
    "check_lines",
    "entries_of",
    "reserve",
    "startup",
]


# the records' size in the shared block (how many addresses an entry may bring)
RESTART_ONLY = RestartOnly(fields=(("resolver", "max_targets"),))


def reserve(plan: Plan, settings: Settings) -> DiscoveryLayout:
    """Discovery's space in the shared block: the lease and a record per ``resolve`` entry."""
    return DiscoveryLayout(plan, len(entries_of(settings)))


def startup(app: Sanic) -> None:
    lb = app.ctx.lb
    lb.discovery_layout = reserve(lb.plan, lb.settings)
    lb.show.metric_families(exposition.families, order=exposition.ORDER)

    def add_entries(pools: dict[str, dict[str, Any]]) -> None:
        """Each pool's ``discovery``: its entries, and the addresses they brought."""
        if lb.discovery is not None:
            for name, entries in lb.discovery.describe(lb.pools).items():
                pools[name]["discovery"] = entries

    lb.show.pool_detail(add_entries)

    @app.before_server_start
    async def open_discovery(app: Sanic) -> None:
        lb = app.ctx.lb
        lb.discovery = build_discovery(
            entries_of(lb.settings), lb.settings.resolver,
            block=lb.row.block, layout=lb.discovery_layout, table=lb.slots,
        )  # fmt: skip

    @app.after_server_start
    async def start_lookups(app: Sanic) -> None:
        if app.ctx.lb.discovery is not None:
            app.ctx.lb.discovery.start()

    @app.before_server_stop
    async def stop_lookups(app: Sanic) -> None:
        if app.ctx.lb.discovery is not None:
            app.ctx.lb.discovery.cancel()
