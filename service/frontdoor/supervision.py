"""The main process's side of the front door: dead workers come back, SIGTERM ends start-up.

Sanic 25.12's ``WorkerManager`` notices a dead worker (its state turns ``FAILED``) but never
replaces it: after a ``kill -9`` the service runs on fewer workers for ever. And its
``wait_for_ack`` re-queues the shutdown message it reads while workers are still starting,
so a SIGTERM during start-up loops for ever. Both are closed here, on the one manager
instance of this process (``main_process_ready``: the manager exists and has not started
monitoring), without touching Sanic's class:

- ``_sync_states`` (run by the monitor loop about every 0.1 s) is followed by a look for
  server workers that died while the service was not shutting down; each is restarted
  under its own name, and logged once. The new worker claims the dead one's row of the
  shared block (``sharedmem.SharedBlock.claim``), so lifetime totals carry on.
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
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import time
from collections.abc import Callable
from typing import Any

from sanic.worker.constants import ProcessState
from sanic.worker.manager import WorkerManager

log = logging.getLogger("sanic.root")

RESPAWN_BACKOFF = 1.0  # seconds: a worker that keeps dying is restarted at most this often


def exit_on_sigterm() -> None:
    """Until the worker manager installs its own handler: SIGTERM is a normal exit (status
    0, finalizers run, so ``multiprocessing`` unlinks its semaphores from ``/dev/shm``)."""

    def _exit(signum: int, frame: Any) -> None:
        raise SystemExit(0)

    signal.signal(signal.SIGTERM, _exit)


def supervise(manager: WorkerManager, grace: float) -> None:
    """Install the respawn and the start-up shutdown on ``manager`` (see the module doc);
    ``grace`` is the workers' graceful shutdown timeout."""
    sync_states = manager._sync_states
    last_respawn: dict[str, float] = {}
    requested: list[int] = []  # the signal that asked for a shutdown, not yet acted on

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
            last_respawn[process.name] = now
            log.warning(
                "worker %s [%s] died (exit code %s); starting a replacement",
                process.name, process.pid, process.exitcode,
            )  # fmt: skip
            manager.restart(process_names=[process.name])

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
