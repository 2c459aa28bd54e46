"""Upstream pools: choosing a target (``balancing``), an attempt's life and passive health
(``pool``), the retry rule and budget (``retries``), the state every worker shares
(``state``), the table of target slots that lets targets come and go while serving
(``slots``, kept in step by ``sync``) and active health checks (``health_checks``).

``startup(app)`` builds this worker's pools over its row of the shared block and the slot
table, keeps them in step with it, and runs the active health checks (one worker of the host
at a time sends them; see ``health_checks``).
"""

from __future__ import annotations

import asyncio

from sanic import Sanic

from service.pools.health_checks import HealthChecker
from service.pools.pool import Attempt, Pool, Target
from service.pools.retries import RetryBudget, RetryRule
from service.pools.slots import Member, SlotsExhausted, SlotTable, capacity_for
from service.pools.state import PoolLayout, PoolState
from service.pools.sync import TargetSync
from service.settings import Settings
from service.sharedmem import Plan
from service.sharedmem.block import process_alive

__all__ = [
    "Attempt",
    "Member",
    "Pool",
    "PoolLayout",
    "PoolState",
    "RetryBudget",
    "RetryRule",
    "SlotTable",
    "SlotsExhausted",
    "Target",
    "TargetSync",
    "build_pools",
    "reserve",
    "startup",
]


def reserve(plan: Plan, settings: Settings) -> PoolLayout:
    """The pools' space in the shared block: a slot for every configured target, for as many
    addresses as each ``resolve`` entry may bring, and spares (``slots.capacity_for``)."""
    return PoolLayout(plan, capacity_for(settings), pools=len(settings.upstreams))


def build_pools(settings: Settings, state: PoolState) -> dict[str, Pool]:
    """Pools of the configured targets, indexed as ``SlotTable.seed`` places them; the
    table then has the last word (``TargetSync.apply``)."""
    pools, first = {}, 0
    for upstream in settings.upstreams:
        pools[upstream.name] = Pool(upstream, first, state)
        first += len(upstream.static_targets)
    return pools


def startup(app: Sanic) -> None:
    @app.before_server_start
    async def open_pools(app: Sanic) -> None:
        lb = app.ctx.lb
        lb.pool_state = PoolState(lb.row, lb.pool_layout)
        lock = getattr(app.shared_ctx, "block_lock", None)
        lb.slots = SlotTable(lb.row.block, lb.pool_layout.slots, lock=lock)
        lb.slots.seed(lb.settings)
        lb.pools = build_pools(lb.settings, lb.pool_state)
        lb.target_sync = TargetSync(
            lb.slots, lb.pools, lb.pool_state, lb.row,
            on_removed=lambda name, gone: lb.clients.forget(name, [t.url for t in gone]),
        )  # fmt: skip
        lb.target_sync.apply()  # serve from the first request on what the table holds
        lb.retry_budget = RetryBudget()

    @app.after_server_start
    async def follow_slots(app: Sanic) -> None:
        lb = app.ctx.lb
        lb.target_sync_task = asyncio.create_task(lb.target_sync.run())

    @app.after_server_start
    async def start_health_checks(app: Sanic) -> None:
        lb = app.ctx.lb
        if any(u.active for u in lb.settings.upstreams):
            checker = HealthChecker(
                list(lb.pools.values()), lb.pool_state, lambda name: lb.clients[name],
                process_alive,
            )  # fmt: skip
            lb.health_task = asyncio.create_task(checker.run())

    @app.before_server_stop
    async def stop_health_checks(app: Sanic) -> None:
        if app.ctx.lb.health_task is not None:
            app.ctx.lb.health_task.cancel()
        if app.ctx.lb.target_sync_task is not None:
            app.ctx.lb.target_sync_task.cancel()
