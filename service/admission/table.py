"""The shared tables: each key's GCRA state (:class:`RateTable`) and each client's requests
in flight (:class:`ClientTable`). Every method that changes them is called under the host
lock (the admission region's ``SharedLock``), except where said.

**Where a key lives is the host's secret.** A key's fingerprint (its 52-bit hash, the same
on every replica, so that the cluster sync can name it) says *which* key it is; *where* its
neighbourhood starts is a keyed hash of that fingerprint (:class:`Placement`: a
strongly universal multiply-add-shift with 256 bits drawn when the host's block was made,
the same for all its workers). A client can compute any key's fingerprint, but not where
it lands, so it cannot choose keys that crowd another client's neighbourhood.

**Bounded, and a flood cannot push a heavy hitter out.** A key lives in one of the
:data:`~service.admission.layout.NEIGHBOURHOOD` slots after the bucket its hash names
(open addressing with a bounded probe). A new key takes an empty slot there, or one whose
state has *fully decayed*: its theoretical arrival time has passed, so it holds no
consumption at all, and a fresh key's state would be identical (and it is in no limited
episode and has nothing left to share with other replicas). A key that is using its budget
is never replaced, so a flood of distinct keys cannot evict a heavy hitter however many it
sends. When every slot of a new key's neighbourhood is in use, the key is *not tracked*: its
requests count against its limit's **overflow bucket**, one state per limit shared by all
untracked keys at that limit's rate and burst. So a flood that fills the table is limited as
a whole instead of slipping through, and well-behaved keys that hold a slot are untouched;
the price is that a new, innocent key arriving while its neighbourhood is full shares the
flood's budget until a slot there decays (slots of keys at 1 request a second decay after
one second). Memory never grows: the table is allocated once, at start-up.
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterator
from typing import NamedTuple

from service.sharedmem import Texts
from service.sharedmem.block import host_secret

from service.admission.layout import (
    C_COUNTS,
    C_FP,
    C_KEY_AT,
    C_KEY_LEN,
    CLIENT_SLOT,
    DIRTY_CAP,
    EPISODE,
    FP,
    IN_USE,
    IN_USE_AT,
    KEY_AT,
    KEY_BYTES,
    KEY_LEN,
    LAST_LIMITED,
    LIMIT,
    LIMITED_CAP,
    LIMITED_SINCE,
    NEIGHBOURHOOD,
    SLOT,
    TAT,
    UNSYNCED,
    AdmissionLayout,
)

PAGE_DOUBLES = 512  # 4 KiB
_M64 = (1 << 64) - 1
_M128 = (1 << 128) - 1


def _key_bytes(key: str) -> bytes:
    return key.encode("utf-8", "replace")[:KEY_BYTES]


class Placement:
    """The bucket of a fingerprint among ``buckets``, keyed by ``secret`` (32 bytes): the
    high 64 bits of ``(a * fp + b) mod 2**128`` (``a`` odd), scaled to the buckets. For any
    two fingerprints, over the choice of the secret, their buckets agree with probability
    about ``1 / buckets``: as for random keys, whichever keys a client picks."""

    __slots__ = ("_a", "_b", "buckets")

    def __init__(self, secret: bytes, buckets: int) -> None:
        self._a = int.from_bytes(secret[:16], "little") | 1
        self._b = int.from_bytes(secret[16:32], "little")
        self.buckets = buckets

    def __call__(self, fp: int) -> int:
        return ((((self._a * fp + self._b) & _M128) >> 64) * self.buckets) >> 64


class Episode(NamedTuple):
    """A key's limited episode, as listed for ``/stats`` or ended by the sweep."""

    limit: int
    key: str
    since: float  # monotonic
    limited: int  # requests limited in it


class Unshared(NamedTuple):
    """A key's admissions not yet published to the other replicas."""

    limit: int
    fp: int  # 0 for a limit's fixed slot (per = "all")
    count: int
    key: str


