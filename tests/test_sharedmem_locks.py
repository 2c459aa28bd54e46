"""The shared block's locks (``service.sharedmem``) against holders that die or stall, with
real processes: for each lock (row claim, slot table, configuration region, admission), a
process SIGKILLed while holding it; the next writer and a replacement worker proceed at
once, no event loop blocks past the lock's bound, and what readers see is never half a
write. A holder that is alive but stopped makes a writer give up within its bound. Then the
real service (``--workers 2``) whose locks are all held by a process that dies, while a
worker is killed: the worker is replaced and the service goes on serving and reloading.
And admission's key table, placed by a secret the host draws at start-up."""

from __future__ import annotations

import asyncio
import mmap
import multiprocessing
import os
import re
import signal
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from service.admission.layout import LOCK_WAIT_S, NEIGHBOURHOOD, TAT, AdmissionLayout
from service.admission.policy import key_hash
from service.admission.table import RateTable
from service.factory import create_app
from service.pools.slots import SlotLayout, SlotTable
from service.reload.region import ConfigLayout, ConfigRegion, RegionBusy
from service.settings import load_settings
from service.sharedmem import LockTimeout, Plan, SharedBlock, SharedLock
from service.sharedmem.block import CLAIM_TIMEOUT_S
from service.sharedmem.lock import WRITER_TIMEOUT_S
from tests.support import REPO
from tests.support.processes import LoadBalancer, children, env_for
from tests.support.servers import UpstreamServer
from tests.support.shm import shm_mapped
from tests.support.waiting import wait_for

SPAWN = multiprocessing.get_context("spawn")  # as the service starts its workers
KINDS = ["row claim", "slot table", "configuration region", "admission host"]
BOUND = {
    "row claim": CLAIM_TIMEOUT_S,
    "slot table": WRITER_TIMEOUT_S,
    "configuration region": WRITER_TIMEOUT_S,
    "admission host": LOCK_WAIT_S,
}
OLD_TEXT, NEW_TEXT = "a = 1\n" * 50, "b = 2\n" * 80


class Host:
    """One host's block, laid out the same way in every process that builds it."""

    def __init__(self, raw: Any = None) -> None:
        self.plan = Plan(rows=4)
        self.slots = SlotLayout(self.plan, slots=8, pools=2)
        self.config = ConfigLayout(self.plan)
        self.admission = AdmissionLayout(
            self.plan, limits=1, pools=1, keys=64, client_slots=0, cluster=False
        )
        self.raw = raw if raw is not None else self.plan.allocate()
        self.block = SharedBlock(self.raw, self.plan)

    def table(self) -> SlotTable:
        return SlotTable(self.block, self.slots)

    def region(self) -> ConfigRegion:
        return ConfigRegion(self.block, self.config)

    def admission_lock(self) -> SharedLock:
        return self.block.lock(self.admission.lock, "admission host", LOCK_WAIT_S)

    def rates(self) -> RateTable:
        return RateTable(self.block.mem, self.block.mem.cast("B"), self.admission)


def _hold(raw: Any, kind: str, ready: Any) -> None:
    """In a child: take ``kind``'s lock, half-way through a write where there is one, say
    so, and wait to be killed (or stopped)."""
    host = Host(raw)
    if kind == "row claim":
        assert host.block.claim_lock.acquire()
    elif kind == "slot table":
        with host.table().change() as change:
            change.acquire("api", "http://half-written:80")  # generation odd from here on
            ready.set()
            time.sleep(60)
    elif kind == "configuration region":
        region = host.region()
        with region._writing():  # the sequence odd; the new text half in, its length not
            region._texts.put_raw(region._at + 100, NEW_TEXT.encode()[:100])
            ready.set()
            time.sleep(60)
    else:
        assert host.admission_lock().acquire()
    ready.set()
    time.sleep(60)


def _prepared(kind: str) -> Host:
    host = Host()
    if kind == "slot table":
        with host.table().change() as change:
            change.acquire("api", "http://10.0.0.1:80")
    elif kind == "configuration region":
        host.region().start(OLD_TEXT, "11" * 32, 0.0)
    return host


