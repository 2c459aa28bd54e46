"""Limits for the whole cluster: each replica tells the others what it admitted, in the
background, and each takes the others' admissions out of its own budgets.

Every ``LB_CLUSTER_PUBLISH_INTERVAL`` (250 ms), the worker holding the housekeeping lease
does one exchange (one Redis round trip, bounded by ``LB_CLUSTER_TIMEOUT``):

1. it takes, under the host lock, every key's admissions since the previous exchange (the
   table lists the slots that admitted anything; at most :data:`KEYS_PER_ENTRY` keys, the
   busiest, go in one entry; the rest are counted as unshared) and appends them to the
   stream, with this host's cumulative counts per limit;
2. it reads every entry the other replicas appended since the last one it read, and charges
   each key's admissions to its own state here: the key's theoretical arrival time moves
   ``count × interval`` later, exactly as if those requests had come here. So each replica's
   bucket drains at the limit's rate and fills with the whole cluster's admissions, and the
   cluster admits the limit's rate (plus what was admitted during one exchange's delay),
   however traffic is split between replicas.

A request never waits on any of this: the gate reads only the shared block. When Redis
cannot be reached, the host falls back to its **share**: every limit's interval is
multiplied by the number of replicas last seen (2 replicas: half the rate each), which
``/stats`` shows (``limits.cluster``: ``mode: "share"``, ``share: 0.5``, the reason); the
change is logged once, and so is the recovery.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence

import orjson

from service.admission.layout import (
    ADMITTED,
    FACTOR,
    LIMITED,
    MODE,
    MODE_DEGRADED,
    MODE_OK,
    MODE_STARTING,
    PER_LIMIT,
    REASON_AT,
    REASON_BYTES,
    REASON_LEN,
    REPLICAS,
    SHARED_KEYS,
    STREAM_MS,
    STREAM_SEQ,
    SYNCED_AT,
    UNSHARED_KEYS,
    AdmissionLayout,
)
from service.admission.policy import Limit
from service.admission.remote import KEYS_PER_ENTRY, DropCounter, Dropped, exchanged_at
from service.admission.remote import most_debt, parse_entry, replica_of
from service.admission.sync_store import SyncStore
from service.admission.table import RateTable
from service.redisconn import RedisUnavailable
from service.settings import ClusterSettings
from service.sharedmem import SharedLock, Texts

log = logging.getLogger("service.admission")

__all__ = ["KEYS_PER_ENTRY", "ClusterSync"]


class ClusterSync:
    def __init__(
        self,
        store: SyncStore,
        settings: ClusterSettings,
        replica: str,
        *,
        mem: memoryview,
        raw_bytes: memoryview,
        layout: AdmissionLayout,
        lock: SharedLock,
        table: RateTable,
        limits: Sequence[Limit],
        totals: Callable[[], list[tuple[int, int]]],
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        """``totals()``: this host's lifetime (admitted, limited) per limit."""
        self._store = store
        self._settings = settings
        self.replica = replica
        self._mem = mem
        self._texts = Texts(mem, raw_bytes)
        self._layout = layout
        self._lock = lock
        self._table = table
        self._limits = {limit.name: limit for limit in limits}
        self._order = tuple(limits)
        self._totals = totals
        self._clock = clock
        self._state = layout.state.at
        self._stale_after = max(1.0, 4 * settings.publish_interval)
        # what one entry may claim is bounded by what a replica can admit in this long
        self._window_s = self._stale_after
        self._most_debt = {limit.name: most_debt(limit, self._window_s) for limit in limits}
        self._drop = DropCounter(mem, layout.dropped.at, clock)
        # the other replicas' cumulative counts, as last read: replica -> (seen, counts)
        self._others: dict[str, tuple[float, dict[str, list[int]]]] = {}
        self._failing: str | None = None
        if mem[self._state + MODE] == 0.0:
            mem[self._state + MODE] = MODE_STARTING

    async def once(self) -> bool:
        """One exchange; True if Redis took part."""
        payload = self._publication()
        try:
            async with self._store.deadline():
                after = self._after()
                if after is None:
                    after = await self._store.latest_id()
                entries, members = await self._store.exchange(
                    self.replica, payload, after, time.time(), self._gone()
                )
        except RedisUnavailable as exc:
            self._degraded(exc.reason)
            return False
        self._apply(entries)
        self._healthy(members)
        return True

    async def aclose(self) -> None:
        await self._store.aclose()

    # ---- publishing ------------------------------------------------------------------------

    def _publication(self) -> bytes | None:
        if not self._lock.acquire():
            return None
        try:
            unshared = self._table.take_unshared()
        finally:
            self._lock.release()
        mem, published = self._mem, self._layout.published_at
        totals = self._totals()
        cumulative, deltas = {}, {}
        for limit, (admitted, limited) in zip(self._order, totals, strict=True):
            at = published + limit.index * PER_LIMIT
            deltas[limit.name] = [
                admitted - int(mem[at + ADMITTED]),
                limited - int(mem[at + LIMITED]),
            ]
            cumulative[limit.name] = [admitted, limited]
            mem[at + ADMITTED], mem[at + LIMITED] = admitted, limited
        unshared.sort(key=lambda u: -u.count)
        kept = unshared[:KEYS_PER_ENTRY]
        mem[self._state + SHARED_KEYS] += len(kept)
        mem[self._state + UNSHARED_KEYS] += len(unshared) - len(kept)
        if not kept and not any(d[0] or d[1] for d in deltas.values()):
            return None  # nothing happened here: say only that we are alive
        names = [limit.name for limit in self._order]
        return orjson.dumps(
            {
                "c": cumulative,
                "d": deltas,
                "k": [[names[u.limit], u.fp, u.count, u.key] for u in kept],
            }
        )

    # ---- reading ---------------------------------------------------------------------------

    def _after(self) -> bytes | None:
        ms = int(self._mem[self._state + STREAM_MS])
        if not ms:
            return None
        return f"{ms}-{int(self._mem[self._state + STREAM_SEQ])}".encode()

    def _apply(self, entries: list[tuple[bytes, dict[bytes, bytes]]]) -> None:
        now, wall = self._clock(), time.time()
        charges: list[tuple[Limit, int, str, int]] = []
        window_deltas = [0.0] * (PER_LIMIT * max(self._layout.limits, 1))
        for entry_id, fields in entries:
            ms, _, seq = entry_id.decode().partition("-")
            self._mem[self._state + STREAM_MS] = int(ms)
            self._mem[self._state + STREAM_SEQ] = int(seq or 0)
            try:
                replica = replica_of(fields.get(b"r"))
            except Dropped as exc:
                self._drop(exc)
                continue
            if replica == self.replica:
                continue
            try:
                body = parse_entry(
                    fields.get(b"p"), self._limits, self._window_s,
                    lambda exc, r=replica: self._drop(exc, r),
                )  # fmt: skip
            except Dropped as exc:
                self._drop(exc, replica)
                continue  # a malformed entry is skipped, not fatal
            counts = body.counts
            for name, (admitted, limited) in body.deltas.items():
                limit = self._limits.get(name)
                if limit is not None:
                    window_deltas[limit.index * PER_LIMIT + ADMITTED] += admitted
                    window_deltas[limit.index * PER_LIMIT + LIMITED] += limited
            charges.extend((c.limit, c.fp, c.key, c.count) for c in body.charges)
            self._others[replica] = (wall, counts)
        if charges and self._lock.acquire():
            try:
                for limit, fp, key, count in charges:
                    self._table.charge(
                        limit.index, fp, key, count, limit.interval, now,
                        most=self._most_debt[limit.name],
                    )  # fmt: skip
            finally:
                self._lock.release()
        if any(window_deltas):
            bucket = self._layout.remote_window.current(
                self._mem, self._layout.remote_window_at, now
            )
            for i, value in enumerate(window_deltas):
                self._mem[bucket + i] += value
        remote = self._layout.remote.at
        for limit in self._order:
            admitted = sum(c.get(limit.name, [0, 0])[0] for _, c in self._others.values())
            limited = sum(c.get(limit.name, [0, 0])[1] for _, c in self._others.values())
            self._mem[remote + limit.index * PER_LIMIT + ADMITTED] = admitted
            self._mem[remote + limit.index * PER_LIMIT + LIMITED] = limited

    def _gone(self) -> list[str]:
        """Replicas silent for longer than the retention: forgotten (their lifetime counts
        leave the cluster's figures with them)."""
        cutoff = time.time() - self._settings.retention
        gone = [r for r, (seen, _) in self._others.items() if seen < cutoff]
        for replica in gone:
            del self._others[replica]
        return gone

    # ---- the host's state ------------------------------------------------------------------

    def _healthy(self, members: dict[bytes, bytes]) -> None:
        wall = time.time()
        live = 0
        for replica, raw in members.items():
            try:
                live += wall - exchanged_at(raw, wall) <= self._stale_after
            except Dropped as exc:
                self._drop(exc, replica.decode("utf-8", "replace"))
        mem, at = self._mem, self._state
        mem[at + REPLICAS] = max(1, live)
        mem[at + FACTOR] = 1.0
        mem[at + SYNCED_AT] = wall
        mem[at + MODE] = MODE_OK
        if self._failing is not None:
            log.warning(
                "admission: Redis is back; limits are the cluster's again (%d replicas)",
                max(1, live),
            )
            self._failing = None

    def _degraded(self, reason: str) -> None:
        mem, at = self._mem, self._state
        replicas = max(1, int(mem[at + REPLICAS]))
        mem[at + FACTOR] = float(replicas)
        mem[at + MODE] = MODE_DEGRADED
        data = reason.encode("utf-8", "replace")[:REASON_BYTES]
        self._texts.put(at + REASON_LEN, at + REASON_AT, data)
        if self._failing is None:
            log.warning(
                "admission: cannot share limits through Redis (%s); each limit falls back "
                "to this replica's share, 1/%d of it, until Redis is back", reason, replicas,
            )  # fmt: skip
        self._failing = reason
