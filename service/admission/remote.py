"""What another replica's stream entry may say, checked before anything of it is used.

Redis is shared by every replica, and so by anyone who can write to it: a value read from it
is a claim, not a fact. A claim that fails its check is dropped (the rest of the entry is
kept when only one key's item fails), counted by kind in the shared block (``/stats``:
``limits.cluster.dropped``) and logged at most once a minute per kind, so a flood of bad
entries costs one line a minute, not one per entry.

What is checked, and why:

- **the entry** (``entry``): a JSON object of at most :data:`MAX_PAYLOAD` bytes with the
  three fields the publisher writes, at most :data:`KEYS_PER_ENTRY` keys, from a replica
  whose id is a short string;
- **counts** (``count``): integers, non-negative but for the differences since the
  previous entry. A key's admissions in one entry are at most what the limit lets one
  replica admit over the sync window (:func:`most_per_entry`: its burst and its rate over
  the window); a replica's totals at most :data:`MOST_TOTAL`;
- **fingerprints** (``fingerprint``): 0 for a limit's own slot (with an empty key), else the
  52-bit hash of the key within the limit (``policy.key_hash``), checked against the key
  whenever the key is whole (shorter than the table's :data:`~service.admission.layout.
  KEY_BYTES`), so a forged fingerprint cannot claim slots under a real key;
- **keys** (``key``): a string of at most ``KEY_BYTES`` bytes;
- **times** (``time``): a replica's last exchange is a finite wall-clock time no later
  than :data:`CLOCK_SKEW_S` ahead of ours (a time in the future would count it live for ever
  and shrink every replica's share when Redis goes).

Even an accepted count is bounded where it is charged: a key's debt after a charge is never
more than :func:`most_debt` seconds (its burst twice and the sync window), so no entry can
lock a key out for longer than that.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import orjson

from service.admission.layout import DROPPED_KINDS, KEY_BYTES
from service.admission.policy import HASH_MASK, Limit, key_hash

log = logging.getLogger("service.admission")

KEYS_PER_ENTRY = 1024  # the most keys one entry carries (the busiest; the rest are unshared)
KINDS = ("entry", "count", "fingerprint", "key", "time")
assert len(KINDS) == DROPPED_KINDS  # the block holds one counter per kind
MAX_PAYLOAD = 1 << 20  # bytes: 1,024 keys of 64 bytes, with room to spare
MAX_REPLICA_ID = 256  # characters: a host name and a time
MOST_TOTAL = 1 << 53  # a replica's counts: exact in a double
CLOCK_SKEW_S = 30.0
LOG_EVERY_S = 60.0


class Dropped(ValueError):
    """A value that failed its check; ``kind`` is one of :data:`KINDS`."""

    def __init__(self, kind: str, why: str) -> None:
        super().__init__(why)
        self.kind = kind


def most_per_entry(limit: Limit, window_s: float) -> int:
    """The most admissions of one key one replica can report in one entry: its burst, and
    its rate over the sync window."""
    return limit.burst + math.ceil(window_s / limit.interval)


def most_debt(limit: Limit, window_s: float) -> float:
    """The most seconds a key's theoretical arrival time may run ahead of now after another
    replica's charge: this replica's burst plus the most one entry can report."""
    return (limit.burst + most_per_entry(limit, window_s)) * limit.interval


@dataclass(frozen=True, slots=True)
class Charge:
    limit: Limit
    fp: int
    key: str
    count: int


@dataclass(slots=True)
class Entry:
    """One entry's accepted values."""

    counts: dict[str, list[int]]  # cumulative (admitted, limited) per limit name
    deltas: dict[str, list[int]]  # since the replica's previous entry
    charges: list[Charge] = field(default_factory=list)


def _count(value: Any, most: int, least: int = 0) -> int:
    if type(value) is not int or not least <= value <= most:
        raise Dropped("count", f"count {value!r} is not an integer in {least}..{most}")
    return value


def _pairs(value: Any, least: int) -> dict[str, list[int]]:
    """(admitted, limited) per limit name. Cumulative counts never fall (``least`` 0); the
    differences since the previous entry may, when a worker row starts over."""
    if not isinstance(value, dict):
        raise Dropped("entry", "counts are not an object")
    out = {}
    for name, pair in value.items():
        if not isinstance(pair, list) or len(pair) != 2:
            raise Dropped("entry", f"counts of {name!r} are not a pair")
        out[name] = [_count(v, MOST_TOTAL, least) for v in pair]
    return out


