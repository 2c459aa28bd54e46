"""The host's admission chores, done by one worker at a time (a lease in the shared block,
like the active health checks and the cluster publisher; another worker takes over within a
second if it dies):

- ending limited episodes: a key none of whose requests was limited for
  :func:`quiet_s` seconds is no longer limited, and that is logged once (the start was
  logged by the worker that limited it);
- with a cluster, sharing admissions with the other replicas (``sync.ClusterSync``).
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

from service.admission.episodes import describe_key
from service.admission.policy import Limit
from service.admission.table import RateTable
from service.sharedmem import Lease, SharedLock

if TYPE_CHECKING:  # only with a cluster
    from service.admission.sync import ClusterSync

log = logging.getLogger("service.admission")

SWEEP_EVERY_S = 0.5
COUNT_EVERY_S = 5.0  # how often the keys in use are counted (a scan of the whole table)
QUIET_S = 2.0


def quiet_s(limit: Limit) -> float:
    """How long a key must go without a limited request to stop being 'limited': 2 s, or
    one interval of its limit if that is longer (at 10/min, requests 6 s apart are fine)."""
    return max(QUIET_S, limit.interval)


class Housekeeping:
    def __init__(
        self,
        lease: Lease,
        lock: SharedLock,
        table: RateTable,
        limits: Sequence[Limit],
        alive: Callable[[int], bool],
        sync: ClusterSync | None = None,
        interval: float = SWEEP_EVERY_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._lease = lease
        self._lock = lock
        self._table = table
        self._limits = tuple(limits)
        self._quiet = [quiet_s(limit) for limit in limits]
        self._alive = alive
        self.sync = sync
        self._interval = interval
        self._clock = clock
        self._pid = os.getpid()
        self._swept_at = float("-inf")
        self._counted_at = float("-inf")

    def holds_lease(self) -> bool:
        return self._lease.hold(self._pid, term_s=max(1.0, 4 * self._interval), alive=self._alive)

    async def run(self) -> None:
        while True:
            if self.holds_lease():
                await self.once()
            await asyncio.sleep(self._interval)

    async def once(self) -> None:
        now = self._clock()
        if now - self._swept_at >= SWEEP_EVERY_S:
            self._swept_at = now
            self.sweep(now)
        if now - self._counted_at >= COUNT_EVERY_S:
            self._counted_at = now
            self._table.count_in_use(now)  # for /stats, which should not scan it each time
        if self.sync is not None:
            await self.sync.once()

    def sweep(self, now: float) -> None:
        if not self._lock.acquire():
            return
        try:
            ended = self._table.end_quiet_episodes(now, self._quiet)
        finally:
            self._lock.release()
        for at, episode in ended:
            if episode.limit >= len(self._limits):
                continue
            limit = self._limits[episode.limit]
            label = self._table.label(limit.fixed_label, at)
            log.warning(
                "limit %s%s: %s no longer limited after %.1f s (%d request(s) %s)",
                limit.name, " (dry run)" if limit.dry_run else "", describe_key(limit, label),
                now - episode.since, episode.limited,
                "would have been limited" if limit.dry_run else "limited",
            )  # fmt: skip
