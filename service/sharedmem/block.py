"""One block of shared memory for every worker process of a host.

Features reserve their space on a :class:`Plan` before the block exists: *shared* fields
(one copy for the host, e.g. a target's ejection) and *per-worker* fields (one copy in every
worker row, e.g. request counters). Every process builds the same plan from the same
settings, so offsets agree without being exchanged and no feature depends on another's
start-up. The main process allocates the block once (``main_process_start``) and hands it to
the workers through ``app.shared_ctx``.

Each worker claims a row once, at start-up, and from then on is the only writer of its
per-worker fields, so recording takes no lock and never waits on another worker; readers
sum every row. Rows are claimed under the block's own lock (a :class:`SharedLock`, as every
lock in the block is), so a worker that died claiming one cannot keep its replacement out.
A worker that replaces a dead one takes over its row and keeps adding to it, so lifetime
totals survive worker restarts. The block is a shared ``ctypes`` array of doubles, as
``multiprocessing.RawArray`` makes, in a mapping of its own (:class:`_FreshBuffer`): exact
for integers up to 2**53, and an aligned 8-byte store is never seen half written. Memory is
fixed at start-up, and only the pages written are ever allocated.

The block also holds the host's **secret**: 32 random bytes drawn when the block is
allocated (in the main process), the same for every worker of the host and unknown outside
it, for features that must place what clients name where clients cannot predict
(admission's key table).
"""

from __future__ import annotations

import os
import secrets
import time
from collections.abc import Callable
from ctypes import c_double
from dataclasses import dataclass
from multiprocessing.heap import Arena
from multiprocessing.sharedctypes import rebuild_ctype
from typing import Any

from service.sharedmem.lock import LOCK_WIDTH, SharedLock, initialise

# Rows for worker processes; a restarted worker reuses its predecessor's row.
MAX_WORKER_ROWS = 16
CLAIM_TIMEOUT_S = 2.0  # a row is claimed in microseconds; only a live, stuck holder waits
CLAIM_LOCK_NAME = "row claim"

# the block's own shared fields: start times, the host's secret, the row-claim lock
_STARTED_MONOTONIC, _STARTED_WALL = range(2)
_SECRET = 2
SECRET_BYTES = 32
_CLAIM_LOCK = _SECRET + SECRET_BYTES // 8
_HEADER = _CLAIM_LOCK + LOCK_WIDTH
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
        self._shared_size = _HEADER
        self._row_size = 1  # owner pid
        self.locks = {CLAIM_LOCK_NAME: Region(_CLAIM_LOCK, LOCK_WIDTH)}  # every lock, by name

    def shared(self, width: int) -> Region:
        region = Region(self._shared_size, width)
        self._shared_size += width
        return region

    def lock(self, name: str) -> Region:
        """Room for one :class:`SharedLock`, made a free lock by :meth:`allocate`."""
        if name in self.locks:
            raise ValueError(f"the block already has a lock named {name!r}")
        region = self.locks[name] = self.shared(LOCK_WIDTH)
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
        raw = rebuild_ctype(c_double, _FreshBuffer(self.size * 8), self.size)
        raw[_STARTED_MONOTONIC] = clock()
        raw[_STARTED_WALL] = time.time()
        raw_bytes = memoryview(raw).cast("B")
        start = _SECRET * 8
        raw_bytes[start : start + SECRET_BYTES] = secrets.token_bytes(SECRET_BYTES)
        for region in self.locks.values():
            initialise(raw_bytes, region.at * 8)
        return raw


class _FreshBuffer:
    """What ``multiprocessing.RawArray`` allocates from, over a mapping of its own.

    ``RawArray`` takes its memory from ``multiprocessing``'s heap, which may hand back
    memory freed earlier, so it writes zeros over all of it: every page of the block then
    exists from the start, all 16 rows of it, though a host of two workers only ever
    touches two rows and the first page of the others (4.3 of the default block's 4.9 MiB
    stay unused; issue 23, idle PSS). A fresh file in ``/dev/shm``, unlinked at once like
    the heap's (``multiprocessing.heap.Arena``), reads as zeros without a write, and its
    pages exist only once written. It reaches spawned workers as the heap's arenas do (its
    file descriptor, passed while spawning), and ``rebuild_ctype`` makes the array and
    pickles it, as it does for ``RawArray``."""

    def __init__(self, size: int) -> None:
        self._arena = Arena(size)
        self._size = size

    def create_memoryview(self) -> memoryview:
        return memoryview(self._arena.buffer)[: self._size]


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
        self._bytes = self.mem.cast("B")
        self.claim_lock = self.lock(plan.locks[CLAIM_LOCK_NAME], CLAIM_LOCK_NAME, CLAIM_TIMEOUT_S)

    def lock(self, region: Region, name: str, timeout: float) -> SharedLock:
        """The lock at ``region`` (reserved with :meth:`Plan.lock`)."""
        return SharedLock(self._bytes, region.at * 8, name=name, timeout=timeout)

    @property
    def secret(self) -> bytes:
        """The host's secret (see the module's docstring)."""
        return host_secret(self.mem)

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

    def claim(self, pid: int | None = None) -> WorkerRow:
        """Take this pid's row, a dead worker's row, or an unused one (start-up only).

        Under the block's row-claim lock, so two starting workers never take the same row;
        :class:`~service.sharedmem.lock.LockTimeout` if a live holder keeps it past
        :data:`CLAIM_TIMEOUT_S` (a dead one's is taken back at once).
        """
        with self.claim_lock.held():
            return self._claim(pid or os.getpid())

    def _claim(self, pid: int) -> WorkerRow:
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


def host_secret(mem: memoryview) -> bytes:
    """The host's secret in the block whose doubles are ``mem``."""
    start = _SECRET * 8
    return bytes(mem.cast("B")[start : start + SECRET_BYTES])


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