def check_key(limit: Limit, fp: Any, key: Any, count: Any, window_s: float) -> Charge:
    """One key's item of an entry, checked (:class:`Dropped` if not right)."""
    if not isinstance(key, str):
        raise Dropped("key", "the key is not a string")
    size = len(key.encode("utf-8", "surrogatepass"))
    if size > KEY_BYTES:
        raise Dropped("key", f"the key is {size} bytes, more than {KEY_BYTES}")
    if type(fp) is not int or not 0 <= fp <= HASH_MASK:
        raise Dropped("fingerprint", f"fingerprint {fp!r} is not a 52-bit integer")
    if fp == 0 and key:
        raise Dropped("fingerprint", "a limit's own slot has no key")
    if fp and (limit.per_all or (size < KEY_BYTES and key_hash(limit.name, key) != fp)):
        raise Dropped("fingerprint", f"fingerprint {fp} is not the hash of its key")
    return Charge(limit, fp, key, _count(count, most_per_entry(limit, window_s)))


def parse_entry(
    raw: Any, limits: Mapping[str, Limit], window_s: float, drop: Callable[[Dropped], None]
) -> Entry:
    """An entry's payload, checked: :class:`Dropped` if the entry as a whole is refused; a
    key's item that fails is left out and passed to ``drop``. Limits this host does not
    have are ignored (a rollout may add one)."""
    if not isinstance(raw, bytes) or len(raw) > MAX_PAYLOAD:
        raise Dropped("entry", "the payload is missing or too large")
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise Dropped("entry", f"the payload is not JSON ({exc})") from None
    if not isinstance(body, dict) or not isinstance(body.get("k"), list):
        raise Dropped("entry", "the payload is not an entry")
    items = body["k"]
    if len(items) > KEYS_PER_ENTRY:
        raise Dropped("entry", f"{len(items)} keys in one entry")
    entry = Entry(_pairs(body.get("c"), 0), _pairs(body.get("d"), -MOST_TOTAL))
    for item in items:
        if not isinstance(item, list) or len(item) != 4:
            drop(Dropped("entry", "a key's item is not [limit, fingerprint, count, key]"))
            continue
        name, fp, count, key = item
        limit = limits.get(name) if isinstance(name, str) else None
        if limit is None:
            continue
        try:
            charge = check_key(limit, fp, key, count, window_s)
        except Dropped as exc:
            drop(exc)
            continue
        if charge.count:
            entry.charges.append(charge)
    return entry


def replica_of(raw: Any) -> str:
    if not isinstance(raw, bytes) or not 0 < len(raw) <= MAX_REPLICA_ID:
        raise Dropped("entry", "the replica id is missing or too long")
    return raw.decode("utf-8", "replace")


def exchanged_at(raw: Any, wall: float) -> float:
    """A replica's last exchange, as the members hash holds it."""
    try:
        at = float(raw)
    except (TypeError, ValueError):
        raise Dropped("time", f"exchange time {raw!r} is not a number") from None
    if not math.isfinite(at) or at > wall + CLOCK_SKEW_S:
        raise Dropped("time", f"exchange time {at!r} is not a time before now")
    return at


class DropCounter:
    """Counts drops by kind in the shared block (``counts[i]`` for ``KINDS[i]``) and logs
    each kind at most once every :data:`LOG_EVERY_S` seconds."""

    def __init__(
        self, mem: memoryview, at: int, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._mem = mem
        self._at = at
        self._clock = clock
        self._logged: dict[str, float] = {}
        self._since: dict[str, int] = {}

    def __call__(self, dropped: Dropped, replica: str = "?") -> None:
        kind = dropped.kind
        self._mem[self._at + KINDS.index(kind)] += 1
        self._since[kind] = self._since.get(kind, 0) + 1
        now = self._clock()
        last = self._logged.get(kind)
        if last is None or now - last >= LOG_EVERY_S:
            log.warning(
                "admission: dropped a value read from Redis (%s, from replica %s): %s; "
                "%d %s value(s) dropped since the last such line",
                kind, replica[:80], dropped, self._since[kind], kind,
            )  # fmt: skip
            self._logged[kind] = now
            self._since[kind] = 0


def dropped_counts(mem: memoryview, at: int) -> dict[str, int]:
    """The drops by kind, for ``/stats``."""
    return {kind: int(mem[at + i]) for i, kind in enumerate(KINDS)}
