"""The host lock: one ``multiprocessing.Lock`` around every read-modify-write of the tables.

A GCRA decision reads a key's state and writes it back; two workers doing that at once for
the same key would both admit the request the budget had room for once. Per-worker rows
(the metrics' way) cannot express one budget, so the shared tables are changed under one
lock, held for a few microseconds (one decision, no I/O, no ``await``). Uncontended it
costs about 0.3 µs to take and give back.

A worker killed while holding it (``kill -9`` between the two calls) would leave every other
worker waiting for ever. So the holder writes its pid into the block; a worker that cannot
take the lock within :data:`WAIT_S` checks that pid, and if that process is gone, frees
the lock itself (a ``multiprocessing.Lock`` may be released by another process) and takes
it. If the holder is alive but slow, the caller goes on without the lock (fails open) and
the miss is counted: a limit that is briefly inexact beats a proxy that stalls.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Callable
from typing import Any

log = logging.getLogger("service.admission")

WAIT_S = 0.05


class HostLock:
    def __init__(
        self, lock: Any, mem: memoryview, holder_at: int, alive: Callable[[int], bool]
    ) -> None:
        """``lock`` None: this process is alone (``--single-process``, tests): no lock is
        needed, since a decision never awaits."""
        self._lock = lock
        self._mem = mem
        self._holder = holder_at
        self._alive = alive
        self._pid = float(os.getpid())

    @property
    def raw(self) -> Any:
        """The ``multiprocessing.Lock`` (None when alone), for a caller that inlines the
        uncontended case: ``raw.acquire(False)``, then write :attr:`pid` at the holder's
        place; on release, 0 there, then ``raw.release()``."""
        return self._lock

    @property
    def pid(self) -> float:
        return self._pid

    def acquire(self) -> bool:
        """True once held; False if it could not be had (go on without it)."""
        lock = self._lock
        if lock is None:
            return True
        if lock.acquire(False) or lock.acquire(True, WAIT_S):  # the first is the cheap one
            self._mem[self._holder] = self._pid
            return True
        return self._stuck(lock)

    def _stuck(self, lock: Any) -> bool:
        """The lock was not had within :data:`WAIT_S`: free it if its holder is dead."""
        holder = int(self._mem[self._holder])
        if holder and not self._alive(holder):
            log.warning("admission: the worker %d died holding the host lock; freed", holder)
            self._mem[self._holder] = 0.0
            with contextlib.suppress(ValueError):  # someone freed it meanwhile
                lock.release()
            if lock.acquire(True, WAIT_S):
                self._mem[self._holder] = self._pid
                return True
        return False

    def release(self) -> None:
        if self._lock is not None:
            self._mem[self._holder] = 0.0
            self._lock.release()
