"""What admission shows: ``/stats``' ``load-balancer.limits`` (which ``exposition`` maps to
``/metrics``), and the status page's panel and chart, all read from the shared block (every
worker's row summed, the shared tables read without the lock: a report may be a request
behind, never wrong for longer).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from service.admission.layout import ADMITTED, FACTOR, H_DRY, H_LIMITED, H_OVERLOADED, HISTORY
from service.admission.layout import IN_FLIGHT, LIMITED, MODE, MODE_DEGRADED, MODE_OK, MODE_STARTING
from service.admission.layout import OVERLOADED, PER_LIMIT, PER_POOL, REASON_AT, REASON_LEN
from service.admission.layout import REPLICAS, SHARED_KEYS, SYNCED_AT, UNSHARED_KEYS, WINDOW_S
from service.admission.layout import AdmissionLayout
from service.admission.policy import Limit
from service.admission.remote import dropped_counts
from service.admission.table import RateTable
from service.settings import Settings
from service.sharedmem import SharedBlock, Texts

Entry = dict[str, Any]
TOP_KEYS = 10


@dataclass(frozen=True, slots=True)
class Counts:
    admitted: int
    limited: int
    admitted_in_window: int
    limited_in_window: int


class AdmissionView:
    """Reads for reports. ``layout`` None: no admission feature is configured (nothing
    reserved): the entry then says only that."""

    def __init__(
        self,
        settings: Settings,
        limits: Sequence[Limit],
        layout: AdmissionLayout | None,
        block: SharedBlock | None,
        table: RateTable | None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.settings = settings
        self.limits = tuple(limits)
        self.layout = layout
        self.block = block
        self.table = table
        self.clock = clock
        self._texts = Texts(block.mem) if block is not None else None

    # ---- reading ---------------------------------------------------------------------------

    def _rows(self) -> list[int]:
        assert self.block is not None
        return self.block.claimed_rows()

    def counts(self) -> list[Counts]:
        """Per limit, and last ``LB_MAX_CLIENT_REQUESTS``' refusals: this host's counts."""
        layout, block = self.layout, self.block
        if layout is None or block is None:
            return []
        mem, now = block.mem, self.clock()
        width = PER_LIMIT * (layout.limits + 1)
        lifetime = [0.0] * width
        window = [0.0] * width
        for row in self._rows():
            at = row + layout.counters.at
            for i in range(width):
                lifetime[i] += mem[at + i]
            for bucket in layout.window.window(mem, row + layout.window_at.at, now):
                for i in range(width):
                    window[i] += mem[bucket + i]
        return [
            Counts(
                int(lifetime[i * PER_LIMIT + ADMITTED]),
                int(lifetime[i * PER_LIMIT + LIMITED]),
                int(window[i * PER_LIMIT + ADMITTED]),
                int(window[i * PER_LIMIT + LIMITED]),
            )
            for i in range(layout.limits + 1)
        ]

    def remote_counts(self) -> list[Counts]:
        """Per limit, the other replicas' counts as last read from Redis."""
        layout, block = self.layout, self.block
        if layout is None or block is None or not layout.cluster:
            return []
        mem, now = block.mem, self.clock()
        at = layout.remote.at
        window = [0.0] * (PER_LIMIT * layout.limits)
        for bucket in layout.remote_window.window(mem, layout.remote_window_at, now):
            for i in range(len(window)):
                window[i] += mem[bucket + i]
        return [
            Counts(
                int(mem[at + i * PER_LIMIT + ADMITTED]),
                int(mem[at + i * PER_LIMIT + LIMITED]),
                int(window[i * PER_LIMIT + ADMITTED]),
                int(window[i * PER_LIMIT + LIMITED]),
            )
            for i in range(layout.limits)
        ]

    def pools(self) -> dict[str, Entry]:
        out: dict[str, Entry] = {}
        layout, block = self.layout, self.block
        for index, upstream in enumerate(self.settings.upstreams):
            in_flight = overloaded = 0.0
            if layout is not None and block is not None:
                for row in self._rows():
                    at = row + layout.pool_counters.at + index * PER_POOL
                    in_flight += block.mem[at + IN_FLIGHT]
                    overloaded += block.mem[at + OVERLOADED]
            out[upstream.name] = {
                "max_requests": upstream.max_requests,
                "in_flight": int(in_flight) if upstream.max_requests else None,
                "overloaded": int(overloaded),
            }
        return out

    def cluster(self) -> Entry | None:
        layout, block = self.layout, self.block
        if layout is None or block is None or not layout.cluster:
            return None
        mem, at = block.mem, layout.state.at
        mode = mem[at + MODE]
        status = {MODE_OK: "ok", MODE_DEGRADED: "degraded", MODE_STARTING: "starting"}.get(
            mode, "starting"
        )
        factor = mem[at + FACTOR] or 1.0
        synced = mem[at + SYNCED_AT]
        entry: Entry = {
            "status": status,
            "mode": "share" if mode == MODE_DEGRADED else "shared",
            "replicas": int(mem[at + REPLICAS]) or 1,
            "share": round(1.0 / factor, 4),
            "synced_age_s": round(time.time() - synced, 3) if synced else None,
            "shared_keys": int(mem[at + SHARED_KEYS]),
            "unshared_keys": int(mem[at + UNSHARED_KEYS]),
            "dropped": dropped_counts(mem, layout.dropped.at),
        }
        if mode == MODE_DEGRADED and self._texts is not None:
            entry["reason"] = self._texts.get(at + REASON_LEN, at + REASON_AT)
        return entry

    def limited_keys(self) -> dict[int, list[Entry]]:
        """Per limit, the keys in a limited episode now, most limited first (top 10)."""
        if self.table is None:
            return {}
        now = self.clock()
        by_limit: dict[int, list[Entry]] = {}
        for at, episode in self.table.episodes():
            if episode.limit >= len(self.limits):
                continue
            limit = self.limits[episode.limit]
            key = self.table.label(limit.fixed_label, at)
            by_limit.setdefault(episode.limit, []).append(
                {"key": key, "limited": episode.limited, "for_s": round(now - episode.since, 3)}
            )
        return {
            limit: sorted(keys, key=lambda k: -k["limited"])[:TOP_KEYS]
            for limit, keys in by_limit.items()
        }

    # ---- the documents ---------------------------------------------------------------------

    def entry(self) -> Entry:
        """``load-balancer.limits`` of ``/stats``."""
        admission = self.settings.admission
        counts = self.counts()
        remote = self.remote_counts()
        keys = self.limited_keys()
        cluster = self.cluster()
        factor = 1.0 / cluster["share"] if cluster and cluster["mode"] == "share" else 1.0
        rate: dict[str, Entry] = {}
        for limit in self.limits:
            spec = limit.spec
            own = counts[limit.index] if counts else Counts(0, 0, 0, 0)
            item: Entry = {
                "rate": spec.rate_text,
                "burst": spec.burst,
                "per": spec.per,
                "routes": list(spec.routes) or ["every proxied route"],
                "methods": list(spec.methods) or None,
                "path_prefix": spec.path_prefix or None,
                "dry_run": spec.dry_run,
                "effective_rate_per_s": round(spec.rate / factor, 4),
                "admitted": own.admitted,
                "limited": own.limited,
                "admitted_in_window": own.admitted_in_window,
                "limited_in_window": own.limited_in_window,
                "limited_keys": keys.get(limit.index, []),
            }
            if remote:
                other = remote[limit.index]
                item["cluster"] = {
                    "admitted": own.admitted + other.admitted,
                    "limited": own.limited + other.limited,
                    "admitted_in_window": own.admitted_in_window + other.admitted_in_window,
                    "limited_in_window": own.limited_in_window + other.limited_in_window,
                }
            rate[limit.name] = item
        client = counts[-1] if counts else Counts(0, 0, 0, 0)
        entry: Entry = {
            "rate": rate,
            "window_s": WINDOW_S,
            "headers": admission.rate_limit_headers,
            "trusted_proxies": [str(n) for n in admission.trusted_proxies],
            "max_client_requests": {
                "max": admission.max_client_requests,
                "limited": client.limited,
                "limited_in_window": client.limited_in_window,
            },
            "pools": self.pools(),
        }
        if self.table is not None and self.layout is not None and self.block is not None:
            misc = [0.0, 0.0]
            for row in self._rows():
                misc[0] += self.block.mem[row + self.layout.misc.at]
                misc[1] += self.block.mem[row + self.layout.misc.at + 1]
            in_use, counted_at = self.table.in_use()
            entry["table"] = {
                "keys": self.layout.keys,
                "in_use": in_use,  # counted every few seconds: a scan of the whole table
                "in_use_age_s": round(time.time() - counted_at, 3) if counted_at else None,
                "untracked_requests": int(misc[0]),
                "lock_timeouts": int(misc[1]),
            }
        if cluster is not None:
            entry["cluster"] = cluster
        return entry

    def history(self) -> list[Entry]:
        """The status page's chart: per complete 5 s bucket of the last 15 minutes, limited,
        would-be-limited (dry run) and overloaded requests per second, this host's."""
        layout, block = self.layout, self.block
        if layout is None or block is None:
            return []
        mem, now = block.mem, time.time()
        current = int(now / HISTORY.resolution_s)
        merged: dict[int, list[float]] = {}
        for row in self._rows():
            for epoch, at in HISTORY.stamped(mem, row + layout.history.at, now):
                if epoch >= current:
                    continue
                values = merged.setdefault(epoch, [0.0, 0.0, 0.0])
                for i in (H_LIMITED, H_DRY, H_OVERLOADED):
                    values[i] += mem[at + i]
        step = HISTORY.resolution_s
        return [
            {
                "t": epoch * step,
                "limited_per_s": round(values[H_LIMITED] / step, 3),
                "dry_run_per_s": round(values[H_DRY] / step, 3),
                "overloaded_per_s": round(values[H_OVERLOADED] / step, 3),
            }
            for epoch, values in sorted(merged.items())
        ]
