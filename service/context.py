"""What a worker holds, in one typed object: ``app.ctx.lb``.

Built in two steps. ``create_app`` makes it with what is the same in every process (the
settings, the router, the shared block's layout as the features reserved it); each feature
package's ``startup`` then fills in its own part in ``before_server_start``, in the order
``create_app`` calls them: the worker row, the metrics store, the clients, the pools, the
``/stats`` fan-out. Nothing else is kept on ``app.ctx``.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from service.admission import AdmissionView, ClientAddresses, Gate
from service.discovery.state import DiscoveryLayout
from service.logs import AccessLog, RequestIds
from service.metrics import MetricsLayout, MetricsStore
from service.pools import PoolLayout, Pools, PoolState, RetryBudget, SlotTable
from service.proxying.routing import Router
from service.settings import Settings
from service.sharedmem import Plan, WorkerRow
from service.stats import StatsAggregator
from service.transport import UpstreamClients

if TYPE_CHECKING:  # only imported when a cluster is configured
    from service.admission.housekeeping import Housekeeping
    from service.cluster.publisher import Publisher
    from service.cluster.view import ClusterView
    from service.discovery import Discovery
    from service.tls.rotation import LiveCertificate
    from service.reload import ConfigReload


@dataclass(eq=False)
class WorkerContext:
    settings: Settings
    router: Router
    plan: Plan
    metrics_layout: MetricsLayout
    pool_layout: PoolLayout
    discovery_layout: DiscoveryLayout
    # filled in before the worker serves (see the module docstring)
    row: WorkerRow = field(init=False)
    metrics: MetricsStore = field(init=False)
    clients: UpstreamClients = field(init=False)
    pool_state: PoolState = field(init=False)
    # the shared table of target slots, and this worker's pools kept in step with it
    slots: SlotTable = field(init=False)
    pools: Pools = field(init=False)
    retry_budget: RetryBudget = field(init=False)
    aggregator: StatsAggregator = field(init=False)
    # set only when LB_CLUSTER_REDIS_URL is (service.cluster): the replicas' shared figures
    cluster: ClusterView | None = None
    cluster_publisher: Publisher | None = None
    cluster_task: asyncio.Task[None] | None = None
    # set only when a target entry has ;resolve (service.discovery): the names looked up
    discovery: Discovery | None = None
    # True from the start of a graceful shutdown: readiness answers 503, /stats says so
    draining: bool = False
    # this worker's X-Request-ID maker (a random prefix and a counter)
    request_ids: RequestIds = field(default_factory=RequestIds)
    access_log: AccessLog | None = None  # None when LB_ACCESS_LOG is off
    # who the client is (LB_TRUSTED_PROXIES), set when the app is built (service.admission)
    client_addresses: ClientAddresses = field(default_factory=lambda: ClientAddresses(()))
    # admission control: None when no limit is configured (the proxy's check is then free)
    gate: Gate | None = None
    admission: AdmissionView = field(init=False)  # /stats' limits, /metrics, the status page
    admission_chores: Housekeeping | None = None
    admission_task: asyncio.Task[None] | None = None
    # set only when LB_TLS_CERT is (service.tls): the certificate this worker serves
    tls: LiveCertificate | None = None
    # the configuration this worker runs and its reloading (service.reload); a reload
    # replaces settings, router, clients, pools and aggregator above, whole, between requests
    reload: ConfigReload | None = None
