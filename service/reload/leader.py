"""The reload leader: the one worker of a host that reads, validates and publishes a file.

One worker at a time holds the reload lease (``service.sharedmem.lease``); if it dies,
another takes over within the lease's term. The leader answers the requests the signal
handlers leave in the shared region (SIGHUP, once the file has settled: ``source.Settling``)
and, with ``LB_CONFIG_WATCH``, looks at the
file's content (``source.ContentWatch``). A reload is all or nothing:

- the file is read once, and that text is validated whole by the start-up loader, with the
  environment as the process got it (which still wins over the file);
- anything wrong: nothing changes; one log line names the problem as start-up would, and the
  region keeps it for ``/stats`` (``last_error``). Any exception is such a problem, not only
  a :class:`SettingsError`: a surprise in the loader must refuse the file, not end the
  leader's loop with the file's SHA-256 already recorded (the watch would never look again);
- valid: the settings that need a restart keep their running value (``changes.running``),
  the file's targets are claimed in the slot table (``targets.claim``: it may have no room,
  which is a problem like any other), then the text is published as a new generation, which
  every worker applies within a poll. Once they all run it, the targets it dropped are
  released (``targets.release_unnamed``).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from pathlib import Path

from service.pools import SlotTable
from service.reload import changes, resolved, targets
from service.reload.region import ConfigRegion
from service.reload.source import ContentWatch, Read, Settling, read_file, text_of
from service.settings import Settings, SettingsError, load_settings

log = logging.getLogger("service.reload")

WATCH_EVERY_S = 0.5  # a change is acted on at the second look that sees it: within ~1 s


class Leader:
    """What the lease holder does on each turn of the reload loop."""

    def __init__(
        self,
        region: ConfigRegion,
        table: SlotTable,
        started: Settings,
        path: Path,
        env: Mapping[str, str],
    ) -> None:
        """``started``: the settings the host started with (its restart-only values)."""
        self._region = region
        self._table = table
        self._started = started
        self._path = path
        self._env = env
        self._watch = ContentWatch(path)
        self._next_look = 0.0
        self._sighup: Settling | None = None  # a SIGHUP waiting for the file to settle

    def turn(self, running: Settings, runs_generation: int) -> None:
        """``running``: the settings this worker runs, as of generation ``runs_generation``."""
        if self._region.take_request() and self._sighup is None:
            self._sighup = Settling(self._path, time.monotonic())
        if self._sighup is not None:
            settled = self._sighup.look(time.monotonic())
            if settled is not None:
                self._sighup = None
                self.reload("SIGHUP", running, settled)
        elif running.config_watch and time.monotonic() >= self._next_look:
            self._next_look = time.monotonic() + WATCH_EVERY_S
            if self._watch.changed(self._region.attempted_sha256()):
                self.reload("the file changed", running)
        self._release_dropped(running, runs_generation)

    def reload(self, trigger: str, running: Settings, read: Read | None = None) -> bool:
        """Read (unless ``read`` is what was read), validate and publish the file; True if
        a new generation was published."""
        read = read or read_file(self._path)
        self._region.attempt(read.sha256)
        try:
            text = text_of(read, self._path)
            new = load_settings(env=self._env, text=text)
            if read.sha256 == self._region.published().sha256:
                self._region.unchanged()
                log.info("configuration reload (%s): the file is unchanged", trigger)
                return False
            settings, waiting = changes.running(new, self._started)
            resolved.entries_for(settings, self._started)  # a new ;resolve entry: a restart
            targets.claim(self._table, settings)
        except Exception as exc:  # whatever went wrong, the file is refused and reload goes on
            expected = isinstance(exc, SettingsError | TimeoutError)
            reason = str(exc) if expected else f"{type(exc).__name__} while loading it: {exc}"
            self._region.fail(reason)
            log.error(
                "configuration reload (%s) failed, nothing changed: configuration error: %s",
                trigger, reason, exc_info=not expected,
            )  # fmt: skip
            return False
        generation = self._region.publish(text, read.sha256, waiting)
        restart = f"; needs a restart (kept as running): {', '.join(waiting)}" if waiting else ""
        log.info(
            "configuration reloaded (%s): generation %d, sha256 %s: %s%s",
            trigger, generation, read.sha256[:12], changes.summary(running, settings), restart,
        )  # fmt: skip
        return True

    def _release_dropped(self, running: Settings, runs_generation: int) -> None:
        """Once every worker runs the published generation (or after a grace period), take
        the targets it no longer names out of the slot table."""
        published = self._region.generation
        if self._region.reconciled >= published or runs_generation != published:
            return
        waited = time.time() - self._region.published().loaded_at
        if not self._region.every_worker_runs(published) and waited < targets.RELEASE_AFTER_S:
            return
        for pool, url in targets.release_unnamed(self._table, running):
            log.info("upstream %s target %s left the configuration; draining it", pool, url)
        self._region.mark_reconciled(published)
