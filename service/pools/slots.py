"""Target slots: every pool's targets in the shared block, so that they can come and go while
the host serves (DNS discovery now, configuration reload next) and every worker agrees.

Contract
--------
- **Slots.** The table has ``capacity`` slots, fixed when the block is planned
  (:func:`capacity_for`: the configured targets, ``LB_RESOLVER_MAX_TARGETS`` per ``resolve``
  entry, and :data:`SPARE_SLOTS`). A slot's number *is* the target's ``index`` in
  :class:`~service.pools.state.PoolState`: its shared fields (ejection, health streaks, last
  contact) and its fields in every worker row (outstanding, requests, failures, window).
- **Keys.** A slot in use is keyed by ``(pool, url)``; it also carries a weight, an
  ``origin`` (``""`` for a configured target, the host name of the ``resolve`` entry it came
  from otherwise) and an ``order`` (members of a pool are listed by it, then by slot).
  :meth:`Change.acquire` returns the slot that already holds the key, with its state
  untouched (weight, origin and order updated), else a free slot, zeroed. So a target that
  stays (same pool, same URL) keeps its ejection, streaks, window and lifetime counts.
- **Release.** :meth:`Change.release` takes a key out of its pool's set. The slot then
  drains: workers stop choosing it once they have applied the generation, requests in flight
  on it finish and are counted on it. Acquiring the key again before it is free revives it
  as it was. :meth:`SlotTable.reclaim` frees a draining slot once every live worker has
  applied a generation without it and none has a request outstanding on it: its lifetime
  requests and failures are added to the pool's :class:`Retired` totals, then every field
  of the slot (shared and in every row) is zeroed. Nobody writes a slot after that point,
  which is what makes zeroing other workers' row fields safe.
- **Writers** change the table only inside ``with table.change() as change:`` (under the
  table's :class:`~service.sharedmem.SharedLock`, between processes; a writer that died
  holding it does not keep the others out), which publishes one new *generation* at the
  end if anything changed. Pools are named in a directory that only grows (capacity:
  the configured pools and :data:`SPARE_POOLS`).
- **Readers** (every worker, without a lock) compare :attr:`SlotTable.generation` (one
  read of a double) with the generation they last applied; when it moved, :meth:`snapshot`
  gives every pool's members as of one generation (the generation is the table's
  :class:`~service.sharedmem.Seqlock`: odd while a writer is at work, and a read that saw it
  move is retried). After rebuilding its pools a
  worker calls :meth:`SlotTable.applied` with that generation (its own row's field).
- **Start.** :meth:`SlotTable.seed` puts the configured targets in, once per block (the first
  process to get there; later ones find it seeded), in settings order: with no ``resolve``
  entries the indices are what they always were, 0..n-1 in configuration order.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from service.settings import Settings, Upstream
from service.sharedmem import Plan, Seqlock, SharedBlock, SharedLock, Texts, Turn, WorkerRow
from service.sharedmem.lock import WRITER_TIMEOUT_S

SPARE_SLOTS = 16  # targets beyond the configured ones, for changes while serving
SPARE_POOLS = 8  # pools beyond the configured ones (a reload may add some)
LOCK_NAME = "slot table"

# the table's header (shared)
_GENERATION, _SEEDED, _DRAINING = range(3)
_HEADER = 3
# a pool's entry in the directory (shared): its name, then what its freed slots counted
_NAME_BYTES = 128
_P_NAME_LEN, _P_REQUESTS, _P_FAILURES, _P_TARGETS = range(4)
_P_NAME = 4
_POOL_WIDTH = _P_NAME + _NAME_BYTES // 8
# a slot (shared): state, pool (directory position + 1), weight, order, the generation that
# released it, when it joined its pool (monotonic; 0: at start-up), then "url\norigin" as UTF-8
_FREE, _IN_USE, _DRAINING_SLOT = 0, 1, 2
_S_STATE, _S_POOL, _S_WEIGHT, _S_ORDER, _S_RELEASED, _S_JOINED, _S_KEY_LEN = range(7)
_S_KEY = 7
_KEY_BYTES = 512
_SLOT_WIDTH = _S_KEY + _KEY_BYTES // 8


class SlotsExhausted(RuntimeError):
    """No free slot for a new target: the block was sized at start-up."""


@dataclass(frozen=True, slots=True)
class Member:
    """A slot in use, as a pool's target: what a worker builds its ``Target`` from."""

    index: int
    url: str
    weight: int
    origin: str  # "" for a configured target, else the host name it was resolved from
    order: float
    joined: float = 0.0  # when it joined its pool while serving (monotonic); 0: at start-up


