"""The configuration region of the shared block: the TOML text every worker runs, and the
state of reloading it, written by one worker and read by all.

Layout (shared, in doubles): a header of counters and stamps, the SHA-256 of the published
text and of the last text a reload looked at, then the last error and the pending-restart
note as UTF-8, then the published text itself, at most :data:`MAX_TEXT_BYTES`. Each worker
row has one more field: the generation that worker runs.

Writers take the region's lock (a :class:`~service.sharedmem.SharedLock`: a writer that dies
holding it does not keep the others out), so one writes at a time (two workers that both
believe they hold the reload lease cannot interleave). Readers never lock: the region's
:class:`~service.sharedmem.Seqlock` is odd while a writer is at work, and a read that saw it
move is retried. Workers poll
:attr:`ConfigRegion.generation`, one read of a double, and copy the text only when it moved.
The signal handlers only add one to the request counter: that much is safe in any process,
at any moment.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TypeVar

from service.sharedmem import Plan, Seqlock, SharedBlock, SharedLock, Texts, WorkerRow, cut
from service.sharedmem.lock import WRITER_TIMEOUT_S

T = TypeVar("T")

MAX_TEXT_BYTES = 64 * 1024  # the largest file a reload takes (a ConfigMap is usually < 4 KiB)
MAX_NOTE_BYTES = 1024  # the last error, the pending-restart note: cut beyond this
LOCK_NAME = "configuration region"

# header fields
(
    _SEQ, _GENERATION, _LENGTH, _LOADED_AT, _REQUESTED, _HANDLED, _APPLIED, _UNCHANGED,
    _FAILED, _ERROR_LEN, _ERROR_AT, _NOTE_LEN, _RECONCILED,
) = range(13)  # fmt: skip
_SHA = 13  # 32 bytes: the published text's SHA-256
_ATTEMPTED = _SHA + 4  # 32 bytes: the SHA-256 of what the last reload (or the start) read
_ERROR = _ATTEMPTED + 4
_NOTE = _ERROR + MAX_NOTE_BYTES // 8
_TEXT = _NOTE + MAX_NOTE_BYTES // 8
_WIDTH = _TEXT + MAX_TEXT_BYTES // 8


@dataclass(frozen=True, slots=True)
class Published:
    """One generation of the configuration: its text, when it was published, its SHA-256."""

    generation: int
    text: str
    sha256: str
    loaded_at: float  # wall clock
    pending_restart: tuple[str, ...]  # settings whose new value waits for a restart


@dataclass(frozen=True, slots=True)
class Outcomes:
    """What reloading has come to on this host, for ``/stats`` and ``/metrics``."""

    applied: int
    unchanged: int
    failed: int
    last_error: str | None  # cleared by the next reload that succeeds
    last_error_at: float | None  # wall clock


class RegionBusy(RuntimeError):
    """A read found a writer at work every time it tried (try again on the next turn)."""


class ConfigLayout:
    """The region's place in the block, reserved on ``plan`` when the app is built."""

    def __init__(self, plan: Plan) -> None:
        self.lock = plan.lock(LOCK_NAME)
        self.shared = plan.shared(_WIDTH)
        self.applied = plan.per_worker(1)


