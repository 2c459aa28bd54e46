"""Worker supervision: dead and stalled workers come back, one graceful stop on any signal.

Sanic 25.12's ``WorkerManager`` notices a dead worker (its state turns ``FAILED``) but never
replaces it: after a ``kill -9`` the service runs on fewer workers for ever. And its
``wait_for_ack`` re-queues the shutdown message it reads while workers are still starting,
so a SIGTERM during start-up loops for ever. Both are closed here, on the one manager
instance of this process (``main_process_ready``: the manager exists and has not started
monitoring), without touching Sanic's class:

- ``_sync_states`` (run by the monitor loop about every 0.1 s) is followed by a look for
  server workers that died while the service was not shutting down; each is restarted
  under its own name, and logged once. The new worker claims the dead one's row of the
  shared block (``sharedmem.SharedBlock.claim``), so lifetime totals carry on. A worker
  that stopped cleanly (a signal of its own) is replaced after ``CLEAN_EXIT_GRACE``.
- ``wait_for_ack`` is the same wait that returns as soon as a shutdown has begun; the
  shutdown message stays queued, so the monitor loop reads it next and stops as usual.
- SIGTERM and SIGINT are deferred: Sanic's handler talks to the sync manager (worker
  states) from inside the signal, and when the signal lands while the main loop is itself
  in such a call (starting a worker), the two replies cross and start-up dies with a
  ``TypeError`` (exit status 1). The handler here only notes the signal; both loops above
  act on it within 0.1 s, calling Sanic's own handler from the loop. A second signal still
  kills at once, as in Sanic.
- ``join`` (after the monitor loop ends) is bounded: a worker that was still starting when
  it was told to stop can lose the signal (its ``KeyboardInterrupt`` swallowed) and go on
  to serve; it is told again once it has acked, and whatever still runs ``grace`` + 5 s
  after the stop is killed, so the process always exits.
- A stalled worker is replaced: ``StallWatch`` (``frontdoor.liveness``) names the workers
  whose event loop has not stamped their row of the shared block for
  ``LB_WORKER_STALL_TIMEOUT`` seconds (``kill -STOP``, a blocking call); each is killed with
  SIGKILL, the one signal a stopped process cannot miss, logged once, and the respawn above
  replaces it like any dead worker (its row and totals carried on). A replacement that
  hangs before its first stamp (in a start-up listener, claiming its row) is replaced the
  same way, ``liveness.STARTUP_ALLOWANCE`` timeouts after it was first seen running.
  (Not one stopped from outside before it execs: ``multiprocessing`` spawns with vfork,
  and the kernel holds the spawning thread, this monitor loop, until the child execs.
  A worker cannot hang there by itself: it only closes descriptors and execs.)

A signal to the whole process group (systemd's ``KillMode=control-group``, ``kill -TERM
-PGID``, Ctrl-C in a terminal) reaches every worker as well as the main process. Two things
made that exit 1 with ``Broken pipe``, or cut requests in flight:

- Sanic's sync manager (the ``multiprocessing`` server holding its worker states) was a
  process of its own, which died of SIGTERM (and of SIGHUP), and the main process's next
  word with it raised ``BrokenPipeError``. ``prepare_main_process`` has Sanic use
  ``sync_manager.ThreadedSyncManager`` instead: the same server, run by threads of the main
  process, which no signal ends; the main process shuts it down last, as Sanic always did.
  Why threads rather than a process that ignores the signals: one Python interpreter fewer
  in the group, about 11 MiB PSS of the ~115 MiB of an idle ``--workers 2`` (issue 23), for
  a server that answers a few dozen calls while workers start and stop. Every part of it
  that relies on ``multiprocessing``'s internals is in that module.
- A worker took the direct signal as a stop, and the main process's SIGINT a moment later
  (its way of telling workers to stop) stopped the loop again in the middle of the
  graceful shutdown. ``stop_once_on_signal`` makes the first SIGTERM or SIGINT start the
  graceful stop and every later one a no-op, so the main process and the group signal can
  arrive in any order; a worker signalled alone stops gracefully and is replaced.

Why not Sanic Extensions' health monitor (``HEALTH = True``), tried with Sanic 25.12.1 and
sanic-ext 25.12.0: it asks Sanic to restart a silent worker, and the restart sends SIGTERM,
which a stopped process never acts on: the stopped worker stayed for minutes, and the main
process then hung in its shutdown waiting for it. It also adds a second sync manager and a
monitor process to the group (the monitor died with a traceback on a group SIGTERM), polls
that manager 20 times a second, and 25.12.0 does not import without pydantic, which it
does not declare. The stamps here are two stores a second per worker in memory the workers
already share, read by the monitor loop Sanic's main process already runs.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import os
import signal
import time
from collections.abc import Callable
from multiprocessing import resource_tracker
from typing import Any

import sanic.mixins.startup
from sanic import Sanic
from sanic.worker.constants import ProcessState
from sanic.worker.manager import WorkerManager

from service.frontdoor.liveness import StallWatch
from service.frontdoor.sync_manager import ThreadedSyncManager

log = logging.getLogger("sanic.root")

RESPAWN_BACKOFF = 1.0  # seconds: a worker that keeps dying is restarted at most this often
# seconds a worker that stopped cleanly (exit 0: a signal of its own) waits to be replaced:
# when the whole group is being stopped one process at a time, the main process's turn
# comes within it, and no replacement is started only to be stopped while it starts
CLEAN_EXIT_GRACE = 1.0


def prepare_main_process() -> None:
    """Where serving begins, in the main process (``FrontDoorApp.prepare``), before Sanic
    starts its sync manager: SIGTERM is a normal exit until the worker manager takes it
    over, and the sync manager will be served by threads of this process."""
    _exit_on_sigterm()
    sanic.mixins.startup.Manager = _sync_manager  # type: ignore[assignment]


def _exit_on_sigterm() -> None:
    """Until the worker manager installs its own handler: SIGTERM is a normal exit (status
    0, finalizers run, so ``multiprocessing`` unlinks its semaphores from ``/dev/shm``)."""

    def _exit(signum: int, frame: Any) -> None:
        raise SystemExit(0)

    signal.signal(signal.SIGTERM, _exit)


def _sync_manager() -> ThreadedSyncManager:
    """What Sanic calls for ``multiprocessing.Manager()``: the same manager, its server run
    by threads of this process (``frontdoor.sync_manager``), so no process of its own.

    ``multiprocessing``'s resource tracker is started here, before Sanic spawns a worker
    (which would start it), with SIGHUP ignored, which it inherits through ``exec``: to the
    whole group SIGHUP asks for a reload (``service.reload.signals``), but its default
    action ended the tracker, and the main process then died of ``BrokenPipeError``."""
    hangup = signal.signal(signal.SIGHUP, signal.SIG_IGN)
    try:
        resource_tracker.ensure_running()
    finally:
        signal.signal(signal.SIGHUP, hangup)
    manager = ThreadedSyncManager()
    manager.start()
    return manager


def stop_once_on_signal(app: Sanic) -> None:
    """In a worker, once it serves (``after_server_start``): the first SIGTERM or SIGINT
    starts the graceful stop, every later one is ignored.

    Sanic's handlers are the event loop's, and each signal stops the loop again, also in the
    middle of the shutdown, which then ends with connections cut. These are plain handlers:
    nothing removes them (Sanic's own removal at the stop finds nothing of its own), so a
    later signal meets this one for the rest of the process's life. Only in a worker under a
    main process, where Sanic registered its handlers: not in ``--single-process`` mode nor
    under sanic-testing, whose server runs in the test process.
    """
    if not hasattr(app, "multiplexer"):  # Sanic's own test for "a managed worker"
        return
    loop = asyncio.get_running_loop()
    stopping: list[int] = []

    def stop(signum: int, frame: Any) -> None:
        if not stopping:
            stopping.append(signum)
            with contextlib.suppress(RuntimeError):  # the loop is closed: the worker is ending
                loop.call_soon_threadsafe(functools.partial(app.stop, terminate=False))

    for signum in (signal.SIGINT, signal.SIGTERM):
        if loop.remove_signal_handler(signum):  # Sanic's; the default is back for a moment
            signal.signal(signum, stop)


def supervise(manager: WorkerManager, grace: float, stalls: StallWatch | None = None) -> None:
    """Install the respawn, the stall watch and the start-up shutdown on ``manager`` (see the
    module doc); ``grace`` is the workers' graceful shutdown timeout."""
    sync_states = manager._sync_states
    last_respawn: dict[str, float] = {}
    requested: list[int] = []  # the signal that asked for a shutdown, not yet acted on
    stalled: set[int] = set()  # pids killed as stalled: their end is already logged
    ended_at: dict[int, float] = {}  # when a cleanly stopped worker was first seen ended

    def defer(signum: int, frame: Any) -> None:
        if requested or manager._shutting_down:
            manager.shutdown_signal(signum, frame)  # a second signal: Sanic kills at once
            return
        requested.append(signum)

    def honour_shutdown() -> None:
        if requested and not manager._shutting_down:
            manager.shutdown_signal(requested[0], None)  # in the main loop, not re-entered

    def sync_states_and_respawn() -> None:
        honour_shutdown()
        sync_states()
        if manager._shutting_down:
            return
        for process in list(manager.transient_processes):
            if process.state not in (ProcessState.FAILED, ProcessState.COMPLETED):
                continue
            now = time.monotonic()
            if now - last_respawn.get(process.name, 0.0) < RESPAWN_BACKOFF:
                continue
            clean_exit = process.exitcode == 0
            if clean_exit and now - ended_at.setdefault(process.pid, now) < CLEAN_EXIT_GRACE:
                continue
            last_respawn[process.name] = now
            ended_at.pop(process.pid, None)
            if process.pid in stalled:
                stalled.discard(process.pid)
            else:
                log.warning(
                    "worker %s [%s] %s (exit code %s); starting a replacement",
                    process.name, process.pid, "stopped" if clean_exit else "died",
                    process.exitcode,
                )  # fmt: skip
            manager.restart(process_names=[process.name])
        if stalls is not None:
            kill_stalled(stalls)

    def kill_stalled(stalls: StallWatch) -> None:
        running = {p.pid: p for p in manager.transient_processes if p.pid and p.is_alive()}
        for pid, silent in stalls.look(list(running)).items():
            if pid in stalled:
                continue
            stalled.add(pid)
            log.warning(
                "worker %s [%s] stalled: no sign of life for %.1f s%s; killing it and starting "
                "a replacement",
                running[pid].name, pid, silent,
                " since it started" if stalls.never_stamped(pid) else "",
            )  # fmt: skip
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)

    manager._sync_states = sync_states_and_respawn  # type: ignore[method-assign]
    manager.join = _bounded_join(manager, grace)  # type: ignore[method-assign]
    manager.wait_for_ack = _wait_for_ack_or_shutdown(manager, honour_shutdown)  # type: ignore[method-assign]
    signal.signal(signal.SIGTERM, defer)
    signal.signal(signal.SIGINT, defer)


