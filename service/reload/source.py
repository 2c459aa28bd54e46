"""Reading the ``LB_CONFIG`` file for a reload, and watching its content.

The watch compares content, not inodes or modification times: Kubernetes updates a mounted
ConfigMap by pointing a ``..data`` symlink at a new directory, so the path keeps its name,
the file it resolves to is another one, and its mtime may be anything. Each look opens the
path afresh (following every symlink) and hashes what it reads. A change is acted on once the
content has been the same for two looks in a row, so that a file being written in place is
not loaded half-written. SIGHUP waits the same way (:class:`Settling`): whoever sends it may
still be writing the file, or an editor saving it.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

from service.reload.region import MAX_TEXT_BYTES
from service.settings import CONFIG_ENV, SettingsError

SETTLE_LOOK_S = 0.1  # after SIGHUP, the file is read again this much later (a loop turn)...
SETTLE_WITHIN_S = 5.0  # ...until two reads agree; a file still changing by then is refused


@dataclass(frozen=True, slots=True)
class Read:
    """What one read of the file gave: its bytes (None when it could not be read) and a
    fingerprint of the outcome (the SHA-256 of the bytes, or of the reason they are not)."""

    data: bytes | None
    sha256: str
    problem: str | None = None  # why there is no text, in the loader's words


def read_file(path: Path) -> Read:
    """The file's bytes, at most :data:`MAX_TEXT_BYTES` (a larger file is a problem)."""
    try:
        with path.open("rb") as file:
            data = file.read(MAX_TEXT_BYTES + 1)
    except OSError as exc:
        problem = f"{CONFIG_ENV}: cannot read {str(path)!r}: {exc.strerror}"
        return Read(None, _fingerprint(problem), problem)
    if len(data) > MAX_TEXT_BYTES:
        problem = (
            f"{CONFIG_ENV}: {str(path)!r} is over {MAX_TEXT_BYTES} bytes, the most a reload "
            "takes (a restart loads it)"
        )
        return Read(None, _fingerprint(problem), problem)
    return Read(data, hashlib.sha256(data).hexdigest())


def text_of(read: Read, path: Path) -> str:
    """The read's text; :class:`SettingsError` naming the problem when there is none."""
    if read.data is None:
        raise SettingsError(read.problem or f"{CONFIG_ENV}: cannot read {str(path)!r}")
    try:
        return read.data.decode("utf-8")
    except UnicodeDecodeError:
        raise SettingsError(f"{CONFIG_ENV}: {str(path)!r} is not UTF-8 text") from None


def _fingerprint(problem: str) -> str:
    return hashlib.sha256(b"\0" + problem.encode("utf-8")).hexdigest()


class ContentWatch:
    """Says when the file's content has settled on something other than ``known``."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._candidate: str | None = None

    def changed(self, known: str) -> bool:
        """One look. True when the content differs from ``known`` (the SHA-256 of the text
        the last reload read) and was the same at the previous look."""
        seen = read_file(self.path).sha256
        if seen == known:
            self._candidate = None
            return False
        settled = seen == self._candidate
        self._candidate = None if settled else seen
        return settled


class Settling:
    """After a SIGHUP: the file's content once two reads :data:`SETTLE_LOOK_S` apart agree.

    The leader looks on each turn of its loop (never blocking it); a file that is still
    changing :data:`SETTLE_WITHIN_S` after the signal is a problem, as an unreadable one is:
    refused, and the next SIGHUP (or the watch) tries again.
    """

    def __init__(self, path: Path, now: float) -> None:
        self.path = path
        self._last = read_file(path)
        self._next = now + SETTLE_LOOK_S
        self._deadline = now + SETTLE_WITHIN_S

    def look(self, now: float) -> Read | None:
        """None while the content has not settled yet; else what to reload from."""
        if now < self._next:
            return None
        read = read_file(self.path)
        if read.sha256 == self._last.sha256:
            return read
        if now >= self._deadline:
            problem = (
                f"{CONFIG_ENV}: {str(self.path)!r} was still changing {SETTLE_WITHIN_S:g} s "
                "after SIGHUP (send it again once the file is written)"
            )
            return Read(None, _fingerprint(problem), problem)
        self._last, self._next = read, now + SETTLE_LOOK_S
        return None
