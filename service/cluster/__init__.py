"""Figures for the whole cluster: every replica publishes to Redis, every ``/stats`` reads all.

Off unless ``LB_CLUSTER_REDIS_URL`` is set: then ``startup`` registers nothing, reserves
nothing and imports nothing, and the host runs exactly as without this package. When set:

- ``publisher``: one worker per host (a lease in the shared block) writes the host's
  cumulative figures to Redis every ``publish_interval``;
- ``view``: ``/stats`` and ``/metrics`` (through ``stats.report.build_report``) read every
  replica's figures in one round trip and merge them with this host's own;
- ``targets``: per pool target, the figures (not the state) added up across replicas;
- ``redis_store``: the keys and the round trips, over ``service.redisconn`` (the connection,
  shared with the admission sync; the only module that imports redis-py).

Redis is never on a request's path: recording stays in shared memory, and Redis down, slow or
emptied only makes ``/stats`` say ``cluster.status: "degraded"`` until it is back. Pool state
(ejections, health verdicts) stays per host, as in nginx and Envoy.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

from sanic import Sanic

from service.metrics import HostFigures
from service.sharedmem import LEASE_WIDTH, Lease
from service.sharedmem.block import process_alive


def startup(app: Sanic) -> None:
    lb = app.ctx.lb
    settings = lb.settings.cluster
    if not settings.redis_url:
        return
    lease_region = lb.plan.shared(LEASE_WIDTH)  # reserved at build time, like every feature

    @app.before_server_start
    async def open_cluster(app: Sanic) -> None:
        # Imported here: a host without a cluster never loads redis-py.
        from service.cluster.publisher import Publisher
        from service.cluster.redis_store import RedisStore
        from service.cluster.replica import replica_id
        from service.cluster.targets import add_target_figures
        from service.cluster.view import ClusterView

        lb = app.ctx.lb
        block = lb.row.block
        replica = replica_id(block.started_wall)
        store = RedisStore(settings.redis_url, settings.name, settings.timeout)

        def figures() -> HostFigures:
            return add_target_figures(lb.metrics.figures(), lb.pools)

        lb.cluster = ClusterView(store, settings, replica, figures)

        def history() -> list[Any]:
            own = lb.metrics.snapshot(history=True).history
            return own.to_wire() if own is not None else []

        lb.cluster_publisher = Publisher(
            store, settings, Lease(block, lease_region), replica, block.started_wall,
            figures, process_alive, history,
        )  # fmt: skip

    @app.after_server_start
    async def start_publishing(app: Sanic) -> None:
        lb = app.ctx.lb
        lb.cluster_task = asyncio.create_task(lb.cluster_publisher.run())

    @app.before_server_stop
    async def stop_publishing(app: Sanic) -> None:
        lb = app.ctx.lb
        if lb.cluster_task is not None:
            lb.cluster_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await lb.cluster_task
        # The last requests' figures, so the cluster's totals include them after we are gone.
        if lb.cluster_publisher.holds_lease():
            await lb.cluster_publisher.publish_once()

    @app.after_server_stop
    async def close_cluster(app: Sanic) -> None:
        await app.ctx.lb.cluster.aclose()
