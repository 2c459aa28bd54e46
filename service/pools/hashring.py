"""Consistent hashing over a pool's targets: a ring of virtual nodes (Karger et al., ketama).

Each target puts ``VNODES`` points per unit of weight on a 64-bit ring, at the BLAKE2b hash
of its URL and the point's number; a key goes to the owner of the first point at or after
its own hash. Why a ring (and not Maglev): a target that leaves moves *only its own keys*
(each to the next owner on the ring), and gets exactly those back when it returns; Maglev's
table moves a few others too. The points depend only on the targets' URLs and weights, never
on the process (no salted ``hash()``): every worker and every replica builds the same ring.

:meth:`HashRing.walk` yields the targets in ring order from a key's point, each once, so a
caller can skip one that is out of rotation, already tried, or over its bounded load.
"""

from __future__ import annotations

import hashlib
from bisect import bisect_left
from collections.abc import Iterator, Sequence

VNODES = 100  # points per unit of weight: the spread of keys is within about 10 %
MAX_POINTS = 20_000  # heavy weights are scaled down to this many points in all


def key_hash(key: str) -> int:
    """A key's point on the ring (stable across processes and hosts)."""
    return int.from_bytes(hashlib.blake2b(key.encode(), digest_size=8).digest(), "big")


class HashRing:
    """The ring over ``targets`` (``(url, weight)`` in pool order; positions are indices)."""

    __slots__ = ("_owners", "_points", "size")

    def __init__(self, targets: Sequence[tuple[str, int]]) -> None:
        total = sum(weight for _, weight in targets) * VNODES
        scale = min(1.0, MAX_POINTS / total) if total else 1.0
        points: list[tuple[int, int]] = []
        for position, (url, weight) in enumerate(targets):
            for n in range(max(1, round(weight * VNODES * scale))):
                points.append((key_hash(f"{url}#{n}"), position))
        points.sort()
        self._points = [point for point, _ in points]
        self._owners = [owner for _, owner in points]
        self.size = len(targets)

    def walk(self, point: int) -> Iterator[int]:
        """Target positions in ring order from ``point``, each once."""
        owners, count = self._owners, len(self._owners)
        if not count:
            return
        start = bisect_left(self._points, point) % count
        first = owners[start]
        yield first  # the common case: the key's own target, nothing else built
        seen = {first}
        for i in range(start + 1, start + count):
            owner = owners[i % count]
            if owner not in seen:
                seen.add(owner)
                yield owner
                if len(seen) == self.size:
                    return
