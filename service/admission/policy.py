"""The limits as the hot path uses them: compiled once per worker from the settings.

Each :class:`Limit` knows what it covers (methods, path prefix; routes are resolved into
one :class:`RoutePlan` per route name, so a route no limit covers costs one dict lookup),
what it counts per, its GCRA parameters and its ``RateLimit-Policy`` item, made once.

A key is hashed to 52 bits (BLAKE2b, the same on every worker and replica): its fingerprint
in the table, by which the replicas name it to each other. Where its neighbourhood starts is
a hash of the fingerprint keyed by the host's secret (``table.Placement``), so that a client
cannot aim its keys at another's slots by choosing them. Each limit remembers the
hashes of the keys it saw last (at most :data:`HASH_CACHE` of them per worker) so that a
steady client costs a dict lookup, not a hash.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from hashlib import blake2b

from sanic import Request

from service.settings import Settings
from service.settings.model import STATS_ROUTE, LimitSpec

HASH_CACHE = 4096
ITEM_CACHE = 4096
HASH_MASK = (1 << 52) - 1  # a double holds it exactly
CLIENT_LIMIT = "max_client_requests"  # the name LB_MAX_CLIENT_REQUESTS' refusals are counted by


def key_hash(scope: str, key: str) -> int:
    """The 52-bit hash of ``key`` within ``scope`` (a limit's name), never 0 (0 is empty)."""
    data = f"{scope}\0{key}".encode("utf-8", "surrogatepass")
    return int.from_bytes(blake2b(data, digest_size=8).digest(), "little") & HASH_MASK or 1


def policy_item(name: str, burst: int, interval: float) -> str:
    """The limit's ``RateLimit-Policy`` item (draft-ietf-httpapi-ratelimit-headers-10, §3):
    quota ``q`` = the burst (what may be used at once), window ``w`` = the seconds the rate
    takes to refill it, so that q/w is the rate (rounded to whole seconds, at least 1)."""
    return f'"{name}";q={burst};w={max(1, round(burst * interval))}'


@dataclass(slots=True, eq=False)
class Limit:
    """One limit, compiled: plain attributes, because the gate reads them per request."""

    index: int
    spec: LimitSpec
    interval: float  # seconds between requests at the rate (GCRA's emission interval)
    header: str  # the header counted per (lower case), "" unless per = header:<Name>
    per_all: bool
    methods: frozenset[str] | None
    prefix: str | None
    policy: str  # its RateLimit-Policy item
    name: str = field(init=False)
    burst: int = field(init=False)
    dry_run: bool = field(init=False)
    everywhere: bool = field(init=False)  # any method, any path of its routes
    per_client: bool = field(init=False)
    _hashes: dict[str, int] = field(default_factory=dict)
    _items: dict[int, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.name, self.burst, self.dry_run = self.spec.name, self.spec.burst, self.spec.dry_run
        self.everywhere = self.methods is None and self.prefix is None
        self.per_client = not self.per_all and not self.header

    @property
    def fixed_label(self) -> str:
        """What the limit's fixed slot stands for, in logs and ``/stats``."""
        return "all clients" if self.per_all else "untracked keys (the table is full)"

    def covers(self, method: str, path: str) -> bool:
        if self.methods is not None and method not in self.methods:
            return False
        prefix = self.prefix
        return (
            prefix is None
            or path == prefix
            or (path.startswith(prefix) and path[len(prefix)] == "/")
        )

    def key_of(self, request: Request, client: str) -> str:
        """What this request counts as: its client, its header's value (its client when it
        has none, so that leaving the header out is no way round the limit), or ""."""
        if self.per_all:
            return ""
        if self.header:
            value = request.headers.get(self.header)
            if value:
                return value
            return f"client {client}"
        return client

    def item(self, used: float, interval: float) -> str:
        """Its ``RateLimit`` item (draft-ietf-httpapi-ratelimit-headers-10, §4) once a request
        is taken and ``used`` seconds of the burst are in use: ``r`` requests left now, ``t``
        whole seconds until one more fits. The few distinct items are made once each."""
        burst = self.burst
        in_use = used / interval  # requests' worth of the burst in use, fractional
        remaining = int(burst - in_use + 1e-9)
        wait = (
            0
            if remaining >= burst
            else math.ceil((in_use - (burst - remaining - 1)) * interval - 1e-9)
        )
        code = remaining * 1_000_003 + wait
        items = self._items
        made = items.get(code)
        if made is None:
            made = f'"{self.name}";r={min(remaining, burst)};t={wait}'
            if len(items) >= ITEM_CACHE:
                items.clear()
            items[code] = made
        return made

    def hash_of(self, key: str) -> int:
        hashes = self._hashes
        known = hashes.get(key)
        if known is None:
            known = key_hash(self.spec.name, key)
            if len(hashes) >= HASH_CACHE:
                hashes.clear()
            hashes[key] = known
        return known


@dataclass(frozen=True, slots=True)
class RoutePlan:
    """Everything admission checks for one route: its limits, its pool's cap on requests
    in flight (``pool`` -1: none), and whether clients' requests in flight are capped."""

    limits: tuple[Limit, ...]
    pool: int
    pool_max: int
    clients: bool
    single: Limit | None = None  # the one limit, when nothing else applies (the fast path)


def compile_limits(settings: Settings) -> tuple[Limit, ...]:
    specs: list[LimitSpec] = list(settings.limits)
    if settings.admission.rate_limit is not None:
        specs.insert(0, settings.admission.rate_limit)
    limits = []
    for index, spec in enumerate(specs):
        interval = 1.0 / spec.rate
        kind, _, header = spec.per.partition(":")
        limits.append(
            Limit(
                index=index,
                spec=spec,
                interval=interval,
                header=header.lower() if kind == "header" else "",
                per_all=kind == "all",
                methods=frozenset(spec.methods) if spec.methods else None,
                prefix=spec.path_prefix if spec.path_prefix not in ("", "/") else None,
                policy=policy_item(spec.name, spec.burst, interval),
            )
        )
    return tuple(limits)


def route_plans(
    settings: Settings, limits: Sequence[Limit], pool_order: Sequence[str] | None = None
) -> dict[str, RoutePlan]:
    """One plan per route name (every upstream, and ``stats``), only for routes something
    applies to. ``pool_order``: the upstreams the block's pool counters were laid out for
    (the start-up settings' order; default: ``settings``' own)."""
    plans: dict[str, RoutePlan] = {}
    clients = settings.admission.max_client_requests > 0
    pools = list(pool_order) if pool_order is not None else [u.name for u in settings.upstreams]
    for route in (*[u.name for u in settings.upstreams], STATS_ROUTE):
        mine = tuple(
            limit
            for limit in limits
            if limit.spec.every_route
            or (route in limit.spec.routes if limit.spec.routes else route != STATS_ROUTE)
        )
        pool = pools.index(route) if route in pools else -1
        pool_max = settings.upstream(route).max_requests if pool >= 0 else 0
        if mine or pool_max or clients:
            single = mine[0] if len(mine) == 1 and not pool_max and not clients else None
            plans[route] = RoutePlan(mine, pool if pool_max else -1, pool_max, clients, single)
    return plans
