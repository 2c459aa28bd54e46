"""Wiring of the upstream pools into Sanic's process model.

The per-target block is shared like the metrics block (allocated in ``main_process_start``,
or by the worker itself where that never runs); each worker builds its own :class:`Pool`
objects over it, using the worker row it claimed in the metrics store, and one worker at a
time runs the active health checks (see ``service.health_checks``).
"""

from __future__ import annotations

import asyncio

from sanic import Sanic

from service.health_checks import HealthChecker
from service.metrics_setup import MAX_WORKER_ROWS
from service.pool import Pool, RetryBudget
from service.pool_state import PoolState, allocate
from service.settings import Settings
from service.shared_store import process_alive


def _target_count(settings: Settings) -> int:
    return sum(len(u.targets) for u in settings.upstreams)


def build_pools(settings: Settings, state: PoolState) -> dict[str, Pool]:
    pools, first = {}, 0
    for upstream in settings.upstreams:
        pools[upstream.name] = Pool(upstream, first, state)
        first += len(upstream.targets)
    return pools


def register(app: Sanic) -> None:
    @app.main_process_start
    async def allocate_pool_block(app: Sanic) -> None:
        app.shared_ctx.pool_block = allocate(_target_count(app.ctx.settings), MAX_WORKER_ROWS)

    @app.before_server_start
    async def open_pools(app: Sanic) -> None:
        settings = app.ctx.settings
        block = getattr(app.shared_ctx, "pool_block", None)
        if block is None:
            block = allocate(_target_count(settings), MAX_WORKER_ROWS)
        app.ctx.pool_state = PoolState(
            block,
            targets=_target_count(settings),
            rows=MAX_WORKER_ROWS,
            row=app.ctx.metrics.row_index,
        )
        app.ctx.pools = build_pools(settings, app.ctx.pool_state)
        app.ctx.retry_budget = RetryBudget()

    @app.after_server_start
    async def start_health_checks(app: Sanic) -> None:
        if any(u.active for u in app.ctx.settings.upstreams):
            checker = HealthChecker(
                list(app.ctx.pools.values()), app.ctx.pool_state,
                lambda name: app.ctx.upstreams[name], process_alive,
            )  # fmt: skip
            app.ctx.health_task = asyncio.create_task(checker.run())

    @app.before_server_stop
    async def stop_health_checks(app: Sanic) -> None:
        task = getattr(app.ctx, "health_task", None)
        if task is not None:
            task.cancel()