def _holder(host: Host, kind: str) -> Any:
    ready = SPAWN.Event()
    child = SPAWN.Process(target=_hold, args=(host.raw, kind, ready), daemon=True)
    child.start()
    assert ready.wait(30), "the holder never took the lock"
    return child


def _write(host: Host, kind: str) -> Any:
    """What the next writer of ``kind`` does; what it then reads."""
    if kind == "row claim":
        return host.block.claim(pid=os.getpid()).index
    if kind == "slot table":
        table = host.table()
        with table.change() as change:
            change.acquire("api", "http://10.0.0.2:80")
        generation, members = table.snapshot()  # type: ignore[misc]
        return generation, sorted(m.url for m in members["api"])
    if kind == "configuration region":
        region = host.region()
        region.publish(NEW_TEXT, "22" * 32, ())
        return region.published().text
    lock = host.admission_lock()
    assert lock.acquire(), "went on without the lock"
    try:
        rates = host.rates()
        at = rates.find(0, key_hash("api", "client"), "client", 1.0)
        host.block.mem[at + TAT] = 2.0
        return rates.key_at(at)
    finally:
        lock.release()


def _replacement(raw: Any, kind: str, results: Any) -> None:
    """In a child, as a worker replacing a dead one: start (claim a row, write as a worker
    starting does) and report how long that took and what it read."""
    host = Host(raw)
    started = time.monotonic()
    if kind == "row claim":
        value: Any = host.block.claim().index
    elif kind == "slot table":
        table = host.table()
        with table.change() as change:
            change.acquire("api", "http://10.0.0.3:80")
        value = sorted(m.url for m in table.snapshot()[1]["api"])  # type: ignore[index]
    elif kind == "configuration region":
        region = host.region()
        region.start("unused", "33" * 32, 0.0)  # published already: a no-op under the lock
        value = region.published().text
    else:
        lock = host.admission_lock()
        value = lock.acquire()
        lock.release()
    results.put((time.monotonic() - started, value))


async def _on_a_loop(call: Callable[[], Any]) -> tuple[Any, float, float]:
    """``call()`` from a coroutine, with a ticker on the same loop: its result, how long it
    took, and the longest the loop went without a tick."""
    gaps = [0.0]
    last = [time.monotonic()]

    async def tick() -> None:
        while True:
            now = time.monotonic()
            gaps.append(now - last[0])
            last[0] = now
            await asyncio.sleep(0.005)

    ticker = asyncio.create_task(tick())
    await asyncio.sleep(0.02)
    started = time.monotonic()
    try:
        result: Any = call()
    except (LockTimeout, AssertionError) as exc:  # gave up (admission: went on without it)
        result = exc
    took = time.monotonic() - started
    await asyncio.sleep(0.02)
    ticker.cancel()
    return result, took, max(gaps)


def _read_during(host: Host, kind: str) -> Any:
    """What a lock-free reader gets while the dead writer's turn is open."""
    if kind == "slot table":
        return host.table().snapshot()
    if kind == "configuration region":
        try:
            return host.region().published()
        except RegionBusy:
            return None
    return None


@pytest.mark.parametrize("kind", KINDS)
def test_a_holder_killed_holding_the_lock_keeps_no_one_out(kind: str) -> None:
    host = _prepared(kind)
    holder = _holder(host, kind)
    os.kill(holder.pid, signal.SIGKILL)
    holder.join(10)
    # readers never see the half-written data: they are told to come back
    assert _read_during(host, kind) is None
    result, took, gap = asyncio.run(_on_a_loop(lambda: _write(host, kind)))
    assert not isinstance(result, BaseException), result
    bound = BOUND[kind]
    assert took < bound / 2, f"{kind}: the next writer waited {took:.3f} s"  # the kernel told it
    assert gap < bound + 0.1, f"{kind}: the loop stood still {gap:.3f} s"
    if kind == "slot table":
        generation, urls = result
        assert generation % 2 == 0  # the dead writer's turn was closed by this one
        assert urls == ["http://10.0.0.1:80", "http://10.0.0.2:80", "http://half-written:80"]
    elif kind == "configuration region":
        assert result == NEW_TEXT  # whole, not the dead writer's half
    elif kind == "admission host":
        assert result == "client"
    # a replacement worker (a new process) starts at once too, and reads a consistent state
    results = SPAWN.Queue()
    worker = SPAWN.Process(target=_replacement, args=(host.raw, kind, results))
    worker.start()
    elapsed, value = results.get(timeout=30)
    worker.join(10)
    assert worker.exitcode == 0
    assert elapsed < bound / 2, f"{kind}: the replacement waited {elapsed:.3f} s"
    if kind == "slot table":
        assert "http://10.0.0.3:80" in value and len(value) == 4
    elif kind == "configuration region":
        assert value == NEW_TEXT
    elif kind == "admission host":
        assert value is True


