"""Upstream pools: choosing a target (``balancing``), an attempt's life and passive health
(``pool``), the retry rule, backoff and budget (``retries``), slow start (``slowstart``),
consistent hashing and sticky cookies (``hashring``, ``affinity``), the state every worker shares
(``state``), the table of target slots that lets targets come and go while serving
(``slots``, kept in step by ``sync``) and active health checks (``health_checks``).

``startup(app)`` builds this worker's pools over its row of the shared block and the slot
table, keeps them in step with it, and runs the active health checks (one worker of the host
at a time sends them; see ``health_checks``).
"""

from __future__ import annotations

from sanic import Sanic

from service.pools import exposition
from service.pools.build import Pools, build_pools, settled
from service.pools.affinity import Affinity, HashOn
from service.pools.pool import Attempt, Pool, Target
from service.pools.retries import RetryBudget, RetryRule
from service.pools.slots import ORDER_STEP, Member, SlotsExhausted, SlotTable, capacity_for
from service.pools.state import PoolLayout, PoolState
from service.pools.sync import TargetSync
from service.settings import Settings
from service.sharedmem import Plan

__all__ = [
    "ORDER_STEP",
    "Affinity",
    "Attempt",
    "HashOn",
    "Member",
    "Pool",
    "PoolLayout",
    "PoolState",
    "Pools",
    "RetryBudget",
    "RetryRule",
    "SlotTable",
    "SlotsExhausted",
    "Target",
    "TargetSync",
    "build_pools",
    "reserve",
    "settled",
    "startup",
]


def reserve(plan: Plan, settings: Settings) -> PoolLayout:
    """The pools' space in the shared block: a slot for every configured target, for as many
    addresses as each ``resolve`` entry may bring, and spares (``slots.capacity_for``)."""
    return PoolLayout(plan, capacity_for(settings), pools=len(settings.upstreams))


def startup(app: Sanic) -> None:
    app.ctx.lb.show.metric_families(exposition.families, order=exposition.ORDER)

    @app.before_server_start
    async def open_pools(app: Sanic) -> None:
        lb = app.ctx.lb
        lb.pool_state = PoolState(lb.row, lb.pool_layout)
        lb.slots = SlotTable(lb.row.block, lb.pool_layout.slots)
        lb.slots.seed(lb.settings)
        lb.pools = build_pools(
            lb.settings, state=lb.pool_state, table=lb.slots, row=lb.row, clients=lb.clients
        )

    @app.after_server_start
    async def follow_slots_and_check(app: Sanic) -> None:
        app.ctx.lb.pools.start()  # the ones a reload built before serving, if it did

    @app.before_server_stop
    async def stop_following(app: Sanic) -> None:
        app.ctx.lb.pools.cancel()
