"""The host's last good certificate pair, where a worker that starts later finds it.

Rotation keeps serving the old pair when the files change to a pair that cannot be served
(``service.tls.rotation``). A worker that starts meanwhile (a replacement for one that
crashed or was killed as stalled) has no old pair of its own: loading the files afresh it
would die, and be started again, every second, until someone fixed them. So the pair the
main process validated at start-up, and every pair a worker accepted since, is kept in the
host's private hand-over directory (``service.handover``: mode 0700, removed when the host
stops), and a worker that cannot serve the files starts with it instead.

The bytes are kept under their digest (``tls-<digest>.crt``/``.key``, each written whole)
and a pointer file names the last one, so a reader never pairs one rotation's certificate
with another's key. Pairs are small and rotations rare: older ones stay until the host stops.
"""

from __future__ import annotations

import logging
from datetime import datetime
from pathlib import Path

from service import handover
from service.tls.pair import CertificatePair, Files, PairError, load_pair, read_files

log = logging.getLogger("service.tls")

POINTER = "tls-pair"


def keep(files: Files, folder: Path | None = None) -> None:
    """``files`` (a pair that passed every check) become the host's last good pair; nothing
    without a hand-over directory (no main process: nobody to replace this worker)."""
    folder = folder or handover.directory()
    if folder is None:
        return
    digest = files.digest
    try:
        if (folder / POINTER).read_text() == digest:
            return  # another worker of the host kept it already
    except OSError:
        pass
    handover.put(folder, f"tls-{digest}.crt", files.cert)
    handover.put(folder, f"tls-{digest}.key", files.key)
    handover.put(folder, POINTER, digest.encode())


def load(now: datetime) -> CertificatePair | None:
    """The host's last good pair, loaded and checked again (it may have expired since); None
    when there is none that can be served."""
    folder = handover.directory()
    if folder is None:
        return None
    try:
        digest = (folder / POINTER).read_text()
        cert, key = str(folder / f"tls-{digest}.crt"), str(folder / f"tls-{digest}.key")
        return load_pair(cert, key, read_files(cert, key), now)
    except (OSError, PairError) as exc:
        log.warning("TLS: the host's last good certificate pair cannot be used: %s", exc)
        return None