@pytest.mark.parametrize("kind", KINDS)
def test_a_stopped_holder_makes_writers_give_up_within_the_bound(kind: str) -> None:
    host = _prepared(kind)
    holder = _holder(host, kind)
    os.kill(holder.pid, signal.SIGSTOP)  # alive, holding it, doing nothing
    try:
        result, took, gap = asyncio.run(_on_a_loop(lambda: _write(host, kind)))
        bound = BOUND[kind]
        if kind == "admission host":
            assert isinstance(result, AssertionError)  # went on without it, after the bound
        else:
            assert isinstance(result, LockTimeout), result
        assert bound * 0.8 <= took < bound + 0.25, took
        assert gap < bound + 0.25, gap
    finally:
        os.kill(holder.pid, signal.SIGKILL)
        os.kill(holder.pid, signal.SIGCONT)
        holder.join(10)
    assert _write(host, kind) is not None  # and once it is dead, all is well again


def test_readers_racing_a_writer_in_another_process_see_only_whole_texts() -> None:
    host = _prepared("configuration region")
    region = host.region()
    texts = {OLD_TEXT, NEW_TEXT}
    writer = SPAWN.Process(target=_rewrite, args=(host.raw, 300))
    writer.start()
    seen = set()
    while writer.is_alive():
        try:
            seen.add(region.published().text)
        except RegionBusy:
            continue
    writer.join(10)
    assert seen and seen <= texts, seen - texts


def _rewrite(raw: Any, times: int) -> None:
    region = Host(raw).region()
    for n in range(times):
        region.publish(NEW_TEXT if n % 2 else OLD_TEXT, "44" * 32, ())


# ------------------------------------------------------------ admission's secret placement


def test_the_secret_is_drawn_per_host_and_shared_by_its_workers() -> None:
    one, other = Host(), Host()
    assert one.block.secret != other.block.secret
    fps = [key_hash("api", f"client-{n}") for n in range(64)]
    homes_one = [one.rates().home(fp) for fp in fps]
    homes_other = [other.rates().home(fp) for fp in fps]
    assert homes_one != homes_other  # two hosts place the same keys differently
    results = SPAWN.Queue()
    worker = SPAWN.Process(target=_homes, args=(one.raw, fps, results))
    worker.start()
    assert results.get(timeout=30) == homes_one  # every worker of a host alike
    worker.join(10)


def _homes(raw: Any, fps: list[int], results: Any) -> None:
    rates = Host(raw).rates()
    results.put([rates.home(fp) for fp in fps])


def test_keys_chosen_to_share_a_neighbourhood_do_not() -> None:
    """Keys a client picked so that, unsalted (``fp % buckets``, as before), every one lands
    in the same bucket: with the host's secret they spread like any keys."""
    host = Host()
    buckets = host.admission.keys - NEIGHBOURHOOD + 1
    chosen: list[str] = []
    n = 0
    while len(chosen) < 2 * NEIGHBOURHOOD:
        key = f"attacker-{n}"
        n += 1
        if key_hash("api", key) % buckets == 0:
            chosen.append(key)
    rates = host.rates()
    homes = {rates.home(key_hash("api", key)) for key in chosen}
    assert len(homes) > NEIGHBOURHOOD  # unsalted, there would be one
    overflow = sum(
        rates.find(0, key_hash("api", key), key, 0.0) == rates.fixed(0) for key in chosen
    )
    assert overflow <= 2  # unsalted, every key past the first 8 would share the overflow


# ------------------------------------------------------------------- the real service


RUNS = re.compile(r"worker (\d+) runs configuration generation (\d+) ")


