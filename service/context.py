"""What a worker holds, in one typed object: ``app.ctx.lb``.

Plain data: it imports no feature. Built in two steps. ``create_app`` makes it with what is
the same in every process (the settings, the router, who the client is, the shared block's
layout as the core packages reserved it, and :class:`~service.features.Show`, where the
features register what they show); each feature package's ``startup`` then fills in its
part in ``before_server_start``, in the order of ``service.factory.FEATURES``: the worker
row, the metrics store, the clients, the pools, the ``/stats`` fan-out. What only a
feature reads (the cluster's view, the reload loop, admission's report) stays in that
feature's ``startup``. Nothing else is kept on ``app.ctx``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from service.features import Gatekeeper, Lookups, RestartOnly, Show, Traces
from service.frontdoor.client import ClientAddresses
from service.logs import AccessLog, RequestIds
from service.metrics import MetricsLayout, MetricsStore
from service.pools import PoolLayout, Pools, PoolState, SlotTable
from service.proxying import Router
from service.routes import RouteCounters
from service.settings import Settings
from service.sharedmem import Plan, WorkerRow
from service.stats import StatsAggregator
from service.transport import UpstreamClients


@dataclass(eq=False)
class WorkerContext:
    settings: Settings
    router: Router
    plan: Plan
    metrics_layout: MetricsLayout
    pool_layout: PoolLayout
    # who the client is (LB_TRUSTED_PROXIES): the access log, limits, LB_ADMIN_ALLOW ask it
    client_addresses: ClientAddresses
    # which settings each feature keeps as the host started with them (service.reload)
    restart_only: tuple[RestartOnly, ...]
    # what the features show in /stats, /metrics and on the status page
    show: Show = field(default_factory=Show)
    # this worker's X-Request-ID maker (a random prefix and a counter)
    request_ids: RequestIds = field(default_factory=RequestIds)
    # True from the start of a graceful shutdown: readiness answers 503, /stats says so
    draining: bool = False
    # Filled in before the worker serves (see the module docstring). A reload replaces
    # settings, router, clients, access_log, pools, aggregator and discovery whole, and binds
    # route_counters to the new router.
    row: WorkerRow = field(init=False)
    metrics: MetricsStore = field(init=False)
    clients: UpstreamClients = field(init=False)
    access_log: AccessLog | None = None  # None when LB_ACCESS_LOG is off
    pool_state: PoolState = field(init=False)
    # the shared table of target slots, and this worker's pools kept in step with it
    slots: SlotTable = field(init=False)
    pools: Pools = field(init=False)
    # admission control (service.admission): None when no limit is configured (the proxy's
    # check is then one attribute test)
    gate: Gatekeeper | None = None
    # each proxied request's trace context, and its spans when exported (service.tracing)
    tracing: Traces = field(init=False)
    # each route's requests per backend, in the shared block (bound to ``router``)
    route_counters: RouteCounters = field(init=False)
    aggregator: StatsAggregator = field(init=False)
    # the block's region of the ;resolve entries (service.discovery), and their lookups
    # (None without any)
    discovery_layout: Any = None
    discovery: Lookups | None = None
    # the certificate this worker serves, when LB_TLS_CERT is set (service.tls sets it)
    tls: Any = None
    # with LB_PROXY_PROTOCOL: why trusted peers' connections were closed, logged once per
    # peer and minute (service.frontdoor.proxy_protocol.RefusalLog; service.frontdoor sets it)
    proxy_protocol_refusals: Any = None
