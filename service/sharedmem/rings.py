"""Rings of time buckets in shared memory: sliding windows with memory fixed at start-up.

A bucket is a stamp (the epoch it belongs to: ``int(now / resolution)``) followed by
``values`` doubles. Its writer resets it when the ring comes round to it; readers skip any
bucket whose stamp is outside the window, so a worker that stopped writing simply ages out.
The ring is longer than the window so that a bucket being reset is never one a reader
still counts.
"""

from __future__ import annotations

import math
from collections.abc import Iterator


class TimeRing:
    """``slots`` buckets of ``resolution_s`` seconds; the window is the last ``in_window``."""

    __slots__ = ("_zeros", "in_window", "resolution_s", "size", "slots", "values", "width")

    def __init__(self, *, resolution_s: float, in_window: int, slots: int, values: int) -> None:
        if slots <= in_window:
            raise ValueError("a ring must be longer than its window")
        self.resolution_s, self.in_window, self.slots, self.values = (
            resolution_s, in_window, slots, values,
        )  # fmt: skip
        self.width = 1 + values  # the stamp, then the values
        self.size = slots * self.width
        self._zeros = memoryview(bytes(8 * values)).cast("d")

    def current(self, mem: memoryview, at: int, now: float) -> int:
        """Offset of the current bucket's first value, the bucket reset first if stale."""
        epoch = int(now / self.resolution_s)
        bucket = at + (epoch % self.slots) * self.width
        if mem[bucket] != epoch:
            mem[bucket + 1 : bucket + self.width] = self._zeros
            mem[bucket] = epoch
        return bucket + 1

    def window(self, mem: memoryview, at: int, now: float) -> Iterator[int]:
        """Offsets of the first value of every bucket within the window ending now."""
        newest = math.floor(now / self.resolution_s)
        oldest = newest - self.in_window
        for bucket in range(at, at + self.size, self.width):
            if oldest < mem[bucket] <= newest:
                yield bucket + 1

    def stamped(self, mem: memoryview, at: int, now: float) -> Iterator[tuple[int, int]]:
        """``(epoch, offset of its first value)`` of every bucket within the window ending
        now: for readers that merge buckets of several rings by the time they cover."""
        newest = math.floor(now / self.resolution_s)
        oldest = newest - self.in_window
        for bucket in range(at, at + self.size, self.width):
            stamp = mem[bucket]
            if oldest < stamp <= newest:
                yield int(stamp), bucket + 1


class RingCursor:
    """A writer's hand on one ring of its own row: the current bucket, kept while the clock
    stays in its epoch and the bucket still carries that epoch's stamp (a slot cleared for a
    new owner carries none), so that most writes find it without ``TimeRing.current``'s
    arithmetic and call."""

    __slots__ = ("_at", "_bucket", "_epoch", "_mem", "_resolution_s", "_ring")

    def __init__(self, ring: TimeRing, mem: memoryview, at: int) -> None:
        self._ring, self._mem, self._at = ring, mem, at
        self._resolution_s = ring.resolution_s
        self._epoch = -1  # no bucket held yet
        self._bucket = 0

    def current(self, now: float) -> int:
        """What ``TimeRing.current(mem, at, now)`` returns."""
        epoch = int(now / self._resolution_s)
        if epoch != self._epoch or self._mem[self._bucket - 1] != epoch:
            self._bucket = self._ring.current(self._mem, self._at, now)
            self._epoch = epoch
        return self._bucket