class RateTable:
    def __init__(self, mem: memoryview, raw_bytes: memoryview, layout: AdmissionLayout) -> None:
        self._mem = mem
        self._texts = Texts(mem, raw_bytes)
        self.layout = layout
        self._fixed = layout.slots.at
        self._hashed = layout.slots.at + layout.limits * SLOT
        self._place = Placement(host_secret(mem), max(1, layout.keys - NEIGHBOURHOOD + 1))
        self._limited = layout.limited_list.at
        self._dirty = layout.dirty.at if layout.cluster else -1

    def touch(self) -> None:
        """Read one double of every page of the tables, so that this worker's memory is what
        it will be under any flood from the start (the pages are shared; this only maps
        them)."""
        mem = self._mem
        for region in (self.layout.slots, self.layout.clients):
            for at in range(region.at, region.at + region.width, PAGE_DOUBLES):
                _ = mem[at]  # the read is the point

    # ---- finding a key's slot ------------------------------------------------------------

    def fixed(self, limit: int) -> int:
        """The limit's own slot: its whole budget (per = "all") or its overflow bucket."""
        return self._fixed + limit * SLOT

    def home(self, fp: int) -> int:
        """The first slot of the key's neighbourhood, where it is found most of the time."""
        return self._hashed + self._place(fp) * SLOT

    def find(self, limit: int, fp: int, key: str, now: float) -> int:
        """The offset of the key's slot: its own, one claimed now, or (the neighbourhood
        being all in use) the limit's overflow bucket."""
        mem = self._mem
        want = float(fp)
        first = self._hashed + self._place(fp) * SLOT
        if mem[first] == want:  # where most keys are: no loop
            return first
        free = -1
        for at in range(first, first + NEIGHBOURHOOD * SLOT, SLOT):
            held = mem[at + FP]
            if held == want:
                return at
            if free < 0 and (
                held == 0.0
                or (
                    mem[at + TAT] <= now
                    and mem[at + LIMITED_SINCE] == 0.0
                    and mem[at + UNSYNCED] == 0.0
                )
            ):
                free = at
        if free < 0:
            return self.fixed(limit)
        self._claim(free, want, limit, key)
        return free

    def _claim(self, at: int, fp: float, limit: int, key: str) -> None:
        mem = self._mem
        mem[at + LIMIT] = limit
        mem[at + TAT] = mem[at + UNSYNCED] = 0.0
        mem[at + LIMITED_SINCE] = mem[at + LAST_LIMITED] = mem[at + EPISODE] = 0.0
        self._texts.put(at + KEY_LEN, at + KEY_AT, _key_bytes(key))
        mem[at + FP] = fp  # last: a reader that finds its fingerprint finds its key

    def key_at(self, at: int) -> str:
        return self._texts.get(at + KEY_LEN, at + KEY_AT)

    def label(self, fixed_key: str, at: int) -> str:
        return self.key_at(at) if at >= self._hashed else fixed_key

    def count_in_use(self, now: float) -> None:
        """Count the keys in use now and note it for ``/stats`` (a read: no lock)."""
        state = self.layout.state.at
        self._mem[state + IN_USE] = self.busy(now)
        self._mem[state + IN_USE_AT] = time.time()

    def in_use(self) -> tuple[int, float]:
        """The keys in use as last counted, and when (wall clock; 0 if never)."""
        state = self.layout.state.at
        return int(self._mem[state + IN_USE]), self._mem[state + IN_USE_AT]

    def busy(self, now: float) -> int:
        """Hashed slots holding a key whose state has not decayed (for ``/stats``)."""
        mem = self._mem
        return sum(
            1
            for at in range(self._hashed, self._hashed + self.layout.keys * SLOT, SLOT)
            if mem[at + FP] != 0.0 and mem[at + TAT] > now
        )

    # ---- limited episodes ----------------------------------------------------------------

    def limited(self, at: int, now: float) -> bool:
        """Note one limited request of the key at ``at``; True if it starts an episode (the
        caller logs it). An episode that cannot be listed (:data:`LIMITED_CAP` keys are in
        one already) is not started: the key is limited all the same, only not logged."""
        mem = self._mem
        mem[at + LAST_LIMITED] = now
        if mem[at + LIMITED_SINCE] != 0.0:
            mem[at + EPISODE] += 1
            return False
        listed = self._limited
        for entry in range(listed, listed + LIMITED_CAP):
            if mem[entry] == 0.0:
                mem[entry] = at + 1
                mem[at + LIMITED_SINCE] = now
                mem[at + EPISODE] = 1
                return True
        return False

    def episodes(self) -> Iterator[tuple[int, Episode]]:
        """Every listed episode, with its slot's offset (no lock needed: a read)."""
        mem = self._mem
        for entry in range(self._limited, self._limited + LIMITED_CAP):
            at = int(mem[entry]) - 1
            if at >= 0 and mem[at + LIMITED_SINCE] != 0.0:
                yield at, Episode(
                    int(mem[at + LIMIT]), self.key_at(at), mem[at + LIMITED_SINCE],
                    int(mem[at + EPISODE]),
                )  # fmt: skip

    def end_quiet_episodes(self, now: float, quiet: list[float]) -> list[tuple[int, Episode]]:
        """End the episodes of keys with no limited request for ``quiet[limit]`` seconds;
        what they were (the caller logs them)."""
        mem = self._mem
        ended = []
        for entry in range(self._limited, self._limited + LIMITED_CAP):
            at = int(mem[entry]) - 1
            if at < 0:
                continue
            limit = int(mem[at + LIMIT])
            if mem[at + LIMITED_SINCE] == 0.0:
                mem[entry] = 0.0
            elif now - mem[at + LAST_LIMITED] >= quiet[limit]:
                ended.append(
                    (at, Episode(limit, self.key_at(at), mem[at + LIMITED_SINCE],
                                 int(mem[at + EPISODE])))
                )  # fmt: skip
                mem[at + LIMITED_SINCE] = mem[at + EPISODE] = 0.0
                mem[entry] = 0.0
        return ended

    # ---- sharing with other replicas -----------------------------------------------------

    def admitted(self, at: int) -> None:
        """Count one admission for the other replicas (only with a cluster)."""
        mem = self._mem
        if mem[at + UNSYNCED] == 0.0:
            dirty = self._dirty
            count = int(mem[dirty])
            if count < DIRTY_CAP:
                mem[dirty + 2 + count] = at
                mem[dirty] = count + 1
            else:
                mem[dirty + 1] = 1.0  # overflowed: the next publication scans the table
        mem[at + UNSYNCED] += 1

    def take_unshared(self) -> list[Unshared]:
        """Every slot's admissions since the last call, and zero them."""
        mem, dirty = self._mem, self._dirty
        if mem[dirty + 1]:
            slots: list[int] = [
                self._fixed + i * SLOT for i in range(self.layout.limits + self.layout.keys)
            ]
        else:
            slots = [int(mem[dirty + 2 + i]) for i in range(int(mem[dirty]))]
        mem[dirty] = mem[dirty + 1] = 0.0
        out = []
        for at in slots:
            count = int(mem[at + UNSYNCED])
            if count <= 0:
                continue
            mem[at + UNSYNCED] = 0.0
            fixed = at < self._hashed
            limit = (at - self._fixed) // SLOT if fixed else int(mem[at + LIMIT])
            fp = 0 if fixed else int(mem[at + FP])
            out.append(Unshared(limit, fp, count, "" if fixed else self.key_at(at)))
        return out

    def charge(
        self, limit: int, fp: int, key: str, count: int, cost: float, now: float,
        most: float = math.inf,
    ) -> bool:  # fmt: skip
        """Another replica admitted ``count`` requests of this key: take them from its budget
        here too (``cost`` seconds each), its debt never beyond ``most`` seconds from now.
        False if the key could not be given a slot."""
        at = self.fixed(limit) if fp == 0 else self.find(limit, fp, key, now)
        if fp and at == self.fixed(limit):
            return False
        mem = self._mem
        tat = mem[at + TAT]
        mem[at + TAT] = max(tat, min(max(tat, now) + count * cost, now + most))
        return True


