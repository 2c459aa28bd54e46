"""Admission control at the front door: whether a client is let in (who the client is, is
the front door's: ``service.frontdoor.client``).

- ``policy``: the limits compiled once (``[[limits]]``, ``LB_RATE_LIMIT``), per route;
- ``gate``: the one check on a request's path (GCRA rate limits, ``LB_MAX_CLIENT_REQUESTS``,
  pools' ``max_requests``), exact across the host's workers: the state lives in the shared
  block (``layout``, ``table``) and is changed under one host lock (a ``SharedLock``); ``endpoints``
  puts it in front of ``/stats``; ``episodes`` writes the lines when a key starts and stops
  being limited;
- ``housekeeping``: one worker per host ends limited episodes and, with
  ``LB_CLUSTER_REDIS_URL``, shares admissions with the other replicas (``sync``,
  ``sync_store``: the only modules that touch Redis, through ``service.redisconn``, imported
  only then);
- ``report``: ``/stats``' ``limits`` and the status page's panel; ``exposition``:
  ``/metrics``' counters.

``startup(app)`` registers what admission shows, reserves the block's regions when
something is configured, and opens the gate in each worker. With nothing configured,
nothing is reserved, ``lb.gate`` stays None and the proxy's check is one attribute test.
"""

from __future__ import annotations

from dataclasses import dataclass

from sanic import Sanic

from service.admission import exposition
from service.admission.check import check_lines
from service.admission.endpoints import admitted
from service.admission.gate import Admission, Gate
from service.admission.housekeeping import SWEEP_EVERY_S, Housekeeping
from service.admission.layout import IN_FLIGHT, LOCK_NAME, LOCK_WAIT_S, PER_POOL, AdmissionLayout
from service.admission.policy import compile_limits, route_plans
from service.admission.report import AdmissionView
from service.admission.restart import RESTART_ONLY
from service.admission.table import ClientTable, RateTable
from service.settings import Settings
from service.background import Background
from service.sharedmem import Lease, Plan, process_alive

__all__ = [
    "RESTART_ONLY",
    "Admission",
    "AdmissionView",
    "Gate",
    "admitted",
    "check_lines",
    "reserve",
    "startup",
]


def reserve(plan: Plan, settings: Settings) -> AdmissionLayout | None:
    """The admission's regions of the block, or None when nothing is configured."""
    limits = compile_limits(settings)
    pools = len(settings.upstreams)
    capped = any(u.max_requests for u in settings.upstreams)
    clients = settings.admission.max_client_requests > 0
    if not limits and not capped and not clients:
        return None
    keyed = any(not limit.per_all for limit in limits)
    keys = settings.admission.limit_keys
    return AdmissionLayout(
        plan,
        limits=len(limits),
        pools=pools,
        keys=keys if keyed else 0,
        client_slots=keys if clients else 0,
        cluster=bool(settings.cluster.redis_url) and bool(limits),
    )


@dataclass(eq=False)
class _Running:
    """What admission shows and runs in this worker, once built (before it serves)."""

    view: AdmissionView | None = None
    chores: Housekeeping | None = None
    housekeeping: Background | None = None


def startup(app: Sanic) -> None:
    lb = app.ctx.lb
    settings: Settings = lb.settings
    limits = compile_limits(settings)
    layout = reserve(lb.plan, settings)
    running = _Running()
    lb.show.section("limits", lambda: running.view.entry() if running.view else None)
    lb.show.panel("limits_history", lambda: running.view.history() if running.view else [])
    lb.show.metric_families(exposition.families, order=exposition.ORDER)
    if layout is None:

        @app.before_server_start
        async def report_nothing(app: Sanic) -> None:
            running.view = AdmissionView(settings, limits, None, None, None)

        return

    @app.before_server_start
    async def open_gate(app: Sanic) -> None:
        lb = app.ctx.lb
        block, row = lb.row.block, lb.row
        mem = block.mem
        raw_bytes = mem.cast("B")
        lock = block.lock(layout.lock, LOCK_NAME, LOCK_WAIT_S)
        table = RateTable(mem, raw_bytes, layout)
        table.touch()
        clients = ClientTable(mem, raw_bytes, layout)
        # A dead predecessor's requests in flight died with it.
        for pool in range(layout.pools):
            mem[row.at + layout.pool_counters.at + pool * PER_POOL + IN_FLIGHT] = 0.0
        if layout.client_slots and lock.acquire():
            try:
                clients.clear_column(row.index)
            finally:
                lock.release()
        lb.gate = Gate(
            mem=mem,
            layout=layout,
            lock=lock,
            table=table,
            clients=clients,
            plans=route_plans(settings, limits),
            limits=limits,
            pool_names=[u.name for u in settings.upstreams],
            client_addresses=lb.client_addresses,
            row_at=row.at,
            column=row.index,
            row_offsets=list(block.rows()),
            max_client_requests=settings.admission.max_client_requests,
            send_fields=settings.admission.rate_limit_headers,
        )
        view = AdmissionView(settings, limits, layout, block, table)
        running.view = view
        sync = None
        if layout.cluster:
            # Imported here: a host without a cluster never loads redis-py.
            from service.admission.sync import ClusterSync
            from service.admission.sync_store import SyncStore
            from service.cluster.replica import replica_id

            def totals() -> list[tuple[int, int]]:
                counts = view.counts()
                return [(c.admitted, c.limited) for c in counts[: len(limits)]]

            cluster = settings.cluster
            sync = ClusterSync(
                SyncStore(cluster.redis_url, cluster.name, cluster.timeout), cluster,
                replica_id(block.started_wall), mem=mem, raw_bytes=raw_bytes, layout=layout,
                lock=lock, table=table, limits=limits, totals=totals,
            )  # fmt: skip
        interval = settings.cluster.publish_interval if sync is not None else SWEEP_EVERY_S
        running.chores = Housekeeping(
            Lease(block, layout.lease), lock, table, limits, process_alive, sync, interval
        )
        if limits:
            running.housekeeping = Background(running.chores.run)

    @app.after_server_start
    async def start_housekeeping(app: Sanic) -> None:
        if running.housekeeping is not None:
            running.housekeeping.start()

    @app.before_server_stop
    async def stop_housekeeping(app: Sanic) -> None:
        if running.housekeeping is not None:
            await running.housekeeping.stop()

    @app.after_server_stop
    async def close_sync(app: Sanic) -> None:
        if running.chores is not None and running.chores.sync is not None:
            await running.chores.sync.aclose()
