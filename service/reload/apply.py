"""Applying new settings in one worker: its router, clients, pools, fan-out and tasks swapped
whole, between requests.

:func:`swap` runs without an ``await``, so no request sees half of it. A request takes the
objects it needs once, before its first ``await`` (``blueprints/proxy.py``), and finishes on
them: a stream or a WebSocket tunnel on a pool the new file removes goes on to its end. What
the new objects do not use is retired, not closed under anyone's feet:

- a client the new generation does not keep (its upstream is gone, or the connection limits
  changed) has the idle connections of its targets closed at once, every busy one as its
  exchange ends, and is closed itself once none is busy (:class:`Retirements`);
- a pool that is kept but loses targets closes their idle connections (``forget``);
- a pool whose settings change is a new object carrying the ``Target`` objects of the targets
  that stay, with this worker's requests in flight and recent failures on them; their shared
  state (ejection, streaks, window, lifetime counts) is their slot's, which stays.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import TYPE_CHECKING

import httpx
from sanic import Sanic

from service.logs import close_access_log, open_access_log
from service.pools import Pool, TargetSync
from service.pools.health_checks import HealthChecker
from service.proxying.routing import Router
from service.reload import resolved, targets
from service.settings import Settings
from service.sharedmem.block import process_alive
from service.stats import build_aggregator
from service.transport import UpstreamClients, connections_in_use

if TYPE_CHECKING:
    from service.context import WorkerContext

CLOSE_POLL_S = 0.5  # how often a retired client is asked whether its last exchange ended


def swap(
    app: Sanic, settings: Settings, started: Settings, retirements: Retirements, *, serving: bool
) -> None:
    """Make ``settings`` this worker's configuration (``started``: the host's start-up
    settings, which numbered its ``resolve`` entries). ``serving``: the worker's tasks (slot
    sync, health checks, DNS lookups) are running and are replaced too; before the server
    starts, their own listeners start them on what this leaves in place."""
    lb = app.ctx.lb
    entries = resolved.entries_for(settings, started)  # the leader checked that it can
    old_clients, old_pools = lb.clients, lb.pools
    clients = UpstreamClients(settings, previous=old_clients)
    pools = _pools(lb, settings, old_pools, clients)

    lb.metrics.name_routes(lb.slots.pool_names())  # claimed by the leader: in the directory
    lookups_replaced = resolved.rebuild(lb, settings, entries)  # reads lb.settings: first
    lb.settings, lb.router = settings, Router(settings.routes)
    lb.clients, lb.pools = clients, pools
    if lb.gate is not None:  # admission control: the start-up limits over the new routes
        lb.gate.replan(settings)
    lb.aggregator = build_aggregator(settings, clients, pools)
    keep = targets.keep_for(settings)
    lb.target_sync = TargetSync(
        lb.slots, pools, lb.pool_state, lb.row,
        on_removed=lambda name, gone: clients.forget(name, [t.url for t in gone]), keep=keep,
    )  # fmt: skip
    lb.target_sync.apply()
    app.config.RESPONSE_TIMEOUT = settings.proxy.read_timeout + 30  # as create_app sets it

    for name, client in old_clients.items():
        if name not in clients or clients[name] is not client:
            gone = old_pools[name].targets if name in old_pools else ()
            old_clients.forget(name, [t.url for t in gone])
            retirements.close_when_idle(client)
    if settings.access_log and lb.access_log is None:
        open_access_log(app)
    elif not settings.access_log and lb.access_log is not None:
        retirements.track(asyncio.create_task(close_access_log(app)))
    if serving:
        _restart_tasks(app, settings, _checked(old_pools, old_clients) != _checked(pools, clients))
        if lookups_replaced:
            resolved.start(lb)


def _checked(pools: dict[str, Pool], clients: UpstreamClients) -> list[tuple[Pool, object]]:
    """What the health checks run on: the pools with a health path, and their clients."""
    return [(p, clients[n]) for n, p in pools.items() if p.upstream.active and n in clients]


def _pools(
    lb: WorkerContext, settings: Settings, old: dict[str, Pool], clients: UpstreamClients
) -> dict[str, Pool]:
    """A pool per upstream of ``settings``: the same object when its settings are the same,
    else a new one over the targets the table holds for it (the ones that stay keep their
    objects)."""
    members = targets.members_for(lb.slots, settings)
    pools = {}
    for upstream in settings.upstreams:
        previous = old.get(upstream.name)
        if previous is not None and previous.upstream == upstream:
            pools[upstream.name] = previous
            continue
        pool = Pool(upstream, 0, lb.pool_state)
        # The targets the constructor made (numbered from 0) are placeholders: the previous
        # pool's objects are what replace_targets keeps, by slot, for the members that stay.
        pool.targets = previous.targets if previous is not None else ()
        gone = pool.replace_targets(members[upstream.name])
        if gone:
            clients.forget(upstream.name, [t.url for t in gone])
        pools[upstream.name] = pool
    return pools


def _restart_tasks(app: Sanic, settings: Settings, checks_changed: bool) -> None:
    """The slot sync on the new pools; the health checks too if what they check changed
    (restarted for nothing, they would check at once, so at every reload)."""
    lb = app.ctx.lb
    if lb.target_sync_task is not None:
        lb.target_sync_task.cancel()
    lb.target_sync_task = asyncio.create_task(lb.target_sync.run())
    if not checks_changed:
        return
    if lb.health_task is not None:
        lb.health_task.cancel()
        lb.health_task = None
    if any(u.active for u in settings.upstreams):
        clients = lb.clients
        checker = HealthChecker(
            list(lb.pools.values()), lb.pool_state, clients.__getitem__, process_alive
        )
        lb.health_task = asyncio.create_task(checker.run())


class Retirements:
    """What a worker's earlier generations left running: clients waiting for their last
    exchange before they are closed, an access log being flushed."""

    def __init__(self) -> None:
        self._tasks: set[asyncio.Task[None]] = set()
        self._clients: set[httpx.AsyncClient] = set()

    def close_when_idle(self, client: httpx.AsyncClient) -> None:
        self._clients.add(client)
        self.track(asyncio.create_task(self._close(client)))

    def track(self, task: asyncio.Task[None]) -> None:
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _close(self, client: httpx.AsyncClient) -> None:
        while connections_in_use(client):
            await asyncio.sleep(CLOSE_POLL_S)
        self._clients.discard(client)
        await client.aclose()

    async def aclose(self) -> None:
        """At stop: every retired client closed now, whatever it was waiting for."""
        for task in list(self._tasks):
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        for client in list(self._clients):
            await client.aclose()
        self._clients.clear()
