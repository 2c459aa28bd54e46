"""SIGHUP asks for a reload, in whichever process of the host it lands.

The handlers only add one to the request counter in the shared region (``ConfigRegion.request``)
and return: the reload leader, a worker, does the reading and validating on its own loop. So
the main process's handler takes part in nothing Sanic does (its worker manager and the sync
manager it talks to are never touched, unlike ``frontdoor.supervision``'s SIGTERM), and a
signal sent to the whole process group does not kill the workers (SIGHUP's default action),
it asks for the same reload.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
from collections.abc import Callable
from typing import Any

from service.reload.region import ConfigRegion


def in_main_process(region: ConfigRegion) -> None:
    """From now on, SIGHUP to the main process asks for a reload."""

    def requested(signum: int, frame: Any) -> None:
        region.request()

    signal.signal(signal.SIGHUP, requested)


def in_worker(loop: asyncio.AbstractEventLoop, region: ConfigRegion) -> Callable[[], None]:
    """SIGHUP to this worker (or, under ``--single-process``, to the one process) asks for
    a reload; returns what removes the handler again. Outside the main thread (a test
    client's server) there is no signal to take, and nothing is done."""
    try:
        loop.add_signal_handler(signal.SIGHUP, region.request)
    except (RuntimeError, ValueError, NotImplementedError):
        return lambda: None

    def remove() -> None:
        with contextlib.suppress(RuntimeError, ValueError):
            loop.remove_signal_handler(signal.SIGHUP)

    return remove
