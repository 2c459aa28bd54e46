"""The one lock of the shared block: a robust, process-shared POSIX mutex kept in the block.

Why this one. A ``multiprocessing.Lock`` held by a process that dies (an OOM kill,
``kill -9``, the stall watcher's SIGKILL) stays held for ever, and telling a dead holder
from a slow one with a pid written beside it is racy: the pid is written after the lock is
taken, and two processes that decide to take it back at once can both end up holding it. A
*robust* mutex has the kernel do that bookkeeping: every thread keeps a list of the robust
mutexes it holds, and when it dies the kernel marks each one "owner died" and wakes one
waiter, which gets ``EOWNERDEAD`` *and holds the lock*. Exactly one process learns of the
death, with the lock in hand, whatever the timing; there is no pid to compare and nothing
to race on. That process marks the mutex consistent and goes on; whatever the dead holder
left half-written is the caller's to settle (:class:`~service.sharedmem.seqlock.Seqlock`
closes a writer's turn it finds open).

The mutex lives in the block's own memory (:meth:`Plan.lock` reserves
:data:`LOCK_WIDTH` doubles, :meth:`Plan.allocate` initialises them), so it reaches spawned
workers with the block, needs no file and no name, and leaves nothing behind in ``/dev/shm``.
It is ``PTHREAD_MUTEX_ERRORCHECK``: taking it twice in one thread is an error, not a hang.

Every wait is bounded: :meth:`SharedLock.acquire` gives up after the lock's ``timeout``
(a monotonic deadline), so a caller on an event loop blocks at most that long, and only
when a *live* holder keeps the lock. Uncontended, taking and giving back costs two calls
into libc through ``ctypes`` (about 0.5 µs; see ``tests/test_sharedmem_locks.py``).

Linux (glibc or musl) only, as the service is: ``pthread_mutex_consistent`` must exist.
"""

from __future__ import annotations

import ctypes
import errno
import logging
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

log = logging.getLogger("service.sharedmem")

# The bound for the block's writers (slot table, configuration region): they hold it for
# microseconds to a few milliseconds; a dead holder costs nothing (the kernel says so at
# once), so only a live, stuck holder (SIGSTOP, until the stall watcher kills it) makes a
# writer wait, on its event loop, this long at most before it gives up for this turn.
WRITER_TIMEOUT_S = 0.5
LOCK_WIDTH = 8  # doubles: 64 bytes, more than any Linux pthread_mutex_t (40 or 48)
_MUTEX_BYTES = LOCK_WIDTH * 8
_PTHREAD_MUTEX_ERRORCHECK = 2
_PTHREAD_PROCESS_SHARED = 1
_PTHREAD_MUTEX_ROBUST = 1
_CLOCK_MONOTONIC = 1

_libc = ctypes.CDLL(None)
_trylock = _libc.pthread_mutex_trylock
_unlock = _libc.pthread_mutex_unlock
_consistent = _libc.pthread_mutex_consistent
_clocklock = getattr(_libc, "pthread_mutex_clocklock", None)  # glibc >= 2.30
_timedlock = _libc.pthread_mutex_timedlock


class _Timespec(ctypes.Structure):
    _fields_ = [("tv_sec", ctypes.c_long), ("tv_nsec", ctypes.c_long)]


class LockTimeout(TimeoutError):
    """A live holder kept the lock past the caller's bound."""


def initialise(buffer: memoryview, offset: int) -> None:
    """Make the :data:`LOCK_WIDTH` doubles at byte ``offset`` of ``buffer`` a free robust
    mutex. Once per block, before any process uses it (``Plan.allocate``)."""
    attr = ctypes.create_string_buffer(64)  # a pthread_mutexattr_t is 4 to 8 bytes
    mutex = (ctypes.c_char * _MUTEX_BYTES).from_buffer(buffer, offset)
    for call, args in (
        (_libc.pthread_mutexattr_init, ()),
        (_libc.pthread_mutexattr_settype, (_PTHREAD_MUTEX_ERRORCHECK,)),
        (_libc.pthread_mutexattr_setpshared, (_PTHREAD_PROCESS_SHARED,)),
        (_libc.pthread_mutexattr_setrobust, (_PTHREAD_MUTEX_ROBUST,)),
    ):
        _check(call(attr, *args))
    _check(_libc.pthread_mutex_init(mutex, attr))
    _libc.pthread_mutexattr_destroy(attr)


class SharedLock:
    """The robust mutex at byte ``offset`` of ``buffer`` (a byte view of the block).

    ``name`` is for the log and errors; ``timeout`` (seconds) bounds every acquisition that
    does not give its own."""

    __slots__ = ("mutex", "name", "recovered", "timeout")

    def __init__(self, buffer: memoryview, offset: int, *, name: str, timeout: float) -> None:
        self.mutex = (ctypes.c_char * _MUTEX_BYTES).from_buffer(buffer, offset)
        self.name = name
        self.timeout = timeout
        self.recovered = 0  # holders found dead by this process (for tests and logs)

    @staticmethod
    def fast_path() -> tuple[Any, Any]:
        """``(try_lock, unlock)``, for a caller that inlines the uncontended case:
        ``code = try_lock(lock.mutex)``: 0 is held, anything else goes to :meth:`settle`;
        ``unlock(lock.mutex)`` gives it back."""
        return _trylock, _unlock

    def acquire(self, timeout: float | None = None) -> bool:
        """True once held; False if a live holder kept it for ``timeout`` seconds (the
        lock's own when None; 0: do not wait)."""
        return self.settle(_trylock(self.mutex), timeout)

    def settle(self, code: int, timeout: float | None = None) -> bool:
        """Finish an acquisition whose ``pthread_mutex_trylock`` returned ``code``."""
        if code == errno.EBUSY:
            wait = self.timeout if timeout is None else timeout
            if wait <= 0:
                return False
            code = _wait(self.mutex, wait)
        if code == 0:
            return True
        if code == errno.EOWNERDEAD:  # we hold it; its last holder died holding it
            _check(_consistent(self.mutex))
            self.recovered += 1
            log.warning("the %s lock's holder died holding it; taken back", self.name)
            return True
        if code == errno.ETIMEDOUT:
            return False
        raise OSError(code, f"the {self.name} lock: {errno.errorcode.get(code, code)}")

    def release(self) -> None:
        _check(_unlock(self.mutex))

    @contextmanager
    def held(self, timeout: float | None = None) -> Iterator[None]:
        """The lock for the block's duration; :class:`LockTimeout` if not had in time."""
        if not self.acquire(timeout):
            wait = self.timeout if timeout is None else timeout
            raise LockTimeout(f"the {self.name} lock was not free within {wait:g} s")
        try:
            yield
        finally:
            self.release()


def _wait(mutex: Any, seconds: float) -> int:
    """Block in the kernel until the mutex is had, its holder dies, or ``seconds`` pass."""
    if _clocklock is not None:
        deadline = time.clock_gettime(time.CLOCK_MONOTONIC) + seconds
        clock = _CLOCK_MONOTONIC
    else:  # an older libc: the realtime clock (a clock step moves the deadline)
        deadline, clock = time.time() + seconds, -1
    whole = int(deadline)
    spec = _Timespec(whole, int((deadline - whole) * 1e9))
    if clock >= 0:
        return int(_clocklock(mutex, clock, ctypes.byref(spec)))
    return int(_timedlock(mutex, ctypes.byref(spec)))


def _check(code: int) -> None:
    if code:
        raise OSError(code, errno.errorcode.get(code, str(code)))
