"""Worker supervision (service/frontdoor/supervision.py) and the workers' stamps
(service/frontdoor/liveness.py), in process.

Supervision replaces methods of Sanic 25.12's ``WorkerManager`` on its one instance, the
``Manager`` that ``Sanic.serve`` calls, and reads what Sanic leaves on a worker's app; if a
Sanic upgrade changes any of them, the first tests here fail before a real process
misbehaves. The behaviour itself is tested against real processes in ``test_process.py``
(signals to the process group) and ``test_frontdoor.py`` (dead and stalled workers).
"""

from __future__ import annotations

import asyncio
import inspect
import multiprocessing
import os
import re
import signal
import sys
import threading
from collections.abc import Iterator
from multiprocessing.connection import Client
from multiprocessing.managers import BaseManager, BaseProxy, Server, State
from pathlib import Path
from typing import Any

import pytest
import sanic
import sanic.mixins.startup
import uvloop
from sanic.server import runners
from sanic.worker import serve as worker_serve
from sanic.worker.constants import ProcessState
from sanic.worker.manager import WorkerManager
from sanic.worker.process import WorkerProcess

from service.frontdoor import liveness, supervision
from service.frontdoor.sync_manager import ThreadedSyncManager
from service.sharedmem import Plan, SharedBlock

# ------------------------------------------------------------------- Sanic's internals


def test_sanic_is_the_version_supervision_was_written_for() -> None:
    assert sanic.__version__.startswith("25.12."), sanic.__version__


def test_the_worker_manager_has_what_supervision_replaces_and_reads() -> None:
    for name in ("_sync_states", "wait_for_ack", "join", "shutdown_signal", "restart", "kill"):
        assert callable(getattr(WorkerManager, name)), name
    assert isinstance(WorkerManager.THRESHOLD, int)
    assert isinstance(WorkerManager.transient_processes, property)
    assert isinstance(WorkerManager.processes, property)
    assert "_all_workers_ack" in vars(WorkerManager)
    init = inspect.getsource(WorkerManager.__init__)
    for attribute in ("self._shutting_down", "self.worker_state", "self.monitor_subscriber"):
        assert attribute in init, attribute
    # replaced on the instance, so the monitor loop must call them through self
    monitor = inspect.getsource(WorkerManager.monitor)
    assert "self.wait_for_ack()" in monitor
    assert "self._sync_states()" in monitor
    assert "self.join()" in inspect.getsource(WorkerManager.run)
    assert {"ACKED", "FAILED", "COMPLETED"} <= set(ProcessState.__members__)
    for name in ("pid", "exitcode", "is_alive", "name", "state"):
        assert hasattr(WorkerProcess, name) or name in inspect.getsource(WorkerProcess), name


def test_sanic_starts_its_sync_manager_through_the_module_global_supervision_replaces() -> None:
    assert hasattr(sanic.mixins.startup, "Manager")
    assert "Manager()" in inspect.getsource(sanic.mixins.startup.StartupMixin.serve)


def test_a_worker_is_recognised_and_stopped_as_supervision_expects() -> None:
    # a worker under a main process gets a multiplexer; single-process and test servers not
    assert "a.multiplexer = WorkerMultiplexer(" in inspect.getsource(worker_serve.worker_serve)
    # Sanic registers the loop's handlers, which stop_once_on_signal takes back
    system_signals = inspect.getsource(runners._setup_system_signals)
    assert "loop.add_signal_handler(" in system_signals
    assert "app.stop, terminate=False" in system_signals


# ------------------------------------------------------- multiprocessing's internals
# The sync manager (service/frontdoor/sync_manager.py) runs multiprocessing's manager server
# in threads of the main process; what it relies on beyond the documented API is here.


def test_python_is_a_version_the_sync_manager_was_checked_against() -> None:
    # 3.11 (the image's), 3.12 and 3.13 were read; a newer one: read managers.py again
    assert (3, 11) <= sys.version_info[:2] <= (3, 13), sys.version


def test_the_manager_server_has_what_the_threaded_sync_manager_uses() -> None:
    assert list(inspect.signature(BaseManager.get_server).parameters) == ["self"]
    assert list(inspect.signature(BaseManager.connect).parameters) == ["self"]
    assert isinstance(BaseManager.address, property)
    assert {"self._address = address", "self._state = State()"} <= _lines(BaseManager.__init__)
    assert "self._state.value = State.STARTED" in _lines(BaseManager.connect)
    assert "return Token(typeid, self._address, id), exposed" in _lines(BaseManager._create)
    init = _lines(Server.__init__)
    assert "self.address = self.listener.address" in init
    listening = [line for line in init if line.startswith("self.listener = Listener(")]
    assert listening and "authkey" not in listening[0]  # accepting does not authenticate...
    assert "connection.deliver_challenge(c, self.authkey)" in _lines(Server._handle_request)
    assert "self._handle_request(conn)" in _lines(Server.handle_request)  # ...a request does
    assert list(inspect.signature(Server.handle_request).parameters) == ["self", "conn"]
    assert "while not self.stop_event.is_set():" in _lines(Server.serve_client)
    assert {"INITIAL", "STARTED", "SHUTDOWN"} <= set(vars(State))
    # a proxy's finaliser calls the server only while its manager is STARTED
    assert "if state is None or state.value == State.STARTED:" in _lines(BaseProxy._decref)


