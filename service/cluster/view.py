"""Reading the cluster for ``/stats`` and ``/metrics``: every replica's figures in one round
trip, merged with this host's own (always fresh) figures into one Snapshot.

A replica counts as *live* while it published within ``stale_after`` seconds: its gauges
(open sockets, workers) count and it is one of ``replicas``. Its window figures age out of
the window by themselves once it stops; its lifetime counters keep counting, first from its
own field and, once the reaper has folded it in, from the retired counters. When Redis
cannot be read within the deadline, the answer is this host's figures alone with
``status: "degraded"`` and the reason: never an error, never a wait past the deadline.
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass
from collections.abc import Callable
from typing import Any

import orjson

from service.cluster.redis_store import RedisStore
from service.cluster.replica import Published
from service.cluster.targets import cluster_targets
from service.metrics import WINDOW_S, HostFigures, MetricsStore, Snapshot, merge, to_snapshot
from service.metrics.figures import WINDOW_RING
from service.metrics.history import History
from service.redisconn import RedisUnavailable
from service.settings import ClusterSettings

Entry = dict[str, Any]
SKIPPED_SHOWN = 10  # malformed members listed with their reason in /stats


@dataclass(frozen=True, slots=True)
class Remote:
    """What the other replicas hold, as last read: each one, and all of them merged."""

    others: list[Published]  # sorted by id
    merged: HostFigures  # their counters, rings and instants, and the retired counters
    retired_replicas: int
    retired_requests: int
    malformed: int
    skipped: list[Entry]  # the malformed members: {id, reason}, the first SKIPPED_SHOWN


class ClusterView:
    def __init__(
        self,
        store: RedisStore,
        settings: ClusterSettings,
        replica: str,
        figures: Callable[[], HostFigures],
    ) -> None:
        """``figures()`` is this host's figures, as its publisher publishes them."""
        self._store = store
        self._figures = figures
        self._settings = settings
        self.replica = replica
        self.stale_after = max(1.0, 4 * settings.publish_interval)
        self._cached: tuple[Any, Remote] | None = None

    async def read(self, local: MetricsStore, *, history: bool = False) -> tuple[Snapshot, Entry]:
        """The whole cluster's snapshot and the ``cluster`` entry of ``/stats``; ``history``:
        with this host's last 15 minutes (the status page's charts)."""
        try:
            async with self._store.deadline():
                documents, retired, histories = await self._store.read(history=history)
        except RedisUnavailable as exc:
            return self._degraded(local, exc.reason, history)
        now = time.time()
        own = self._figures()
        remote = self._remote(documents, retired)
        others = remote.others
        live = [p for p in others if now - p.published_at <= self.stale_after]
        merged = merge([own, remote.merged], live=[own, *(p.figures for p in live)])
        snapshot = to_snapshot(merged, now, local.snapshot(history=history))
        if snapshot.history is not None:
            snapshot = dataclasses.replace(
                snapshot, history=self._merged_history(snapshot.history, histories, now)
            )
        entry: Entry = {
            "replicas": 1 + len(live),
            "status": "ok",
            "name": self._settings.name,
            "replica": self.replica,
            "members": [
                _member(self.replica, own, now, True, 0.0),
                *(_member(p.id, p.figures, now, p in live, now - p.published_at) for p in others),
            ],
            "targets": cluster_targets(merged),
            "retired_replicas": remote.retired_replicas,
            "retired_requests": remote.retired_requests,
        }
        if remote.malformed:
            entry["malformed_members"] = remote.malformed
            entry["skipped_members"] = remote.skipped
        return snapshot, entry

    async def aclose(self) -> None:
        """Close the connection to Redis (the publisher shares it)."""
        await self._store.aclose()

    def _remote(self, documents: dict[str, bytes], retired: dict[str, bytes]) -> Remote:
        """The other replicas' figures, parsed and merged (gauges aside): reused while Redis
        holds exactly the same bytes, so many ``/stats`` calls within one publishing interval
        parse and merge them once."""
        key = (tuple(sorted(documents.items())), tuple(sorted(retired.items())))
        if self._cached is not None and self._cached[0] == key:
            return self._cached[1]
        others: list[Published] = []
        malformed = 0
        skipped: list[Entry] = []
        now = time.time()
        for replica, raw in documents.items():
            if replica == self.replica:
                continue  # this host's own figures are read fresh, not as last published
            try:
                others.append(Published.parse(replica, orjson.loads(raw), now))
            except (ValueError, TypeError, KeyError, AttributeError) as exc:
                malformed += 1
                if len(skipped) < SKIPPED_SHOWN:
                    skipped.append({"id": replica[:200], "reason": _why(exc)})
        retired_counters: list[HostFigures] = []
        for replica, raw in retired.items():
            if replica == self.replica or replica in documents:
                continue  # published again since it was retired: its document counts
            try:
                counters = orjson.loads(raw)
                retired_counters.append(
                    HostFigures(counters={str(k): float(v) for k, v in counters.items()})
                )
            except (ValueError, TypeError, AttributeError) as exc:
                malformed += 1
                if len(skipped) < SKIPPED_SHOWN:
                    skipped.append({"id": replica[:200], "reason": f"retired: {_why(exc)}"})
        remote = Remote(
            others=sorted(others, key=lambda p: p.id),
            merged=merge([*(p.figures for p in others), *retired_counters], live=()),
            retired_replicas=len(retired_counters),
            retired_requests=int(sum(r.counters.get("total", 0) for r in retired_counters)),
            malformed=malformed,
            skipped=skipped,
        )
        self._cached = (key, remote)
        return remote

    def _merged_history(self, own: History, histories: dict[str, bytes], now: float) -> History:
        """This host's 15 minutes with every other replica's (a malformed one is skipped:
        its figures are still counted, only its chart points are missing)."""
        for replica, raw in histories.items():
            if replica == self.replica:
                continue  # this host's own, published a little while ago: the fresh one counts
            try:
                own = own.merged(History.from_wire(orjson.loads(raw), now))
            except (orjson.JSONDecodeError, ValueError, TypeError, IndexError):
                continue
        return own

    def _degraded(
        self, local: MetricsStore, reason: str, history: bool = False
    ) -> tuple[Snapshot, Entry]:
        return local.snapshot(history=history), {
            "replicas": 1,
            "status": "degraded",
            "reason": reason,
            "name": self._settings.name,
            "replica": self.replica,
        }


def _why(exc: BaseException) -> str:
    """Why a member's document was skipped, short enough for ``/stats``."""
    if isinstance(exc, KeyError):
        return f"no field {exc}"[:200]
    return f"{type(exc).__name__}: {exc}"[:200]


def _member(replica: str, figures: HostFigures, now: float, live: bool, age: float) -> Entry:
    window = 0.0
    if ring := figures.rings.get(WINDOW_RING):
        window = sum(bucket.get(0, 0.0) for bucket in ring.in_window(now))
    return {
        "id": replica,
        "live": live,
        "published_age_s": round(max(0.0, age), 3),
        "total_requests": int(figures.counters.get("total", 0)),
        "requests_per_second": round(window / WINDOW_S, 3),
        "ws_connections": int(figures.gauges.get("ws_open", 0)) if live else 0,
        "workers": int(figures.gauges.get("workers", 0)) if live else 0,
    }
