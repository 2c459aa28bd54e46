"""One publisher per host: every ``publish_interval``, this host's cumulative figures to Redis.

Every worker runs the loop, but only the worker holding the publisher lease in the shared
block publishes (the same lease mechanism as the active health checks), so Redis sees one
writer per host whatever the worker count, and the rate of writes does not depend on the
request rate. Requests never wait on it: recording stays in shared memory, and this is a
task of its own with a deadline on every round trip. A failure is logged once, when the
state changes, and so is the recovery.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from typing import Any
from collections.abc import Callable

from service.cluster.redis_store import RedisStore
from service.cluster.replica import document
from service.metrics import HostFigures
from service.metrics.history import HISTORY_RESOLUTION_S
from service.redisconn import RedisUnavailable
from service.settings import ClusterSettings
from service.sharedmem import Lease

log = logging.getLogger("service.cluster")

REAP_EVERY_S = 5.0  # how often (at most) the lease holder folds silent replicas in


class Publisher:
    def __init__(
        self,
        store: RedisStore,
        settings: ClusterSettings,
        lease: Lease,
        replica: str,
        started_wall: float,
        figures: Callable[[], HostFigures],
        alive: Callable[[int], bool],
        history: Callable[[], list[Any]] | None = None,
    ) -> None:
        """``history``: this host's 15-minute history in wire form, published once per
        history bucket (5 s) rather than every time: it changes no faster."""
        self._store = store
        self._settings = settings
        self._lease = lease
        self._replica = replica
        self._started_wall = started_wall
        self._figures = figures
        self._alive = alive
        self._history = history
        self._history_epoch = -1  # the history bucket last published
        self._pid = os.getpid()
        self._failing: str | None = None
        self._reaped_at = float("-inf")
        self._reap_every = min(REAP_EVERY_S, settings.retention / 2)
        self.publications = 0  # successful ones, by this worker

    def holds_lease(self) -> bool:
        term = max(1.0, 4 * self._settings.publish_interval)
        return self._lease.hold(self._pid, term_s=term, alive=self._alive)

    async def run(self) -> None:
        """Forever: publish while this worker holds the lease."""
        while True:
            if self.holds_lease():
                await self.publish_once()
            await asyncio.sleep(self._settings.publish_interval)

    async def publish_once(self) -> bool:
        """One publication (and, now and then, one reaping); True if Redis took it."""
        try:
            async with self._store.deadline():
                doc = document(self._replica, self._started_wall, self._figures())
                epoch = int(time.time() / HISTORY_RESOLUTION_S)
                due = self._history is not None and epoch != self._history_epoch
                history = self._history() if due and self._history is not None else None
                await self._store.publish(self._replica, doc, history)
                if due:
                    self._history_epoch = epoch
            if time.monotonic() - self._reaped_at >= self._reap_every:
                self._reaped_at = time.monotonic()
                async with self._store.deadline():
                    await self._store.reap(self._replica, time.time(), self._settings.retention)
        except RedisUnavailable as exc:
            self._failed(exc.reason)
            return False
        self.publications += 1
        if self._failing is not None:
            log.warning("cluster: Redis is back (%s); publishing resumed", self._store.replicas_key)
            self._failing = None
        return True

    def _failed(self, reason: str) -> None:
        if self._failing is None:
            log.warning(
                "cluster: cannot publish to Redis (%s); /stats shows this host's figures, "
                "degraded, until it is back",
                reason,
            )
        self._failing = reason