def _lines(function: Any) -> set[str]:
    """The statements of ``function``'s source, stripped, without trailing comments."""
    return {line.split("  #")[0].strip() for line in inspect.getsource(function).splitlines()}


# --------------------------------------------------------------- the sync manager


def _report_as_a_worker(states: Any) -> None:
    """A spawned process's use of the proxy, as a Sanic worker's."""
    states["worker"] = {"pid": os.getpid(), "state": "ACKED"}


def test_the_sync_manager_serves_spawned_processes_from_threads_of_this_one() -> None:
    manager = supervision._sync_manager()
    try:
        assert isinstance(manager, ThreadedSyncManager)
        assert multiprocessing.active_children() == []  # no server process
        states = manager.dict()
        states["main"] = {"pid": os.getpid()}
        worker = multiprocessing.get_context("spawn").Process(
            target=_report_as_a_worker, args=(states,)
        )
        worker.start()
        worker.join(30)
        assert worker.exitcode == 0
        assert states["worker"] == {"pid": worker.pid, "state": "ACKED"}
        assert states["main"] == {"pid": os.getpid()}
        address = manager.address
        assert os.path.exists(address)
    finally:
        manager.shutdown()
    assert manager._state.value == State.SHUTDOWN  # proxies no longer call it
    assert not os.path.exists(address)  # the socket's file is gone: nothing can wait on it
    assert not [t for t in threading.enumerate() if t.name == "sync-manager"]
    manager.shutdown()  # a second time does nothing
    with pytest.raises(OSError):
        Client(address, authkey=bytes(multiprocessing.current_process().authkey))


def test_the_sync_manager_threads_leave_group_signals_to_the_main_thread() -> None:
    before = set(threading.enumerate())
    manager = ThreadedSyncManager()
    manager.start()
    try:
        states = manager.dict()
        states["main"] = {"pid": os.getpid()}
        serving = set(threading.enumerate()) - before
        assert len(serving) == 2  # the accepter, and the thread serving this process's proxy
        for thread in serving:
            status = Path(f"/proc/self/task/{thread.native_id}/status").read_text()
            blocked = int(re.search(r"SigBlk:\s*([0-9a-f]+)", status).group(1), 16)  # type: ignore[union-attr]
            for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
                assert blocked & (1 << (signum - 1)), (thread.name, signum)
    finally:
        manager.shutdown()


def test_prepare_main_process_has_sanic_start_that_sync_manager() -> None:
    previous = signal.getsignal(signal.SIGTERM)
    try:
        supervision.prepare_main_process()
        assert sanic.mixins.startup.Manager is supervision._sync_manager
    finally:
        signal.signal(signal.SIGTERM, previous)


# -------------------------------------------------------- a worker's stop signals


class _Worker:
    """What stop_once_on_signal uses of a worker's app."""

    def __init__(self, managed: bool) -> None:
        if managed:
            self.multiplexer = object()
        self.stops: list[bool] = []

    def stop(self, terminate: bool = True) -> None:
        self.stops.append(terminate)


@pytest.fixture
def signal_handlers() -> Iterator[None]:
    saved = {signum: signal.getsignal(signum) for signum in (signal.SIGINT, signal.SIGTERM)}
    yield
    for signum, handler in saved.items():
        signal.signal(signum, handler)


@pytest.mark.usefixtures("signal_handlers")
@pytest.mark.parametrize("managed", [True, False])
def test_the_first_stop_signal_stops_a_worker_and_later_ones_do_nothing(managed: bool) -> None:
    app = _Worker(managed)
    sanic_stops: list[int] = []

    async def serve() -> None:
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGINT, signal.SIGTERM):  # as Sanic registers them
            loop.add_signal_handler(signum, sanic_stops.append, signum)
        supervision.stop_once_on_signal(app)  # type: ignore[arg-type]
        for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGTERM):  # the group, the main
            signal.raise_signal(signum)
            await asyncio.sleep(0.05)
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(signum)

    loop = uvloop.new_event_loop()
    try:
        loop.run_until_complete(serve())
    finally:
        loop.close()
    if managed:
        assert (app.stops, sanic_stops) == ([False], [])  # one graceful stop
    else:
        assert (app.stops, sanic_stops) == ([], [15, 2, 15])  # Sanic's own handling, as is


# ------------------------------------------------------------------------- stamps


class _Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


# rows are claimed by live pids (a row whose owner is dead is free to take)
ONE, TWO = os.getpid(), os.getppid()


def _block() -> tuple[SharedBlock, Any]:
    plan = Plan(rows=4)
    region = liveness.reserve(plan)
    return SharedBlock(plan.allocate(), plan), region


def _monitor(watch: liveness.StallWatch, clock: _Clock, seconds: float) -> dict[int, float]:
    """The main process's monitor loop for ``seconds``: a look every 0.1 s; what it found."""
    found: dict[int, float] = {}
    for _ in range(round(seconds * 10)):
        clock.now += 0.1
        found.update(watch.look([ONE, TWO]))
    return found


