"""The one way to keep text in the shared block: its length in one double, its bytes in the
doubles a layout reserved for it (``capacity // 8`` of them).

The bytes are written first and the length last, so a reader that reads the length first
never reads past what was written; readers that must see text and length of one moment
read under a :class:`~service.sharedmem.seqlock.Seqlock`. How a text too long for its room
is cut is the owner's choice (a key is cut, a configuration refused): :func:`cut` is the
usual one.
"""

from __future__ import annotations


class Texts:
    """Text and raw bytes at offsets (in doubles) of the block's doubles ``mem``."""

    __slots__ = ("_bytes", "_mem")

    def __init__(self, mem: memoryview, raw_bytes: memoryview | None = None) -> None:
        self._mem = mem
        self._bytes = raw_bytes if raw_bytes is not None else mem.cast("B")

    def get(self, length_at: int, at: int) -> str:
        """The text whose length is at ``length_at`` and bytes from ``at`` on."""
        return self.raw(at, int(self._mem[length_at])).decode("utf-8", "replace")

    def put(self, length_at: int, at: int, data: bytes) -> None:
        """Write ``data`` from ``at`` on, then its length at ``length_at``."""
        self.put_raw(at, data)
        self._mem[length_at] = len(data)

    def raw(self, at: int, size: int) -> bytes:
        start = at * 8
        return bytes(self._bytes[start : start + size])

    def put_raw(self, at: int, data: bytes) -> None:
        start = at * 8
        self._bytes[start : start + len(data)] = data


def cut(data: bytes, limit: int) -> bytes:
    """At most ``limit`` bytes, cut on a character boundary, marked when cut."""
    if len(data) <= limit:
        return data
    return data[: limit - 3].decode("utf-8", "ignore").encode("utf-8") + b"..."
