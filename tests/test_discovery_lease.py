"""A DNS answer that arrives after the discovery lease moved is not applied: two "workers"
(two refreshers with their own pids) share one real block, its slot table and the lease; a
resolver stub answers when the test says so (no network, no dnsmasq)."""

from __future__ import annotations

import asyncio
from ipaddress import IPv4Address

from service.discovery.entries import entries_of
from service.discovery.refresher import LEASE_TERM_S, Refresher
from service.discovery.resolver import OK, Lookup
from service.discovery.state import DiscoveryLayout, DiscoveryState
from service.pools import PoolLayout, SlotTable
from service.pools.slots import capacity_for
from service.settings import ResolverSettings, Settings, TargetSpec, Upstream
from service.sharedmem import Plan, SharedBlock

POOL = "api"
OLD, NEW = 1001, 1002  # the two workers' pids
SETTINGS = Settings(
    upstreams=(
        Upstream(
            name=POOL, url_env="API_URL",
            targets=(TargetSpec(url="http://svc.test:8080", resolve=True),),
        ),
    ),
    resolver=ResolverSettings(max_targets=4),
)  # fmt: skip


class Clock:
    now = 100.0

    def __call__(self) -> float:
        return self.now


class SlowResolver:
    """Answers ``address`` once ``release`` is set."""

    def __init__(self, address: str) -> None:
        self.address = IPv4Address(address)
        self.release = asyncio.Event()
        self.asked = asyncio.Event()

    async def lookup(self, host: str) -> Lookup:
        self.asked.set()
        await self.release.wait()
        return Lookup(OK, (self.address,), ttl=30.0)


class Host:
    def __init__(self) -> None:
        plan = Plan(rows=2)
        self.pools = PoolLayout(plan, capacity_for(SETTINGS), pools=1)
        layout = DiscoveryLayout(plan, entries=1)
        self.block = SharedBlock(plan.allocate(), plan)
        self.table = SlotTable(self.block, self.pools.slots)
        self.table.seed(SETTINGS)
        self.clock = Clock()
        self.state = DiscoveryState(self.block, layout, clock=self.clock)
        (self.entry,) = entries_of(SETTINGS)

    def worker(self, pid: int, resolver: SlowResolver) -> Refresher:
        refresher = Refresher(
            [self.entry], resolver, self.state, self.table, SETTINGS.resolver,  # type: ignore[arg-type]
            alive=lambda _: True,
        )  # fmt: skip
        refresher._pid = pid  # two workers in one process
        return refresher

    def take_lease(self, pid: int) -> None:
        self.clock.now += LEASE_TERM_S + 0.1  # the holder stalled past its term
        assert self.state.hold_lease(pid, LEASE_TERM_S, lambda _: True)

    def addresses(self) -> list[str]:
        return sorted(m.url for m in self.table.members(POOL))


async def late_answer(host: Host, *, back_to_old: bool) -> list[str]:
    """The old holder asks (slowly); the lease moves and the new holder writes its answer;
    (the lease comes back to the old holder;) then the old holder's answer arrives."""
    slow, fast = SlowResolver("10.0.0.1"), SlowResolver("10.0.0.2")
    old, new = host.worker(OLD, slow), host.worker(NEW, fast)
    assert host.state.hold_lease(OLD, LEASE_TERM_S, lambda _: True)
    asking = asyncio.create_task(old.refresh(host.entry))
    await slow.asked.wait()
    host.take_lease(NEW)
    fast.release.set()
    await new.refresh(host.entry)
    assert host.addresses() == ["http://10.0.0.2:8080"]
    if back_to_old:
        host.take_lease(OLD)
    slow.release.set()
    await asking
    return host.addresses()


def test_an_answer_arriving_after_the_lease_moved_is_not_applied() -> None:
    assert asyncio.run(late_answer(Host(), back_to_old=False)) == ["http://10.0.0.2:8080"]


def test_an_answer_arriving_after_the_entry_was_written_again_is_not_applied() -> None:
    """The lease is back with the worker that asked, but the record moved on meanwhile."""
    assert asyncio.run(late_answer(Host(), back_to_old=True)) == ["http://10.0.0.2:8080"]


def test_an_answer_is_applied_when_the_holder_still_holds_the_lease() -> None:
    async def scenario() -> list[str]:
        host = Host()
        slow = SlowResolver("10.0.0.3")
        worker = host.worker(OLD, slow)
        assert host.state.hold_lease(OLD, LEASE_TERM_S, lambda _: True)
        asking = asyncio.create_task(worker.refresh(host.entry))
        await slow.asked.wait()
        host.clock.now += LEASE_TERM_S / 2
        assert host.state.hold_lease(OLD, LEASE_TERM_S, lambda _: True)  # renewed
        slow.release.set()
        await asking
        return host.addresses()

    assert asyncio.run(scenario()) == ["http://10.0.0.3:8080"]