@dataclass(frozen=True, slots=True)
class Retired:
    """What a pool's freed slots had counted, summed: they stay in the pool's totals."""

    targets: int
    requests: int
    failures: int


def capacity_for(settings: Settings) -> int:
    """Slots for every configured target, ``max_targets`` per resolve entry, and spares."""
    configured = sum(len(u.static_targets) for u in settings.upstreams)
    resolved = sum(len(u.resolved_entries) for u in settings.upstreams)
    return configured + resolved * settings.resolver.max_targets + SPARE_SLOTS


class SlotLayout:
    """The table's regions of the block, reserved on ``plan``."""

    def __init__(self, plan: Plan, *, slots: int, pools: int) -> None:
        self.slots, self.pools = slots, pools
        self.lock = plan.lock(LOCK_NAME)
        self.header = plan.shared(_HEADER)
        self.directory = plan.shared(pools * _POOL_WIDTH)
        self.table = plan.shared(slots * _SLOT_WIDTH)
        self.applied = plan.per_worker(1)  # the generation this worker's pools are built on


class SlotTable:
    """A process's view of the slot table. Writers of different processes take the table's
    lock (``lock``: the one in the block at ``layout.lock`` unless given)."""

    def __init__(
        self, block: SharedBlock, layout: SlotLayout, *, lock: SharedLock | None = None
    ) -> None:
        self.block = block
        self.layout = layout
        self._mem = block.mem
        self._texts = Texts(block.mem)
        self._lock = lock or block.lock(layout.lock, LOCK_NAME, WRITER_TIMEOUT_S)
        self._gen_at = layout.header.at + _GENERATION
        self._seq = Seqlock(block.mem, self._gen_at, self._lock)
        self._pool_ids: dict[str, int] = {}  # directory entries never move: cached

    # -- reading (any process, no lock) --------------------------------------------------

    @property
    def generation(self) -> int:
        """Bumped by every published change (odd while a writer is at work)."""
        return int(self._mem[self._gen_at])

    def snapshot(self, *, tries: int = 50) -> tuple[int, dict[str, tuple[Member, ...]]] | None:
        """``(generation, {pool: members})`` as of one generation; None if writers kept the
        table busy for ``tries`` attempts (call again later)."""
        return self._seq.read(self._read_members, tries)

    def members(self, pool: str) -> tuple[Member, ...]:
        """One pool's members (as of one generation; empty if the pool has none)."""
        snap = self._seq.read(self._read_members, tries=1000)
        if snap is None:
            raise TimeoutError("the target slot table was being written throughout the read")
        return snap[1].get(pool, ())

    def retired(self, pool: str) -> Retired:
        position = self._pool_position(pool)
        if position is None:
            return Retired(0, 0, 0)
        at = self._pool_at(position)
        mem = self._mem
        return Retired(
            int(mem[at + _P_TARGETS]), int(mem[at + _P_REQUESTS]), int(mem[at + _P_FAILURES])
        )

    def pool_names(self) -> list[str]:
        """Every pool ever named on this host, in the directory's order (which only grows,
        so every process lists them alike: ``service.reload`` keys per-pool figures on it)."""
        names = []
        for position in range(self.layout.pools):
            name = self._pool_name(position)
            if not name:
                break
            names.append(name)
        return names

    def draining(self) -> int:
        """Released slots not yet freed (cheap: one read), so ``reclaim`` can be skipped."""
        return int(self._mem[self.layout.header.at + _DRAINING])

    def applied(self, row: WorkerRow, generation: int) -> None:
        """This worker's pools are now built on ``generation`` (its own row's field)."""
        self._mem[row.at + self.layout.applied.at] = generation

    def in_use(self) -> int:
        return sum(
            1
            for slot in range(self.layout.slots)
            if self._mem[self._slot_at(slot) + _S_STATE] != _FREE
        )

    # -- writing (under the lock) -----------------------------------------------------------

    @contextmanager
    def change(self) -> Iterator[Change]:
        """A writer's turn: everything done through the :class:`Change` is published as one
        generation when the block ends (none if nothing changed)."""
        with self._seq.write(eager=False) as turn:
            yield Change(self, turn)

    def seed(self, settings: Settings) -> bool:
        """Put the configured targets in, once per block; True if this call did it."""
        header = self.layout.header.at
        with self.change() as change:
            if self._mem[header + _SEEDED]:
                return False
            for upstream in settings.upstreams:
                change.pool(upstream.name)
                for spec, order in _configured(upstream):
                    change.acquire(
                        upstream.name, spec.url, weight=spec.weight, order=order, joined=0.0
                    )
            change.begin()
            self._mem[header + _SEEDED] = 1
        return True

    def reclaim(
        self,
        lifetime: Callable[[int], tuple[int, int]],
        outstanding: Callable[[int, list[int]], int],
        clear: Callable[[int], None],
    ) -> list[tuple[str, str]]:
        """Free every draining slot no live worker can still touch; ``(pool, url)`` of each.

        ``lifetime(slot)`` -> (requests, failures) over every row, ``outstanding(slot,
        rows)`` -> requests in flight in those rows, ``clear(slot)`` zeroes its state: the
        pools' per-target state (``PoolState``) lends them, so this module stays its own.
        """
        if not self.draining():
            return []
        rows = self.block.live_rows()
        applied = [int(self._mem[row + self.layout.applied.at]) for row in rows]
        freed = []
        with self.change() as change:
            for slot in range(self.layout.slots):
                at = self._slot_at(slot)
                if self._mem[at + _S_STATE] != _DRAINING_SLOT:
                    continue
                released = self._mem[at + _S_RELEASED]
                if any(gen < released for gen in applied) or outstanding(slot, rows):
                    continue
                change.begin()
                requests, failures = lifetime(slot)
                pool_at = self._pool_at(int(self._mem[at + _S_POOL]) - 1)
                self._mem[pool_at + _P_REQUESTS] += requests
                self._mem[pool_at + _P_FAILURES] += failures
                self._mem[pool_at + _P_TARGETS] += 1
                freed.append((self._pool_name(int(self._mem[at + _S_POOL]) - 1), self._url(at)))
                clear(slot)
                self._mem[at : at + _SLOT_WIDTH] = _zeros(_SLOT_WIDTH)
                self._mem[self.layout.header.at + _DRAINING] -= 1
        return freed

    # -- the layout ------------------------------------------------------------------------

    def _slot_at(self, slot: int) -> int:
        return self.layout.table.at + slot * _SLOT_WIDTH

    def _pool_at(self, position: int) -> int:
        return self.layout.directory.at + position * _POOL_WIDTH

    def _pool_position(self, name: str) -> int | None:
        if name in self._pool_ids:
            return self._pool_ids[name]
        for position in range(self.layout.pools):
            found = self._pool_name(position)
            if not found:
                return None
            self._pool_ids[found] = position
            if found == name:
                return position
        return None

    def _pool_name(self, position: int) -> str:
        at = self._pool_at(position)
        return self._texts.get(at + _P_NAME_LEN, at + _P_NAME)

    def _url(self, slot_at: int) -> str:
        return self._key(slot_at)[0]

    def _key(self, slot_at: int) -> tuple[str, str]:
        url, _, origin = self._texts.get(slot_at + _S_KEY_LEN, slot_at + _S_KEY).partition("\n")
        return url, origin

    def _read_members(self) -> dict[str, tuple[Member, ...]]:
        mem = self._mem
        found: dict[int, list[Member]] = {}
        for slot in range(self.layout.slots):
            at = self._slot_at(slot)
            if mem[at + _S_STATE] != _IN_USE:
                continue
            url, origin = self._key(at)
            member = Member(
                slot, url, int(mem[at + _S_WEIGHT]), origin, mem[at + _S_ORDER], mem[at + _S_JOINED]
            )
            found.setdefault(int(mem[at + _S_POOL]) - 1, []).append(member)
        return {
            self._pool_name(position): tuple(sorted(members, key=lambda m: (m.order, m.index)))
            for position, members in found.items()
        }

    def _find(self, pool: int, url: str) -> int | None:
        """The slot (in use or draining) keyed ``(pool, url)``."""
        mem = self._mem
        for slot in range(self.layout.slots):
            at = self._slot_at(slot)
            if mem[at + _S_STATE] and mem[at + _S_POOL] == pool + 1 and self._url(at) == url:
                return slot
        return None