class ConfigRegion:
    """A process's view of the region; writers take ``lock`` (the region's own in the block,
    at ``layout.lock``, unless given)."""

    def __init__(
        self, block: SharedBlock, layout: ConfigLayout, lock: SharedLock | None = None
    ) -> None:
        self._block = block
        self._layout = layout
        self._mem = block.mem
        self._texts = Texts(block.mem)
        self._at = layout.shared.at
        self._lock = lock or block.lock(layout.lock, LOCK_NAME, WRITER_TIMEOUT_S)
        self._seq = Seqlock(block.mem, self._at + _SEQ, self._lock)

    # -- reading (any process, no lock) --------------------------------------------------

    @property
    def generation(self) -> int:
        """The published generation: 0 until a worker publishes the start-up text."""
        return int(self._mem[self._at + _GENERATION])

    def published(self) -> Published:
        return self._consistent(self._read_published)

    def outcomes(self) -> Outcomes:
        return self._consistent(self._read_outcomes)

    def attempted_sha256(self) -> str:
        """The SHA-256 of the text the last reload read (valid or not), or of the start's."""
        return self._consistent(lambda: self._sha(_ATTEMPTED))

    @property
    def reconciled(self) -> int:
        """The last generation whose dropped targets were taken out of the slot table."""
        return int(self._mem[self._at + _RECONCILED])

    def every_worker_runs(self, generation: int) -> bool:
        """Whether every live worker has applied ``generation`` (or a later one)."""
        field = self._layout.applied.at
        return all(self._mem[row + field] >= generation for row in self._block.live_rows())

    # -- requests: from signal handlers, in any process ------------------------------------

    def request(self) -> None:
        """Ask for a reload (SIGHUP). Two requests before the leader looks are one reload."""
        self._mem[self._at + _REQUESTED] += 1

    def take_request(self) -> bool:
        """True, once, for each batch of requests the leader has not yet taken (the lock is
        taken only when there is one: the leader asks ten times a second)."""
        if self._mem[self._at + _REQUESTED] == self._mem[self._at + _HANDLED]:
            return False
        with self._lock.held():
            requested = self._mem[self._at + _REQUESTED]
            if requested == self._mem[self._at + _HANDLED]:
                return False
            self._mem[self._at + _HANDLED] = requested
            return True

    # -- writing (the leader; the first worker at start-up) ----------------------------------

    def start(self, text: str, sha256: str, loaded_at: float) -> bool:
        """Publish the start-up text as generation 1, once per block; True if this did."""
        with self._writing():
            if self._mem[self._at + _GENERATION]:
                return False
            self._put_sha(_ATTEMPTED, sha256)
            self._put_published(text, sha256, loaded_at, ())
            return True

    def attempt(self, sha256: str) -> None:
        """A reload read a text with this SHA-256 (the watch's reference point)."""
        with self._writing():
            self._put_sha(_ATTEMPTED, sha256)

    def publish(self, text: str, sha256: str, pending_restart: tuple[str, ...]) -> int:
        """A new generation; the last error cleared. Returns its number."""
        with self._writing():
            self._mem[self._at + _APPLIED] += 1
            self._put_published(text, sha256, time.time(), pending_restart)
            self._clear_error()
            return int(self._mem[self._at + _GENERATION])

    def unchanged(self) -> None:
        """A reload found the text already running: nothing to publish, no error now."""
        with self._writing():
            self._mem[self._at + _UNCHANGED] += 1
            self._clear_error()

    def fail(self, message: str) -> None:
        """A reload that changed nothing: why, for ``/stats``."""
        with self._writing():
            self._mem[self._at + _FAILED] += 1
            data = cut(message.encode("utf-8"), MAX_NOTE_BYTES)
            self._texts.put(self._at + _ERROR_LEN, self._at + _ERROR, data)
            self._mem[self._at + _ERROR_AT] = time.time()

    def mark_reconciled(self, generation: int) -> None:
        self._mem[self._at + _RECONCILED] = generation

    def applied(self, row: WorkerRow, generation: int) -> None:
        """This worker now runs ``generation`` (its own row's field)."""
        self._mem[row.at + self._layout.applied.at] = generation

    # -- the layout ------------------------------------------------------------------------

    @contextmanager
    def _writing(self) -> Iterator[None]:
        """A writer's turn of the seqlock (a dead writer's is closed by the next one)."""
        with self._seq.write():
            yield

    def _consistent(self, read: Callable[[], T], tries: int = 1000) -> T:
        """``read()`` as of one moment between writers (retried while one is at work);
        :class:`RegionBusy` if a writer kept at it throughout."""
        found = self._seq.read(read, tries)
        if found is None:
            raise RegionBusy("the configuration region was being written throughout the read")
        return found[1]

    def _read_published(self) -> Published:
        at = self._at
        note = self._texts.get(at + _NOTE_LEN, at + _NOTE)
        return Published(
            generation=int(self._mem[at + _GENERATION]),
            text=self._texts.get(at + _LENGTH, at + _TEXT),
            sha256=self._sha(_SHA),
            loaded_at=self._mem[at + _LOADED_AT],
            pending_restart=tuple(note.split(",")) if note else (),
        )

    def _read_outcomes(self) -> Outcomes:
        at = self._at
        length = int(self._mem[at + _ERROR_LEN])
        return Outcomes(
            applied=int(self._mem[at + _APPLIED]),
            unchanged=int(self._mem[at + _UNCHANGED]),
            failed=int(self._mem[at + _FAILED]),
            last_error=self._texts.get(at + _ERROR_LEN, at + _ERROR) if length else None,
            last_error_at=self._mem[at + _ERROR_AT] if length else None,
        )

    def _put_published(
        self, text: str, sha256: str, loaded_at: float, pending_restart: tuple[str, ...]
    ) -> None:
        data = text.encode("utf-8")
        if len(data) > MAX_TEXT_BYTES:
            raise ValueError(f"configuration text over {MAX_TEXT_BYTES} bytes")
        at = self._at
        self._texts.put(at + _LENGTH, at + _TEXT, data)
        self._put_sha(_SHA, sha256)
        self._mem[at + _LOADED_AT] = loaded_at
        note = cut(",".join(pending_restart).encode("utf-8"), MAX_NOTE_BYTES)
        self._texts.put(at + _NOTE_LEN, at + _NOTE, note)
        self._mem[at + _GENERATION] += 1

    def _clear_error(self) -> None:
        self._mem[self._at + _ERROR_LEN] = 0
        self._mem[self._at + _ERROR_AT] = 0

    def _put_sha(self, field: int, sha256: str) -> None:
        self._texts.put_raw(self._at + field, bytes.fromhex(sha256))

    def _sha(self, field: int) -> str:
        return self._texts.raw(self._at + field, 32).hex()
