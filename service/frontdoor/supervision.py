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
- ``wait_for_ack`` is the same wait that returns as soon as a shutdown has begun (after
  telling every worker again: one spawned after the signal was not told); the shutdown
  message stays queued, so the monitor loop reads it next and stops as usual.
"""

from __future__ import annotations

import logging
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


def supervise(manager: WorkerManager) -> None:
    """Install the respawn and the start-up shutdown on ``manager`` (see the module doc)."""
    sync_states = manager._sync_states
    last_respawn: dict[str, float] = {}

    def sync_states_and_respawn() -> None:
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
    manager.wait_for_ack = _wait_for_ack_or_shutdown(manager)  # type: ignore[method-assign]


def _wait_for_ack_or_shutdown(manager: WorkerManager) -> Callable[[], None]:
    def wait_for_ack() -> None:
        misses = 0
        while not manager._all_workers_ack():
            if manager._shutting_down:
                # again: a worker that start() spawned after the signal has not been told
                manager.shutdown()
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
