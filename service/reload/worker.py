"""One worker's part in reloading: follow the published generation, lead when it holds the
lease, and say what it runs (``/stats``, ``/metrics``, ``/lb-status``).

Every :data:`TICK_S` the worker compares the region's generation with the one it runs (one
read of a double); when it moved, it parses the published text with the start-up loader
(the same text and environment the leader validated, so the same settings) and swaps its
objects (``apply.swap``). A worker that starts later (a replacement for one that died)
starts from the text the host started with, as the main process had it, and applies the
published generation before it serves its first request.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from sanic import Sanic

from service.pools import SlotTable
from service.reload import changes
from service.reload.apply import Retirements, swap
from service.reload.leader import Leader
from service.reload.region import (
    MAX_TEXT_BYTES,
    ConfigRegion,
    Outcomes,
    Published,
    RegionBusy,
)
from service.settings import Settings, SettingsError, load_settings
from service.settings.model import ConfigSource
from service.sharedmem import Lease
from service.sharedmem.block import process_alive

log = logging.getLogger("service.reload")

TICK_S = 0.1  # a published generation reaches every worker within this, plus one loop turn
LEASE_TERM_S = 2.0  # a dead leader's successor takes over within this
QUIET_S = 60.0  # the same failure of the loop itself is logged at most this often


class ConfigReload:
    """``app.ctx.lb.reload``."""

    def __init__(
        self,
        app: Sanic,
        region: ConfigRegion,
        lease: Lease,
        table: SlotTable,
        path: Path,
        env: Mapping[str, str],
    ) -> None:
        lb = app.ctx.lb
        self._app = app
        self._region = region
        self._lease = lease
        self._row = lb.row
        self._env = env
        self.path = path
        self.started: Settings = lb.settings  # the restart-only values stay these
        self._leader = Leader(region, table, self.started, path, env)
        source = self.started.source or ConfigSource(path=str(path), text="")
        self.runs = Published(0, source.text, source.sha256, lb.row.block.started_wall, ())
        self._outcomes = Outcomes(0, 0, 0, None, None)
        self.retirements = Retirements()
        self.task: asyncio.Task[None] | None = None  # run(), while the worker serves
        self._pid = os.getpid()
        self._last_problem = ("", 0.0)

    def start(self) -> None:
        """Before serving: the start-up text published if this worker is the host's first,
        and whatever generation is published applied. A start-up file over the region's
        size is published by its SHA-256 alone (a reload refuses such a file anyway)."""
        text = self.runs.text if len(self.runs.text.encode()) <= MAX_TEXT_BYTES else ""
        self._region.start(text, self.runs.sha256, self.runs.loaded_at)
        self.follow(serving=False)

    def follow(self, *, serving: bool = True) -> bool:
        """Apply the published generation if this worker does not run it yet."""
        if self._region.generation == self.runs.generation:
            return False
        published = self._region.published()
        if published.sha256 != self.runs.sha256:
            started = time.perf_counter()
            try:  # validated by the leader with the same text and env: a surprise if it fails
                new = load_settings(env=self._env, text=published.text)
                settings, _ = changes.running(new, self.started)
                swap(self._app, settings, self.started, self.retirements, serving=serving)
            except Exception as exc:  # refused, said in /stats; not tried again every tick
                reason = f"worker {self._pid} did not apply generation {published.generation}: "
                expected = isinstance(exc, SettingsError)
                reason += str(exc) if expected else f"{type(exc).__name__}: {exc}"
                log.error("configuration reload: %s", reason, exc_info=not expected)
                with contextlib.suppress(TimeoutError):
                    self._region.fail(reason)
            else:
                log.info(
                    "worker %d runs configuration generation %d (sha256 %s; applied in %.1f ms)",
                    self._pid, published.generation, published.sha256[:12],
                    1000 * (time.perf_counter() - started),
                )  # fmt: skip
        self.runs = published
        self._region.applied(self._row, published.generation)
        return True

    async def run(self) -> None:
        """Forever: lead if this worker holds the lease, then follow. Nothing ends the
        loop but its cancellation: a worker that stopped following would serve an old
        generation for good, and a leader that stopped would end reloading for the host."""
        while True:
            try:
                if self._lease.hold(self._pid, LEASE_TERM_S, process_alive):
                    self._leader.turn(self._app.ctx.lb.settings, self.runs.generation)
                self.follow()
            except (RegionBusy, TimeoutError, OSError, ValueError) as exc:
                if self._news(exc):
                    log.warning("configuration reload: %s (tried again every %.1f s)", exc, TICK_S)
            except Exception as exc:  # a surprise: logged with its traceback, then on
                if self._news(exc):
                    log.exception(
                        "configuration reload: %s (tried again every %.1f s)", exc, TICK_S
                    )
            await asyncio.sleep(TICK_S)

    def _news(self, exc: Exception) -> bool:
        """Whether to log ``exc``: not the same failure again within :data:`QUIET_S`."""
        problem, at = self._last_problem
        now = time.monotonic()
        if str(exc) != problem or now - at > QUIET_S:
            self._last_problem = (str(exc), now)
            return True
        return False

    def outcomes(self) -> Outcomes:
        """The host's reload outcomes (the last ones read, while a writer is at work)."""
        with contextlib.suppress(RegionBusy):
            self._outcomes = self._region.outcomes()
        return self._outcomes

    def describe(self) -> dict[str, Any]:
        """``load-balancer.config`` of ``/stats``: what this worker runs, and how reloading
        went on this host."""
        outcomes = self.outcomes()
        return {
            "generation": self.runs.generation,
            "loaded_at": _iso(self.runs.loaded_at),
            "sha256": self.runs.sha256,
            "last_error": outcomes.last_error,
            "last_error_at": _iso(outcomes.last_error_at) if outcomes.last_error_at else None,
            "path": str(self.path),
            "watch": self._app.ctx.lb.settings.config_watch,
            "reloads": {
                "applied": outcomes.applied,
                "unchanged": outcomes.unchanged,
                "failed": outcomes.failed,
            },
            "pending_restart": list(self.runs.pending_restart),
        }


def _iso(wall: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(wall)) + f".{int(wall % 1 * 1000):03d}Z"