def _block_of(pid: int, size: int) -> mmap.mmap:
    """The main process's shared block, mapped here through its open descriptor (the file
    in /dev/shm is unlinked: nothing else names it)."""
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
        except OSError:
            continue
        if target.startswith("/dev/shm/pym-"):
            with open(f"/proc/{pid}/fd/{fd}", "r+b") as file:
                if os.fstat(file.fileno()).st_size >= size:
                    return mmap.mmap(file.fileno(), 0)
    raise AssertionError("the main process maps no shared block")


def _hold_the_service_locks(pid: int, size: int, locks: dict[str, int], ready: Any) -> None:
    """A separate process that opens the service's block, takes every lock in it, and waits
    to be killed: what a worker killed while holding them leaves behind."""
    mapped = _block_of(pid, size)
    buffer = memoryview(mapped)
    held = [SharedLock(buffer, at, name=name, timeout=5.0) for name, at in locks.items()]
    for lock in held:
        assert lock.acquire(), lock.name
    ready.set()
    time.sleep(60)


@pytest.fixture
def service(
    upstreams: dict[str, UpstreamServer], tmp_path: Path
) -> Iterator[tuple[LoadBalancer, Path, dict[str, Any]]]:
    path = tmp_path / "lb.toml"
    path.write_text((REPO / "config" / "defaults.toml").read_text())
    env = env_for(
        upstreams, LB_CONFIG=str(path), LB_RATE_LIMIT="1000/s burst=1000", LB_STATS_CACHE_TTL="0"
    )
    balancer = LoadBalancer(env, workers=2)
    yield balancer, path, env
    balancer.stop()


def _get(balancer: LoadBalancer, path: str) -> httpx.Response:
    with httpx.Client(base_url=balancer.url, trust_env=False, timeout=5) as client:
        return client.get(path)


def _workers(balancer: LoadBalancer) -> list[int]:
    """The worker processes: the children that map the shared block."""
    return sorted(pid for pid in children(balancer.process.pid) if shm_mapped([pid]))


def _runs(balancer: LoadBalancer, generation: int) -> set[str]:
    found = (RUNS.search(line) for line in list(balancer.output))
    return {m.group(1) for m in found if m and m.group(2) == str(generation)}


def test_a_worker_killed_while_the_block_locks_are_held_is_replaced_and_all_goes_on(
    service: tuple[LoadBalancer, Path, dict[str, Any]],
) -> None:
    balancer, path, env = service
    plan = create_app(load_settings(env=env), name="locks-test").ctx.lb.plan
    # every lock of the block, taken below (the route counters' directory is written when
    # the reload below adds a route: its lock is taken back there too)
    assert set(plan.locks) == {*KINDS, "route counters"}
    locks = {name: region.at * 8 for name, region in plan.locks.items()}
    workers = _workers(balancer)
    assert len(workers) == 2, workers
    victim = workers[0]
    ready = multiprocessing.get_context("fork").Event()
    holder = multiprocessing.get_context("fork").Process(
        target=_hold_the_service_locks,
        args=(balancer.process.pid, plan.size * 8, locks, ready),
        daemon=True,
    )
    holder.start()
    assert ready.wait(15)
    os.kill(victim, signal.SIGKILL)  # its replacement must claim a row: that lock is held
    time.sleep(0.5)
    os.kill(holder.pid, signal.SIGKILL)  # the holder dies holding every lock
    holder.join(10)

    def replaced() -> bool:
        figures = _get(balancer, "/stats").json()["load-balancer"]
        pids = {int(pid) for pid in figures["requests_by_worker"]}
        return figures["workers"] == 2 and victim not in pids

    assert wait_for(replaced, timeout=15, step=0.2)
    for _ in range(6):
        assert _get(balancer, "/api/x").status_code == 200
    # reloading goes on: a route added by SIGHUP reaches both workers, the new one included
    text = path.read_text() + '\n[[routes]]\nprefix = "/extra"\nupstream = "blog-service"\n'
    path.write_text(text)
    os.kill(balancer.process.pid, signal.SIGHUP)
    assert wait_for(lambda: len(_runs(balancer, 2)) == 2, timeout=15)
    assert str(victim) not in _runs(balancer, 2)
    for _ in range(6):
        assert _get(balancer, "/extra/x").json()["upstream"] == "blog-service"
    assert any("died holding it; taken back" in line for line in balancer.output)