def test_a_stamp_is_the_pid_and_the_time_of_its_rows_owner() -> None:
    block, region = _block()
    clock = _Clock()
    stamps = liveness.Liveness(block, region, clock=clock)
    first, second = block.claim(pid=ONE), block.claim(pid=TWO)
    assert stamps.last_stamps() == {}  # not stamped yet: nothing to judge
    stamps.stamp(first)
    clock.now += 1
    stamps.stamp(second)
    assert stamps.last_stamps() == {ONE: 1000.0, TWO: 1001.0}


def test_a_replacement_is_not_judged_by_its_predecessors_stamp() -> None:
    block, region = _block()
    stamps = liveness.Liveness(block, region, clock=_Clock())
    dead = 2**22 + 1  # above Linux's pid_max: never a running process
    stamps.stamp(block.claim(pid=dead))
    taken = block.claim(pid=ONE)  # a replacement takes the dead worker's row
    assert taken.index == 0
    assert stamps.last_stamps() == {dead: 1000.0}  # the old stamp, under the old pid
    stamps.stamp(taken)
    assert stamps.last_stamps() == {ONE: 1000.0}


def test_a_worker_silent_longer_than_the_timeout_is_stalled() -> None:
    block, region = _block()
    clock = _Clock()
    stamps = liveness.Liveness(block, region, clock=clock)
    watch = liveness.StallWatch(stamps, timeout=10)
    one, two = block.claim(pid=ONE), block.claim(pid=TWO)
    stamps.stamp(one)
    stamps.stamp(two)
    for _ in range(10):  # both stamp every second for 10 s
        assert _monitor(watch, clock, 1.0) == {}
        stamps.stamp(one)
        stamps.stamp(two)
    for _ in range(9):  # then TWO stops stamping: 9.x s is not yet a stall
        assert _monitor(watch, clock, 1.0) == {}
        stamps.stamp(one)
    stalled = _monitor(watch, clock, 1.0)
    assert list(stalled) == [TWO]
    assert 10.0 < stalled[TWO] <= 10.15
    assert watch.look([ONE]) == {}  # only the manager's running workers are judged


def test_after_the_whole_group_was_suspended_each_worker_gets_the_timeout_again() -> None:
    block, region = _block()
    clock = _Clock()
    stamps = liveness.Liveness(block, region, clock=clock)
    watch = liveness.StallWatch(stamps, timeout=10)
    stamps.stamp(block.claim(pid=ONE))
    assert _monitor(watch, clock, 1.0) == {}
    clock.now += 60  # Ctrl-Z, then fg: the main process did not look for a minute either
    assert _monitor(watch, clock, 9.9) == {}
    assert list(_monitor(watch, clock, 0.5)) == [ONE]  # and the worker never stamped again


def test_a_worker_that_never_stamps_is_stalled_after_the_start_up_allowance() -> None:
    block, region = _block()
    clock = _Clock()
    stamps = liveness.Liveness(block, region, clock=clock)
    watch = liveness.StallWatch(stamps, timeout=10)
    allowance = liveness.STARTUP_ALLOWANCE * 10
    one = block.claim(pid=ONE)
    stamps.stamp(one)
    found: dict[int, float] = {}
    for _ in range(round(allowance) - 1):  # ONE stamps every second; TWO hangs at start-up
        found.update(_monitor(watch, clock, 1.0))
        stamps.stamp(one)
    assert found == {}  # started (first seen) less than the allowance ago: not yet
    stalled = _monitor(watch, clock, 1.2)
    assert list(stalled) == [TWO]
    assert allowance < stalled[TWO] <= allowance + 0.15  # counted from the first look
    assert watch.never_stamped(TWO) and not watch.never_stamped(ONE)


def test_a_worker_that_stamps_in_its_start_up_is_judged_by_its_stamps() -> None:
    block, region = _block()
    clock = _Clock()
    stamps = liveness.Liveness(block, region, clock=clock)
    watch = liveness.StallWatch(stamps, timeout=10)
    assert _monitor(watch, clock, 25.0) == {}  # neither has stamped: starting, 25 s < 30 s
    stamps.stamp(block.claim(pid=ONE))
    stamps.stamp(block.claim(pid=TWO))
    assert _monitor(watch, clock, 9.9) == {}
    assert set(_monitor(watch, clock, 0.5)) == {ONE, TWO}  # now the timeout, from the stamp


def test_a_running_loop_stamps_every_interval() -> None:
    block, region = _block()
    stamps = liveness.Liveness(block, region)
    row = block.claim(pid=os.getpid())

    async def run() -> list[float]:
        stamps.start_stamping(row, interval=0.02)
        seen = []
        for _ in range(3):
            seen.append(stamps.last_stamps()[os.getpid()])
            await asyncio.sleep(0.05)
        return seen

    loop = uvloop.new_event_loop()
    try:
        seen = loop.run_until_complete(run())
    finally:
        loop.close()
    assert seen == sorted(set(seen))  # a new stamp at each look
