"""Applying new settings in one worker: its router, clients, pools, discovery, fan-out and
access log swapped whole, between requests.

:func:`swap` runs without an ``await``, so no request sees half of it. A request takes the
objects it needs once, before its first ``await`` (``blueprints/proxy.py``), and finishes on
them: a stream or a WebSocket tunnel on a pool the new file removes goes on to its end. What
the new objects do not use is retired, not closed under anyone's feet:

- a client the new generation does not keep (its upstream is gone, or the connection limits
  changed) has the idle connections of its targets closed at once, every busy one as its
  exchange ends, and is closed itself once none is busy (``UpstreamClients.retire``);
- a pool that is kept but loses targets closes their idle connections (``forget``);
- a pool whose settings change is a new object carrying the ``Target`` objects of the targets
  that stay, with this worker's requests in flight and recent failures on them; their shared
  state (ejection, streaks, window, lifetime counts) is their slot's, which stays.
"""

from __future__ import annotations

from collections.abc import Mapping

from sanic import Sanic

from service.background import Running
from service.discovery import build_discovery
from service.logs import build_access_log
from service.pools import Pool, build_pools
from service.proxying import Router, response_timeout
from service.reload import resolved, targets
from service.settings import Settings
from service.stats import build_aggregator
from service.transport import UpstreamClients


def swap(app: Sanic, settings: Settings, started: Settings, *, serving: bool) -> None:
    """Make ``settings`` this worker's configuration (``started``: the host's start-up
    settings, which numbered its ``resolve`` entries). Each concern is built by its own
    package's function, given what it replaces. ``serving``: the replaced objects' background
    work (slot sync, health checks, DNS lookups, access-log flushes) is running: it is
    cancelled and the new objects' started; before the server starts, the features' own
    listeners start what this leaves in place."""
    lb = app.ctx.lb
    entries = resolved.entries_for(settings, started)  # the leader checked that it can
    old_clients, old_pools = lb.clients, lb.pools
    clients = UpstreamClients(settings, previous=old_clients)
    pools = build_pools(
        settings, state=lb.pool_state, table=lb.slots, row=lb.row, clients=clients,
        previous=old_pools, keep=targets.keep_for(settings),
    )  # fmt: skip
    discovery = build_discovery(
        entries, settings.resolver, block=lb.row.block, layout=lb.discovery_layout,
        table=lb.slots, previous=lb.discovery,
    )  # fmt: skip
    access_log = build_access_log(settings, lb.client_addresses.of, previous=lb.access_log)

    lb.metrics.name_routes(lb.slots.pool_names())  # claimed by the leader: in the directory
    lb.settings, lb.router = settings, Router(settings.routes)
    lb.route_counters.bind(lb.router.pairs)  # before any request routes on the new router
    if lb.gate is not None:  # admission control: the start-up limits over the new routes
        lb.gate.replan(settings)
    lb.aggregator = build_aggregator(settings, clients, pools)
    app.config.RESPONSE_TIMEOUT = response_timeout(settings.proxy)
    _hand_over(old_pools, pools, serving)
    _hand_over(lb.discovery, discovery, serving)
    _hand_over(lb.access_log, access_log, serving)
    lb.clients, lb.pools, lb.discovery, lb.access_log = clients, pools, discovery, access_log

    clients.retire(old_clients, lambda name: _urls(old_pools, name))


def _urls(pools: Mapping[str, Pool], name: str) -> list[str]:
    return [t.url for t in pools[name].targets] if name in pools else []


def _hand_over(old: Running | None, new: Running | None, serving: bool) -> None:
    """``new`` replaces ``old``: the old one's background work ends, the new one's begins
    (when the worker serves: before, its feature's listener starts it)."""
    if new is old:
        return
    if old is not None:
        old.cancel()
    if serving and new is not None:
        new.start()
