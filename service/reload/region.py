"""The configuration region of the shared block: the TOML text every worker runs, and the
state of reloading it, written by one worker and read by all.

Layout (shared, in doubles): a header of counters and stamps, the SHA-256 of the published
text and of the last text a reload looked at, then the last error and the pending-restart
note as UTF-8, then the published text itself, at most :data:`MAX_TEXT_BYTES`. Each worker
row has one more field: the generation that worker runs.

Writers take the block's lock, so one writes at a time (two workers that both believe they
hold the reload lease cannot interleave). Readers never lock: the sequence number is odd
while a writer is at work, and a read that saw it move is retried (a seqlock). Workers poll
:attr:`ConfigRegion.generation`, one read of a double, and copy the text only when it moved.
The signal handlers only add one to the request counter: that much is safe in any process,
at any moment.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from service.sharedmem import Plan, SharedBlock, WorkerRow

MAX_TEXT_BYTES = 64 * 1024  # the largest file a reload takes (a ConfigMap is usually < 4 KiB)
MAX_NOTE_BYTES = 1024  # the last error, the pending-restart note: cut beyond this
LOCK_TIMEOUT_S = 2.0

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


class RegionBusy(RuntimeError):
    """A read found a writer at work every time it tried (try again on the next turn)."""


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


class ConfigLayout:
    """The region's place in the block, reserved on ``plan`` when the app is built."""

    def __init__(self, plan: Plan) -> None:
        self.shared = plan.shared(_WIDTH)
        self.applied = plan.per_worker(1)


class ConfigRegion:
    """A process's view of the region; ``lock`` is the block's (None where one process is
    alone: ``--single-process``, tests)."""

    def __init__(self, block: SharedBlock, layout: ConfigLayout, lock: Any = None) -> None:
        self._block = block
        self._layout = layout
        self._mem = block.mem
        self._bytes = block.mem.cast("B")
        self._at = layout.shared.at
        self._lock = lock

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
        """True, once, for each batch of requests the leader has not yet taken."""
        with self._locked():
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
            data = _cut(message.encode("utf-8"), MAX_NOTE_BYTES)
            self._put_bytes(_ERROR, data)
            self._mem[self._at + _ERROR_LEN] = len(data)
            self._mem[self._at + _ERROR_AT] = time.time()

    def mark_reconciled(self, generation: int) -> None:
        self._mem[self._at + _RECONCILED] = generation

    def applied(self, row: WorkerRow, generation: int) -> None:
        """This worker now runs ``generation`` (its own row's field)."""
        self._mem[row.at + self._layout.applied.at] = generation

    # -- the layout ------------------------------------------------------------------------

    @contextmanager
    def _locked(self) -> Iterator[None]:
        if self._lock is None:
            yield
            return
        if not self._lock.acquire(timeout=LOCK_TIMEOUT_S):
            raise TimeoutError("the shared block's lock was not free within 2 s")
        try:
            yield
        finally:
            self._lock.release()

    @contextmanager
    def _writing(self) -> Iterator[None]:
        """Under the lock, with the sequence number odd until the block ends. A writer that
        died half-way left it odd: the next one starts from there and ends it even."""
        seq_at = self._at + _SEQ
        with self._locked():
            if int(self._mem[seq_at]) % 2 == 0:
                self._mem[seq_at] += 1
            try:
                yield
            finally:
                self._mem[seq_at] += 1

    def _consistent(self, read: Any, tries: int = 1000) -> Any:
        """``read()`` as of one moment between writers (retried while one is at work);
        :class:`RegionBusy` if a writer kept at it for ``tries`` attempts."""
        seq_at = self._at + _SEQ
        for _ in range(tries):
            before = self._mem[seq_at]
            if int(before) % 2 == 0:
                value = read()
                if self._mem[seq_at] == before:
                    return value
            time.sleep(0)
        raise RegionBusy("the configuration region was being written throughout the read")

    def _read_published(self) -> Published:
        at = self._at
        note = self._text(_NOTE, int(self._mem[at + _NOTE_LEN]))
        return Published(
            generation=int(self._mem[at + _GENERATION]),
            text=self._text(_TEXT, int(self._mem[at + _LENGTH])),
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
            last_error=self._text(_ERROR, length) if length else None,
            last_error_at=self._mem[at + _ERROR_AT] if length else None,
        )

    def _put_published(
        self, text: str, sha256: str, loaded_at: float, pending_restart: tuple[str, ...]
    ) -> None:
        data = text.encode("utf-8")
        if len(data) > MAX_TEXT_BYTES:
            raise ValueError(f"configuration text over {MAX_TEXT_BYTES} bytes")
        at = self._at
        self._put_bytes(_TEXT, data)
        self._mem[at + _LENGTH] = len(data)
        self._put_sha(_SHA, sha256)
        self._mem[at + _LOADED_AT] = loaded_at
        note = _cut(",".join(pending_restart).encode("utf-8"), MAX_NOTE_BYTES)
        self._put_bytes(_NOTE, note)
        self._mem[at + _NOTE_LEN] = len(note)
        self._mem[at + _GENERATION] += 1

    def _clear_error(self) -> None:
        self._mem[self._at + _ERROR_LEN] = 0
        self._mem[self._at + _ERROR_AT] = 0

    def _put_bytes(self, field: int, data: bytes) -> None:
        start = (self._at + field) * 8
        self._bytes[start : start + len(data)] = data

    def _text(self, field: int, length: int) -> str:
        start = (self._at + field) * 8
        return bytes(self._bytes[start : start + length]).decode("utf-8", "replace")

    def _put_sha(self, field: int, sha256: str) -> None:
        self._put_bytes(field, bytes.fromhex(sha256))

    def _sha(self, field: int) -> str:
        start = (self._at + field) * 8
        return bytes(self._bytes[start : start + 32]).hex()


def _cut(data: bytes, limit: int) -> bytes:
    """At most ``limit`` bytes, cut on a character boundary, marked when cut."""
    if len(data) <= limit:
        return data
    return data[: limit - 3].decode("utf-8", "ignore").encode("utf-8") + b"..."
