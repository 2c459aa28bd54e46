"""Each route's requests per backend, counted in the shared block: exact across workers.

Layout: a shared directory of keys (one per (route, backend) ever routed on this host:
``<prefix> [<match>] -> <upstream>``), which only grows, and in every worker row one counter
per directory entry plus one that counts what found no room. A worker counts in its own row
only (no lock, one add); ``/stats`` sums the rows. A pair keeps its key, so its count, across
reloads that change weights or reorder routes: a canary's count goes on from 90/10 to 50/50.

The directory is written under the block's lock by whichever worker first routes with a
pair (every worker binds the same router, at start-up and after each reload), and read
without it: an entry is complete (its text, then its length) before the count of entries
that covers it is raised.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Sequence

from service.settings import Backend, Route, Settings
from service.sharedmem import Plan, Region, SharedBlock, SharedLock, Texts, WorkerRow
from service.sharedmem.lock import WRITER_TIMEOUT_S

log = logging.getLogger("service.routes")

SPARE_PAIRS = 64  # (route, backend) pairs beyond the start-up ones, for reloads
LOCK_NAME = "route counters"
KEY_BYTES = 248  # a longer key is kept as its SHA-256
_ENTRY = 1 + KEY_BYTES // 8  # its key's length, then the key's UTF-8 bytes
_COUNT = 0  # the directory's header: entries in use


def pair_key(route: Route, backend: Backend) -> str:
    """What identifies a (route, backend) pair whatever its weight and position."""
    key = f"{route.label} -> {backend.upstream}"
    if len(key.encode()) > KEY_BYTES:
        return "sha256:" + hashlib.sha256(key.encode()).hexdigest()
    return key


def pairs_of(routes: Sequence[Route]) -> int:
    return sum(len(route.choices) for route in routes)


class RouteCountersLayout:
    """The counters' regions of the block, reserved on ``plan`` when the app is built."""

    def __init__(self, plan: Plan, settings: Settings) -> None:
        self.capacity = pairs_of(settings.routes) + SPARE_PAIRS
        self.directory: Region = plan.shared(1 + self.capacity * _ENTRY)
        self.counts: Region = plan.per_worker(self.capacity + 1)  # the last: no room left
        self.lock: Region = plan.lock(LOCK_NAME)  # the directory's writers


class RouteCounters:
    """This worker's view: :meth:`bind` a router's pairs to counters, :meth:`add` one request
    of a pair (by its position in the router's ``pairs``), :meth:`requests` read them all."""

    def __init__(
        self, row: WorkerRow, layout: RouteCountersLayout, lock: SharedLock | None = None
    ) -> None:
        """``lock``: the directory's (by default its own, in the block)."""
        self._block: SharedBlock = row.block
        self._mem = row.block.mem
        self._texts = Texts(row.block.mem)
        self._layout = layout
        self._lock = lock or row.block.lock(layout.lock, LOCK_NAME, WRITER_TIMEOUT_S)
        self._dir = layout.directory.at
        self._row_counts = row.at + layout.counts.at
        self._index: dict[str, int] = {}  # directory entries never move: cached
        self._at: list[int] = []  # the bound router's pairs -> their counter in this row
        self._keys: list[str] = []

    def bind(self, pairs: Sequence[tuple[Route, Backend]]) -> None:
        """Count ``pairs`` (a router's, in its order) from now on. A pair the directory has
        no room for is counted in the overflow counter and shown without a count."""
        keys = [pair_key(route, backend) for route, backend in pairs]
        missing = [key for key in keys if self._find(key) is None]
        if missing:
            try:
                with self._lock.held():
                    for key in missing:
                        if self._find(key) is None:
                            self._append(key)
            except TimeoutError as exc:  # counted once a later bind finds them room
                log.warning("route counters: %s; %d route backend(s) not counted", exc,
                            len(missing))  # fmt: skip
        overflow = self._row_counts + self._layout.capacity
        self._at = [
            overflow if (index := self._find(key)) is None else self._row_counts + index
            for key in keys
        ]
        self._keys = keys

    def add(self, counter: int) -> None:
        """One request routed to the pair at ``counter`` (this worker's row only)."""
        self._mem[self._at[counter]] += 1

    def requests(self) -> list[int | None]:
        """Every bound pair's requests since the host started, all workers (None: no room)."""
        rows = [at + self._layout.counts.at for at in self._block.claimed_rows()]
        mem = self._mem
        found = []
        for key in self._keys:
            index = self._find(key)
            found.append(None if index is None else int(sum(mem[r + index] for r in rows)))
        return found

    # -- the directory ---------------------------------------------------------------------

    def _find(self, key: str) -> int | None:
        index = self._index.get(key)
        if index is not None:
            return index
        for position in range(len(self._index), int(self._mem[self._dir + _COUNT])):
            self._index[self._read(position)] = position
        return self._index.get(key)

    def _read(self, position: int) -> str:
        at = self._dir + 1 + position * _ENTRY
        return self._texts.get(at, at + 1)

    def _append(self, key: str) -> None:
        position = int(self._mem[self._dir + _COUNT])
        if position >= self._layout.capacity:
            return
        at = self._dir + 1 + position * _ENTRY
        self._texts.put(at, at + 1, key.encode())
        self._mem[self._dir + _COUNT] = position + 1  # last: the entry is whole before
        self._index[key] = position
