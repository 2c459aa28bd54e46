"""Upstream pools: choosing a target (``balancing``), an attempt's life and passive health
(``pool``), the retry rule and budget (``retries``), the state every worker shares
(``state``) and active health checks (``health_checks``).

``startup(app)`` builds this worker's pools over its row of the shared block, and runs the
active health checks (one worker of the host at a time sends them; see ``health_checks``).
"""

from __future__ import annotations

import asyncio

from sanic import Sanic

from service.pools.health_checks import HealthChecker
from service.pools.pool import Attempt, Pool, Target
from service.pools.retries import RetryBudget, RetryRule
from service.pools.state import PoolLayout, PoolState
from service.settings import Settings
from service.sharedmem import Plan
from service.sharedmem.block import process_alive

__all__ = [
    "Attempt",
    "Pool",
    "PoolLayout",
    "PoolState",
    "RetryBudget",
    "RetryRule",
    "Target",
    "build_pools",
    "reserve",
    "startup",
]


def reserve(plan: Plan, settings: Settings) -> PoolLayout:
    """The pools' space in the shared block: every target of every upstream."""
    return PoolLayout(plan, sum(len(u.targets) for u in settings.upstreams))


def build_pools(settings: Settings, state: PoolState) -> dict[str, Pool]:
    pools, first = {}, 0
    for upstream in settings.upstreams:
        pools[upstream.name] = Pool(upstream, first, state)
        first += len(upstream.targets)
    return pools


def startup(app: Sanic) -> None:
    @app.before_server_start
    async def open_pools(app: Sanic) -> None:
        lb = app.ctx.lb
        lb.pool_state = PoolState(lb.row, lb.pool_layout)
        lb.pools = build_pools(lb.settings, lb.pool_state)
        lb.retry_budget = RetryBudget()

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
