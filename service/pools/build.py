"""A worker's pools, built one way at start-up and at a reload: :func:`build_pools`.

The result, :class:`Pools`, is what requests read (``pools[name]``, a mapping) and what runs
behind them: the sync that keeps the pools in step with the slot table (``sync``) and the
active health checks (``health_checks``), started with :meth:`Pools.start` once the worker
serves and cancelled with :meth:`Pools.cancel` when a reload replaces it or the worker stops.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from typing import Protocol

import httpx

from service.background import Background
from service.pools.health_checks import HealthChecker
from service.pools.pool import Pool, Target
from service.pools.slots import Member, SlotTable
from service.pools.state import PoolState
from service.pools.sync import INTERVAL_S, TargetSync
from service.settings import Settings
from service.sharedmem import WorkerRow
from service.sharedmem.block import process_alive

Keep = Callable[[str, Member], bool]


class Clients(Protocol):
    """What the pools need of the upstream clients (``service.transport.UpstreamClients``)."""

    def __getitem__(self, name: str) -> httpx.AsyncClient: ...

    def __contains__(self, name: object) -> bool: ...

    def forget(self, name: str, urls: list[str]) -> None: ...


class Pools(Mapping[str, Pool]):
    """Pool name -> :class:`Pool`, with the work that keeps them current."""

    def __init__(
        self,
        by_name: dict[str, Pool],
        sync: TargetSync,
        checked: list[tuple[Pool, object]],
        health_checks: Background | None,
    ) -> None:
        self._by_name = by_name
        self.sync = sync
        self._following = Background.every(INTERVAL_S, sync.turn)
        self.checked = checked  # what the health checks run on: (pool, its client)
        self.health_checks = health_checks

    def __getitem__(self, name: str) -> Pool:
        return self._by_name[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._by_name)

    def __len__(self) -> int:
        return len(self._by_name)

    def start(self) -> None:
        self._following.start()
        if self.health_checks is not None:
            self.health_checks.start()

    def cancel(self) -> None:
        self._following.cancel()
        if self.health_checks is not None:
            self.health_checks.cancel()


def build_pools(
    settings: Settings,
    *,
    state: PoolState,
    table: SlotTable,
    row: WorkerRow,
    clients: Clients,
    previous: Pools | None = None,
    keep: Keep | None = None,
) -> Pools:
    """The pools of ``settings`` over the slot table, in step with it from the first request.

    ``previous``: the pools this worker ran until now (a reload). A pool whose settings are
    the same stays the same object; a changed one is a new object carrying the ``Target``
    objects of the targets that stay (this worker's requests in flight and recent failures
    are on them; their shared state is their slot's). The health checks go on undisturbed
    when what they check is the same (restarted for nothing, they would check at once).
    ``keep(pool, member)``: whether the configuration names a member of the table (see
    ``TargetSync``); None: every member.
    """
    if previous is None:
        by_name = _numbered(settings, state)
    else:
        by_name = _carried(settings, state, table, clients, previous, keep)

    def removed(name: str, gone: list[Target]) -> None:
        clients.forget(name, [t.url for t in gone])

    sync = TargetSync(table, by_name, state, row, on_removed=removed, keep=keep)
    sync.apply()  # serve from the first request on what the table holds
    checked = [(p, clients[n]) for n, p in by_name.items() if p.upstream.active and n in clients]
    checks = None
    if previous is not None and previous.checked == checked:
        checks, previous.health_checks = previous.health_checks, None
    elif any(u.active for u in settings.upstreams):
        checker = HealthChecker(list(by_name.values()), state, clients.__getitem__, process_alive)
        checks = Background(checker.run)
    return Pools(by_name, sync, checked, checks)


def _numbered(settings: Settings, state: PoolState) -> dict[str, Pool]:
    """Pools of the configured targets, indexed as ``SlotTable.seed`` places them; the
    table then has the last word (``TargetSync.apply``)."""
    pools, first = {}, 0
    for upstream in settings.upstreams:
        pools[upstream.name] = Pool(upstream, first, state)
        first += len(upstream.static_targets)
    return pools


def _carried(
    settings: Settings,
    state: PoolState,
    table: SlotTable,
    clients: Clients,
    previous: Pools,
    keep: Keep | None,
) -> dict[str, Pool]:
    snapshot = settled(table)
    pools = {}
    for upstream in settings.upstreams:
        kept = previous.get(upstream.name)
        if kept is not None and kept.upstream == upstream:
            pools[upstream.name] = kept
            continue
        pool = Pool(upstream, 0, state)
        # The targets the constructor made (numbered from 0) are placeholders: the previous
        # pool's objects are what replace_targets keeps, by slot, for the members that stay.
        pool.targets = kept.targets if kept is not None else ()
        members = snapshot.get(upstream.name, ())
        gone = pool.replace_targets(
            tuple(m for m in members if keep is None or keep(upstream.name, m))
        )
        if gone:
            clients.forget(upstream.name, [t.url for t in gone])
        pools[upstream.name] = pool
    return pools


def settled(table: SlotTable, tries: int = 100) -> dict[str, tuple[Member, ...]]:
    """The table's members as of one generation (a writer in another process is done in
    microseconds; one that stays at it is reported rather than waited for for ever)."""
    for _ in range(tries):
        snapshot = table.snapshot()
        if snapshot is not None:
            return snapshot[1]
    raise TimeoutError("the target slot table was being written throughout the read")
