"""The table of target slots (service/pools/slots.py) and pools kept in step with it, on a
real shared block in this process (no network): two "workers" are two rows of one block."""

from __future__ import annotations

import os

import pytest

from service.errors import NoTargets
from service.pools import Pool, PoolLayout, PoolState, SlotsExhausted, SlotTable, TargetSync
from service.pools.slots import SPARE_SLOTS, capacity_for
from service.pools.state import EJECTED_UNTIL
from service.settings import ResolverSettings, Settings, TargetSpec, Upstream
from service.sharedmem import Plan, SharedBlock

POOL = "api"


class Clock:
    now = 100.0

    def __call__(self) -> float:
        return self.now


def upstream(*urls: str) -> Upstream:
    return Upstream(name=POOL, url_env="API_URL", targets=tuple(TargetSpec(url=u) for u in urls))


class Host:
    """One host's block with two workers (this process's row and its parent's)."""

    def __init__(self, settings: Settings, slots: int | None = None) -> None:
        plan = Plan(rows=2)
        self.layout = PoolLayout(plan, slots or capacity_for(settings), pools=1)
        self.block = SharedBlock(plan.allocate(), plan)
        self.clock = Clock()
        self.rows = [self.block.claim(os.getpid()), self.block.claim(os.getppid())]
        self.states = [PoolState(row, self.layout, clock=self.clock) for row in self.rows]
        self.table = SlotTable(self.block, self.layout.slots)
        self.table.seed(settings)
        self.pools = [Pool(settings.upstreams[0], 0, s) for s in self.states]
        self.syncs = [
            TargetSync(self.table, {POOL: p}, s, r, on_removed=self._removed)
            for p, s, r in zip(self.pools, self.states, self.rows)
        ]
        self.removed: list[str] = []
        for sync in self.syncs:
            sync.apply()

    def _removed(self, pool: str, targets: list) -> None:
        self.removed += [t.url for t in targets]

    def urls(self, worker: int = 0) -> list[str]:
        return [t.url for t in self.pools[worker].targets]


def settings_of(*urls: str) -> Settings:
    return Settings(upstreams=(upstream(*urls),))


def test_configured_targets_keep_their_indices_and_the_pool_its_order() -> None:
    host = Host(settings_of("http://a:1", "http://b:1", "http://c:1"))
    assert [t.index for t in host.pools[0].targets] == [0, 1, 2]
    assert host.urls() == ["http://a:1", "http://b:1", "http://c:1"]
    assert host.table.seed(settings_of("http://x:1")) is False  # once per block


def test_capacity_counts_resolve_entries_at_max_targets_each() -> None:
    settings = Settings(
        upstreams=(
            Upstream(
                name=POOL,
                url_env="API_URL",
                targets=(TargetSpec(url="http://a:1"), TargetSpec(url="http://s:1", resolve=True)),
            ),
        ),
        resolver=ResolverSettings(max_targets=4),
    )
    assert capacity_for(settings) == 1 + 4 + SPARE_SLOTS


def test_a_target_added_reaches_every_worker_on_its_next_turn() -> None:
    host = Host(settings_of("http://a:1"))
    with host.table.change() as change:
        slot = change.acquire(POOL, "http://10.0.0.2:80", weight=3, origin="svc", order=5)
    assert host.urls(1) == ["http://a:1"]  # not before the worker's turn
    assert all(sync.apply() for sync in host.syncs)
    for pool in host.pools:
        (_, added) = pool.targets
        assert (added.index, added.url, added.weight, added.origin) == (
            slot, "http://10.0.0.2:80", 3, "svc",
        )  # fmt: skip
        assert added.authority == b"svc"  # a Host of the proxy's own names the service
    assert not host.syncs[0].apply()  # nothing new: nothing rebuilt


def test_a_target_that_stays_keeps_its_object_and_its_shared_state() -> None:
    host = Host(settings_of("http://a:1", "http://b:1"))
    before = host.pools[0].targets[0]
    host.states[0].set(before.index, EJECTED_UNTIL, host.clock.now + 60)
    with host.table.change() as change:
        change.release(POOL, "http://b:1")
        change.acquire(POOL, "http://a:1", weight=1, order=0.0)  # unchanged: kept as is
        change.acquire(POOL, "http://c:1", order=9)
    host.syncs[0].apply()
    assert host.urls() == ["http://a:1", "http://c:1"]
    assert host.pools[0].targets[0] is before and before.ejected()
    assert host.removed == ["http://b:1"]


def test_a_removed_slot_drains_then_folds_its_counts_into_the_pool() -> None:
    host = Host(settings_of("http://a:1", "http://b:1"))
    pool, state = host.pools[0], host.states[0]
    leaving = pool.targets[1]
    for _ in range(3):
        pool.started(leaving)
        pool.finished(leaving, 0.01, failed=False)
    pool.started(leaving)  # one request still in flight
    with host.table.change() as change:
        change.release(POOL, "http://b:1")
    host.syncs[0].reclaim()
    assert host.table.draining() == 1  # no worker has applied the change yet
    for sync in host.syncs:
        sync.apply()
    assert all(t is not leaving for t in pool.targets)
    host.syncs[0].reclaim()
    assert host.table.draining() == 1  # the request in flight still holds it
    pool.finished(leaving, 0.01, failed=True)
    host.syncs[1].reclaim()
    assert host.table.draining() == 0
    retired = host.table.retired(POOL)
    assert (retired.targets, retired.requests, retired.failures) == (1, 4, 1)
    assert state.figures(leaving.index).requests == 0  # the slot is clean for its next owner


def test_a_key_acquired_again_while_draining_is_revived_with_its_state() -> None:
    host = Host(settings_of("http://a:1", "http://b:1"))
    target = host.pools[0].targets[1]
    host.pools[0].started(target)
    host.pools[0].finished(target, 0.01, failed=False)
    with host.table.change() as change:
        change.release(POOL, "http://b:1")
    with host.table.change() as change:
        assert change.acquire(POOL, "http://b:1") == target.index
    assert host.table.draining() == 0
    host.syncs[0].apply()
    assert host.states[0].figures(target.index).requests == 1


def test_an_empty_pool_answers_no_targets_and_a_full_table_refuses() -> None:
    host = Host(settings_of("http://a:1"), slots=2)
    with host.table.change() as change:
        change.release(POOL, "http://a:1")
    host.syncs[0].apply()
    with pytest.raises(NoTargets):
        host.pools[0].choose()
    with pytest.raises(NoTargets):
        host.pools[0].peek()
    assert host.pools[0].describe()["panic"] is False
    assert not host.pools[0].has_live_target()
    with host.table.change() as change, pytest.raises(SlotsExhausted):
        change.acquire(POOL, "http://x:1")
        change.acquire(POOL, "http://y:1")  # a is still draining: no third slot


def test_generation_moves_only_when_something_changed() -> None:
    host = Host(settings_of("http://a:1"))
    before = host.table.generation
    with host.table.change() as change:
        change.acquire(POOL, "http://a:1", order=0.0)
        change.release(POOL, "http://nothing:1")
    assert host.table.generation == before
    with host.table.change() as change:
        change.acquire(POOL, "http://a:1", weight=2, order=0.0)
    assert host.table.generation == before + 2
    host.syncs[0].apply()
    assert host.pools[0].targets[0].weight == 2
