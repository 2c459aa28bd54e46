"""``RingCursor`` finds the bucket ``TimeRing.current`` finds, whatever the clock does."""

from __future__ import annotations

import random

from service.sharedmem import RingCursor, TimeRing


def test_a_cursor_writes_where_the_ring_says_through_wraps_and_steps_back() -> None:
    ring = TimeRing(resolution_s=0.05, in_window=4, slots=6, values=2)
    by_ring = memoryview(bytearray(8 * (3 + ring.size))).cast("d")
    by_cursor = memoryview(bytearray(8 * (3 + ring.size))).cast("d")
    cursor = RingCursor(ring, by_cursor, 3)
    rng = random.Random(7)
    now = 1000.0
    for _ in range(5000):
        # mostly small steps, sometimes a jump past the whole ring, sometimes back (a wall
        # clock that was set back)
        now += rng.choice((0.001, 0.013, 0.05, 0.5, -0.2)) * rng.random()
        bucket = ring.current(by_ring, 3, now)
        assert cursor.current(now) == bucket
        by_ring[bucket] += 1
        by_cursor[bucket] += 1
        assert list(by_ring) == list(by_cursor)
    assert sum(by_ring[3:]) > 0