class ClientTable:
    """Requests in flight per client, one column per worker row: the sum is the client's,
    and a worker that replaces a dead one clears the dead one's column (its requests died
    with it). A client that finds no slot is not tracked (fails open, counted): a table full
    of clients with requests in flight is a host at capacity, and that is the pools' caps'
    business, not a reason to refuse a newcomer."""

    def __init__(self, mem: memoryview, raw_bytes: memoryview, layout: AdmissionLayout) -> None:
        self._mem = mem
        self._texts = Texts(mem, raw_bytes)
        self._at = layout.clients.at
        self._slots = layout.client_slots
        self._place = Placement(host_secret(mem), max(1, layout.client_slots - NEIGHBOURHOOD + 1))

    def clear_column(self, column: int) -> None:
        mem = self._mem
        for at in range(self._at, self._at + self._slots * CLIENT_SLOT, CLIENT_SLOT):
            mem[at + C_COUNTS + column] = 0.0

    def enter(self, fp: int, key: str, column: int, cap: int) -> int:
        """Count one request of the client in flight: the slot's offset; -1 if the client
        already has ``cap`` in flight (refused); -2 if it could not be tracked."""
        mem = self._mem
        want = float(fp)
        first = self._at + self._place(fp) * CLIENT_SLOT
        free = -1
        for at in range(first, first + NEIGHBOURHOOD * CLIENT_SLOT, CLIENT_SLOT):
            held = mem[at + C_FP]
            if held == want:
                if sum(mem[at + C_COUNTS : at + CLIENT_SLOT]) >= cap:
                    return -1
                mem[at + C_COUNTS + column] += 1
                return at
            if free < 0 and (held == 0.0 or not any(mem[at + C_COUNTS : at + CLIENT_SLOT])):
                free = at
        if free < 0:
            return -2
        self._texts.put(free + C_KEY_LEN, free + C_KEY_AT, _key_bytes(key))
        mem[free + C_FP] = want
        mem[free + C_COUNTS + column] = 1.0
        return free

    def leave(self, at: int, column: int) -> None:
        """The request is over (no lock needed: only this worker writes its column)."""
        self._mem[at + C_COUNTS + column] -= 1

    def in_flight(self) -> int:
        mem = self._mem
        return int(
            sum(
                math.fsum(mem[at + C_COUNTS : at + CLIENT_SLOT])
                for at in range(self._at, self._at + self._slots * CLIENT_SLOT, CLIENT_SLOT)
            )
        )