class Change:
    """One writer's turn on the table (see :meth:`SlotTable.change`)."""

    def __init__(self, table: SlotTable, turn: Turn) -> None:
        self._table = table
        self._mem = table._mem
        self._turn = turn

    @property
    def began(self) -> bool:
        return self._turn.began

    def begin(self) -> None:
        """Mark the table as being written (odd generation), once per change."""
        self._turn.begin()

    def pool(self, name: str) -> int:
        """The pool's position in the directory, adding it if new."""
        table = self._table
        position = table._pool_position(name)
        if position is not None:
            return position
        data = name.encode()
        if len(data) > _NAME_BYTES:
            raise ValueError(f"pool name {name!r} is over {_NAME_BYTES} bytes")
        for position in range(table.layout.pools):
            at = table._pool_at(position)
            if not self._mem[at + _P_NAME_LEN]:
                self.begin()
                table._texts.put(at + _P_NAME_LEN, at + _P_NAME, data)
                table._pool_ids[name] = position
                return position
        raise SlotsExhausted(f"no room for pool {name!r}: {table.layout.pools} pools at most")

    def acquire(
        self,
        pool: str,
        url: str,
        *,
        weight: int = 1,
        origin: str = "",
        order: float = 0.0,
        joined: float | None = None,
    ) -> int:
        """The slot of ``(pool, url)``: the one it has (kept as it is, or revived if it was
        draining), else a free one, zeroed. Raises :class:`SlotsExhausted` when none is free.

        A key that was not in use joins its pool at ``joined`` (now when None: the one
        instant every worker's slow start counts from; 0 for the targets of start-up)."""
        table, mem = self._table, self._mem
        position = self.pool(pool)
        data = f"{url}\n{origin}".encode()
        if len(data) > _KEY_BYTES:
            raise ValueError(f"target {url!r} is over {_KEY_BYTES} bytes")
        slot = table._find(position, url)
        if slot is None:
            slot = next(
                (s for s in range(table.layout.slots) if mem[table._slot_at(s) + _S_STATE] == 0),
                None,
            )
            if slot is None:
                raise SlotsExhausted(f"no free target slot for {url} in pool {pool!r}")
        at = table._slot_at(slot)
        state = mem[at + _S_STATE]
        current = (state, mem[at + _S_WEIGHT], mem[at + _S_ORDER], table._key(at))
        if current == (_IN_USE, weight, order, (url, origin)):
            return slot  # already so: nothing to publish
        self.begin()
        if state == _DRAINING_SLOT:
            mem[table.layout.header.at + _DRAINING] -= 1
        if state != _IN_USE:
            mem[at + _S_JOINED] = time.monotonic() if joined is None else joined
        mem[at + _S_STATE] = _IN_USE
        mem[at + _S_POOL] = position + 1
        mem[at + _S_WEIGHT] = weight
        mem[at + _S_ORDER] = order
        mem[at + _S_RELEASED] = 0
        mem[at + _S_KEY : at + _SLOT_WIDTH] = _zeros(_SLOT_WIDTH - _S_KEY)
        table._texts.put(at + _S_KEY_LEN, at + _S_KEY, data)
        return slot

    def release(self, pool: str, url: str) -> bool:
        """Take ``(pool, url)`` out of its pool's set; False if it was not in it."""
        table, mem = self._table, self._mem
        position = table._pool_position(pool)
        slot = None if position is None else table._find(position, url)
        if slot is None or mem[table._slot_at(slot) + _S_STATE] != _IN_USE:
            return False
        self.begin()
        at = table._slot_at(slot)
        mem[at + _S_STATE] = _DRAINING_SLOT
        mem[at + _S_RELEASED] = mem[table._gen_at] + 1  # the generation this change publishes
        mem[table.layout.header.at + _DRAINING] += 1
        return True

    def members(self, pool: str) -> tuple[Member, ...]:
        """A pool's members as this change has left them so far."""
        return self._table._read_members().get(pool, ())


def _configured(upstream: Upstream) -> Iterator[tuple[Any, float]]:
    """The upstream's configured (not resolved) targets with their order: their position in
    the target list, so that resolved targets of an entry between them sort in place."""
    for position, spec in enumerate(upstream.targets):
        if not spec.resolve:
            yield spec, float(position * ORDER_STEP)


ORDER_STEP = 1_000_000  # order of a target list's entry i: i * ORDER_STEP (+ rank within it)


def _zeros(width: int) -> memoryview:
    return memoryview(bytes(8 * width)).cast("d")
