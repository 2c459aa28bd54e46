"""Active health checks: ``GET <target><path>`` every ``interval``, once per host.

Every worker runs the loop, but only the worker holding the checker lease in the shared
block sends checks; the verdict goes into the shared block, so all workers agree. If the
holder dies, its lease lapses and another worker takes over within one interval. A target
goes down after ``unhealthy_threshold`` failed checks in a row and comes back after
``healthy_threshold`` good ones; checks never block requests (they are their own tasks).
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Callable

import httpx

from service.pools.pool import Pool, Target
from service.pools.state import (
    ACTIVE_DOWN,
    CHECKED_AT,
    EJECTED_UNTIL,
    EJECTIONS,
    FAIL_STREAK,
    OK_STREAK,
    RETURNED_AT,
    PoolState,
)
from service.settings import ActiveHealth

log = logging.getLogger("service.health")


class HealthChecker:
    def __init__(
        self,
        pools: list[Pool],
        state: PoolState,
        client_for: Callable[[str], httpx.AsyncClient],
        alive: Callable[[int], bool],
    ) -> None:
        self._pools = [p for p in pools if p.upstream.active is not None]
        self._state = state
        self._client_for = client_for
        self._alive = alive
        self._pid = os.getpid()

    async def run(self) -> None:
        """Forever: one loop per pool with active checks."""
        await asyncio.gather(*(self._loop(pool) for pool in self._pools))

    async def _loop(self, pool: Pool) -> None:
        active = pool.upstream.active
        assert active is not None
        while True:
            if self._state.lease(self._pid, term_s=2 * active.interval + 1, alive=self._alive):
                await asyncio.gather(*(self.check(pool, t, active) for t in pool.targets))
            await asyncio.sleep(active.interval)

    async def check(self, pool: Pool, target: Target, active: ActiveHealth) -> None:
        try:
            client = self._client_for(pool.name)
            response = await client.get(target.url + active.path, timeout=active.timeout)
            healthy = 200 <= response.status_code < 300
        except httpx.HTTPError:
            healthy = False
        self._record(pool, target, active, healthy)

    def _record(self, pool: Pool, target: Target, active: ActiveHealth, healthy: bool) -> None:
        if target not in pool.targets:
            return  # it left the pool while being checked: its slot may be another's soon
        state, index = self._state, target.index
        state.set(index, CHECKED_AT, state.clock())
        target.contacted(healthy)
        streak_field, reset_field = (
            (OK_STREAK, FAIL_STREAK) if healthy else (FAIL_STREAK, OK_STREAK)
        )
        state.set(index, reset_field, 0)
        streak = state.get(index, streak_field) + 1
        state.set(index, streak_field, streak)
        down = bool(state.get(index, ACTIVE_DOWN))
        if healthy and streak >= active.healthy_threshold and target.ejected():
            # Envoy's successful_active_health_check_uneject_host: a target that passes its
            # checks again need not sit out a (possibly long) passive ejection.
            state.set(index, EJECTED_UNTIL, 0)
            state.set(index, EJECTIONS, 0)
            state.set(index, RETURNED_AT, state.clock())
            log.warning("upstream %s target %s un-ejected (health check)", pool.name, target.url)
        if down and healthy and streak >= active.healthy_threshold:
            state.set(index, ACTIVE_DOWN, 0)
            state.set(index, RETURNED_AT, state.clock())
            log.warning("upstream %s target %s is up (health check)", pool.name, target.url)
        elif not down and not healthy and streak >= active.unhealthy_threshold:
            state.set(index, ACTIVE_DOWN, 1)
            log.warning("upstream %s target %s is down (health check)", pool.name, target.url)
