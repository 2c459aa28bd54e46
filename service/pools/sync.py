"""Keeping a worker's pools in step with the slot table (``service.pools.slots``).

Every :data:`INTERVAL_S` each worker compares the table's generation with the one its pools
are built on (one read of the shared block); when it moved, it rebuilds the pools whose
members changed, tells ``on_removed`` which targets left (their idle upstream connections are
closed), and records the generation it now uses. It also frees drained slots (any worker may:
the table's lock makes it one at a time). Nothing here runs on a request's path: a request
only reads its pool's ``targets`` tuple, replaced whole.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping

from service.pools.pool import Pool, Target
from service.pools.slots import Member, SlotTable
from service.pools.state import PoolState
from service.sharedmem import WorkerRow

INTERVAL_S = 0.1  # a change reaches every worker within this (plus a loop turn)

log = logging.getLogger("service.pool")


class TargetSync:
    def __init__(
        self,
        table: SlotTable,
        pools: Mapping[str, Pool],
        state: PoolState,
        row: WorkerRow,
        on_removed: Callable[[str, list[Target]], None] = lambda pool, targets: None,
        keep: Callable[[str, Member], bool] | None = None,
    ) -> None:
        """``keep(pool, member)``: whether the configuration this worker runs names the
        member (``service.reload``: a target a new file adds is in the table a moment before
        every worker runs that file, and one it drops stays a moment after); None: all."""
        self._table, self._row = table, row  # what is followed, and where it is said so
        self._pools, self._state = pools, state
        self._keep, self._on_removed = keep, on_removed
        self.generation = -1  # the table generation this worker's pools are built on

    def apply(self) -> bool:
        """Rebuild from the table if it changed; True if this worker's view moved."""
        if self._table.generation == self.generation:
            return False
        snapshot = self._table.snapshot()
        if snapshot is None:
            return False  # a writer is at work: the next turn will see its result
        generation, members = snapshot
        for name, pool in self._pools.items():
            wanted = members.get(name, ())
            if self._keep is not None:
                wanted = tuple(m for m in wanted if self._keep(name, m))
            if _same(pool.targets, wanted):
                continue
            removed = pool.replace_targets(wanted)
            if removed:
                self._on_removed(name, removed)
        self._table.applied(self._row, generation)
        self.generation = generation
        return True

    def reclaim(self) -> None:
        state = self._state
        for pool, url in self._table.reclaim(state.lifetime, state.outstanding_in, state.clear):
            log.info("upstream %s target %s drained; its slot is free", pool, url)

    def turn(self) -> None:
        """One look at the table (every :data:`INTERVAL_S`, ``service.pools.build``)."""
        try:
            self.apply()
            self.reclaim()
        except TimeoutError as exc:  # the table's lock: try again next turn
            log.warning("target slots: %s", exc)


def _same(targets: tuple[Target, ...], members: tuple[Member, ...]) -> bool:
    return len(targets) == len(members) and all(
        t.index == m.index
        and t.url == m.url
        and t.weight == m.weight
        and t.origin == m.origin
        and t.joined == m.joined
        for t, m in zip(targets, members, strict=True)
    )
