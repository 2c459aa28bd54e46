"""One block of shared memory for every worker process of a host.

Features reserve their space on a :class:`Plan` before the block exists: *shared* fields
(one copy for the host, e.g. a target's ejection) and *per-worker* fields (one copy in every
worker row, e.g. request counters). Every process builds the same plan from the same
settings, so offsets agree without being exchanged and no feature depends on another's
start-up. The main process allocates the block once (``main_process_start``) and hands it to
the workers through ``app.shared_ctx``.

Each worker claims a row once, at start-up, and from then on is the only writer of its
per-worker fields, so recording takes no lock and never waits on another worker; readers
sum every row. A worker that replaces a dead one takes over its row and keeps adding to it,
so lifetime totals survive worker restarts. The block is a ``multiprocessing.RawArray`` of
doubles: exact for integers up to 2**53, and an aligned 8-byte store is never seen half
written. Memory is fixed at start-up.
"""

from __future__ import annotations

import multiprocessing
import os
import time
from collections.abc import Callable
from ctypes import c_double
from dataclasses import dataclass
from typing import Any

# Rows for worker processes; a restarted worker reuses its predecessor's row.
MAX_WORKER_ROWS = 16

_STARTED_MONOTONIC, _STARTED_WALL = range(2)  # the block's own shared fields
_OWNER = 0  # the first field of every row: the pid of the worker that claimed it


@dataclass(frozen=True, slots=True)
class Region:
    """``width`` doubles at ``at``: from the block's start (shared) or a row's (per worker)."""

    at: int
    width: int


class Plan:
    """The block's layout, built by the features before the block exists."""

    def __init__(self, rows: int = MAX_WORKER_ROWS) -> None:
        self.rows = rows
        self._shared_size = 2  # start times
        self._row_size = 1  # owner pid

    def shared(self, width: int) -> Region:
        region = Region(self._shared_size, width)
        self._shared_size += width
        return region

    def per_worker(self, width: int) -> Region:
        region = Region(self._row_size, width)
        self._row_size += width
        return region

    @property
    def row_size(self) -> int:
        return self._row_size

    @property
    def first_row(self) -> int:
        return self._shared_size

    @property
    def size(self) -> int:
        return self._shared_size + self.rows * self._row_size

    def allocate(self, clock: Callable[[], float] = time.monotonic) -> Any:
        """The raw block; call in the main process before the workers start."""
        raw = multiprocessing.RawArray(c_double, self.size)
        raw[_STARTED_MONOTONIC] = clock()
        raw[_STARTED_WALL] = time.time()
        return raw


@dataclass(frozen=True, slots=True)
class WorkerRow:
    """The row a worker claimed: ``at`` is its offset in ``block.mem``."""

    block: SharedBlock
    index: int
    at: int
    pid: int


class SharedBlock:
    """A process's view of the raw block: the shared fields and every worker row."""

    def __init__(self, raw: Any, plan: Plan) -> None:
        self.mem = memoryview(raw).cast("B").cast("d")
        self.plan = plan

    @property
    def started_at(self) -> float:
        """When the block was allocated, on the monotonic clock."""
        return self.mem[_STARTED_MONOTONIC]

    @property
    def started_wall(self) -> float:
        """When the block was allocated, on the wall clock (the host's start)."""
        return self.mem[_STARTED_WALL]

    def rows(self) -> range:
        """The offset of every row, claimed or not."""
        size = self.plan.row_size
        first = self.plan.first_row
        return range(first, first + self.plan.rows * size, size)

    def owner(self, row_at: int) -> int:
        return int(self.mem[row_at + _OWNER])

    def claimed_rows(self) -> list[int]:
        """Rows any worker ever claimed: their counters count, dead owner or not."""
        return [at for at in self.rows() if self.mem[at + _OWNER]]

    def live_rows(self) -> list[int]:
        """Rows whose owner is running: what they hold now (open sockets) is still true."""
        return [at for at in self.claimed_rows() if process_alive(self.owner(at))]

    def claim(self, pid: int | None = None, lock: Any = None) -> WorkerRow:
        """Take this pid's row, a dead worker's row, or an unused one (start-up only).

        ``lock`` (a ``multiprocessing.Lock``) keeps two starting workers from taking the
        same row; where one process is alone (single process, tests) it may be None.
        """
        pid = pid or os.getpid()
        if lock is not None:
            with lock:
                return self.claim(pid)
        offsets = list(self.rows())
        for index, at in enumerate(offsets):
            if self.owner(at) == pid:
                return WorkerRow(self, index, at, pid)
        for index, at in enumerate(offsets):
            owner = self.owner(at)
            if owner == 0 or not process_alive(owner):
                self.mem[at + _OWNER] = pid
                return WorkerRow(self, index, at, pid)
        raise RuntimeError(f"shared block is full: all {self.plan.rows} worker rows in use")


def process_alive(pid: int) -> bool:
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
