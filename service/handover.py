"""Files the main process hands to the workers it starts, and workers to their replacements.

A worker that starts later (a replacement for one that crashed or was killed as stalled)
must start from what the host runs, not from whatever the files on disk say by then: the
start-up configuration text (``service.reload``), the last certificate pair a worker of the
host accepted (``service.tls.last_good``). The environment cannot carry them: on Linux one
variable holds at most 128 KiB and all of them 2 MiB, and OpenSSL loads a pair from paths.

So the main process makes one private directory when it starts (``tempfile.mkdtemp``: mode
0700, under the system's temporary directory, never ``/dev/shm``), names it in the
environment its workers inherit (:data:`HANDOVER_ENV`), and removes it when it stops (Sanic's
``main_process_stop`` runs on every exit but SIGKILL). Without a main process (a test
client, ``--single-process``) there is no directory, and nothing is handed over.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Mapping
from pathlib import Path

from sanic import Sanic

HANDOVER_ENV = "LB_HANDOVER_DIR"


def create(app: Sanic) -> Path:
    """The host's directory, made on the first call (in ``main_process_start``)."""
    made: Path | None = getattr(app.ctx, "handover", None)
    if made is None:
        made = Path(tempfile.mkdtemp(prefix="sanic-lb-"))
        app.ctx.handover = made
        os.environ[HANDOVER_ENV] = str(made)
    return made


def remove(app: Sanic) -> None:
    """The directory and all in it removed (``main_process_stop``; again: nothing)."""
    made: Path | None = getattr(app.ctx, "handover", None)
    if made is not None:
        shutil.rmtree(made, ignore_errors=True)
        app.ctx.handover = None
        if os.environ.get(HANDOVER_ENV) == str(made):
            del os.environ[HANDOVER_ENV]


def directory(env: Mapping[str, str] | None = None) -> Path | None:
    """In a worker: the directory its main process made, if any."""
    named = (os.environ if env is None else env).get(HANDOVER_ENV)
    return Path(named) if named else None


def put(folder: Path, name: str, data: bytes) -> Path:
    """``data`` as ``folder/name``, whole or not at all (written aside, then renamed over:
    a reader never sees half of it), readable by this user only."""
    fd, aside = tempfile.mkstemp(dir=folder, prefix=f".{name}.")
    try:
        with os.fdopen(fd, "wb") as file:
            file.write(data)
        os.replace(aside, folder / name)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(aside)
        raise
    return folder / name
