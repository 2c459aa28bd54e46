"""The one seqlock of the shared block: writers under a :class:`SharedLock`, readers free.

A sequence number (one double) is odd while a writer is at work and moves by two with every
write. A reader notes it, reads, and keeps what it read only if the number was even and did
not move meanwhile; otherwise it tries again. Readers never lock and never see a torn write.

A writer that died half-way (SIGKILL) left the number odd. The next writer, under the lock
(which the kernel took back from the dead one), finds it odd and closes that turn with its
own (it does not add one more), so the number is even again when it is done. Until then a
reader gives up after ``tries`` attempts (None) rather than spin: it never blocks, and the
next writer is not far off, since the writers that can die holding the lock are workers,
and the worker that replaces a dead one writes as it starts (``SlotTable.seed``,
``ConfigRegion.start``).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TypeVar

from service.sharedmem.lock import SharedLock

T = TypeVar("T")


class Turn:
    """One writer's turn: :meth:`begin` marks the data as being written (once)."""

    __slots__ = ("_at", "_mem", "began")

    def __init__(self, mem: memoryview, at: int) -> None:
        self._mem, self._at = mem, at
        self.began = int(mem[at]) % 2 == 1  # a dead writer's turn: this one closes it

    def begin(self) -> None:
        if not self.began:
            self.began = True
            self._mem[self._at] += 1


class Seqlock:
    """The sequence number at ``at`` of ``mem`` (the block's doubles), written under
    ``lock``."""

    __slots__ = ("_at", "_mem", "lock")

    def __init__(self, mem: memoryview, at: int, lock: SharedLock) -> None:
        self._mem, self._at, self.lock = mem, at, lock

    @property
    def value(self) -> int:
        """The sequence number now: odd while a writer is at work."""
        return int(self._mem[self._at])

    def read(self, read: Callable[[], T], tries: int = 50) -> tuple[int, T] | None:
        """``(sequence, read())`` as of one moment between writers; None if writers kept
        at it (or a dead one's turn stayed open) for ``tries`` attempts."""
        for _ in range(tries):
            before = self._mem[self._at]
            if int(before) % 2 == 0:
                value = read()
                if self._mem[self._at] == before:
                    return int(before), value
            time.sleep(0)
        return None

    @contextmanager
    def write(self, *, timeout: float | None = None, eager: bool = True) -> Iterator[Turn]:
        """A writer's turn under the lock (:class:`LockTimeout` past ``timeout``): begun at
        once if ``eager``, else when the caller calls :meth:`Turn.begin` (a turn that
        changes nothing publishes nothing). The number is even again when the block ends."""
        with self.lock.held(timeout):
            turn = Turn(self._mem, self._at)
            if eager:
                turn.begin()
            try:
                yield turn
            finally:
                if turn.began:
                    self._mem[self._at] += 1