def _wait_for_ack_or_shutdown(
    manager: WorkerManager, honour_shutdown: Callable[[], None]
) -> Callable[[], None]:
    def wait_for_ack() -> None:
        misses = 0
        while not manager._all_workers_ack():
            honour_shutdown()
            if manager._shutting_down:
                return
            if manager.monitor_subscriber.poll(0.1):
                message = manager.monitor_subscriber.recv()
                if message == "__TERMINATE_EARLY__":
                    log.error("a worker stopped during start-up; shutting down")
                    manager.kill()
                # for the monitor loop, once every worker has acked (or a shutdown began)
                manager.monitor_publisher.send(message)
            misses += 1
            if misses > manager.THRESHOLD:
                log.error("not every worker acknowledged its start-up in time; shutting down")
                manager.kill()

    return wait_for_ack


def _bounded_join(manager: WorkerManager, grace: float) -> Callable[[], None]:
    join = manager.join

    def bounded_join() -> None:
        resent: set[str] = set()
        deadline = time.monotonic() + grace + 5.0
        while time.monotonic() < deadline:
            alive = [process for process in manager.processes if process.is_alive()]
            if not alive:
                break
            for process in alive:
                state = (manager.worker_state.get(process.name) or {}).get("state")
                if state == "ACKED" and process.name not in resent:
                    # Marked TERMINATED when it was told to stop, it acked since: it was
                    # still starting and lost the signal (a KeyboardInterrupt swallowed
                    # during start-up). Tell it again, now that it listens.
                    resent.add(process.name)
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(process.pid, signal.SIGINT)
            time.sleep(0.1)
        for process in manager.processes:
            if process.is_alive():
                log.error(
                    "worker %s [%s] did not stop in time; killing it", process.name, process.pid
                )
                with contextlib.suppress(ProcessLookupError):
                    os.kill(process.pid, signal.SIGKILL)
        join()

    return bounded_join
