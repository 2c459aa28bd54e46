"""Certificate rotation without a restart, in every worker.

Sanic listens with one context, made at start-up. Its SNI callback — which OpenSSL calls
early in every handshake, with or without a server name — hands the handshake the *current*
context, so a rotation is the swap of one reference: a handshake gets the old pair or the
new one, never half of each, and connections already open keep the session they made (as
nginx's SNI virtual hosts and Envoy's SDS do it). No context in use is ever modified.

Every ``POLL_INTERVAL`` each worker reads both files (small; following symlinks, so a
Kubernetes ``..data`` swap is seen) and compares their sha256 with the pair it serves. A
change is loaded into a fresh context (``service.tls.pair``); if it fails any check, the old
pair stays and the refusal is logged once the same bad content has been seen on two polls
in a row: a rotation that writes the certificate and then the key is briefly a mismatched
pair, and is not an error; content refused once is not parsed again (the same bytes get the
same verdict), only read and hashed. The log lines come from one worker per host
(``speaker``, a lease in the shared block), so a rotation is one line, not one per worker.

A pair a worker accepts becomes the host's last good pair (``last_good``): a worker that
starts while the files cannot be served starts with it, the files' problem in ``refused``.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from service.settings import TlsSettings
from service.tls import last_good
from service.tls.pair import CertificatePair, Files, PairError, load_pair, read_files

log = logging.getLogger("service.tls")

POLL_INTERVAL = 1.0  # seconds between looks at the files: new handshakes switch within ~2 s
WARN_BEFORE_EXPIRY = 14 * 86400.0  # seconds: the certificate's expiry is logged from here


def utcnow() -> datetime:
    return datetime.now(UTC)


class LiveCertificate:
    """The pair this worker serves, its listening context, and the watch on the files."""

    def __init__(self, tls: TlsSettings, *, clock: Callable[[], datetime] = utcnow) -> None:
        self._cert_path, self._key_path = tls.cert, tls.key
        self._clock = clock
        self.rotations = 0
        self.refused: str | None = None  # why the files' present content is not served
        self._bad_digest: str | None = None  # the refused content, once seen
        self._refused_digest: str | None = None  # ...and once settled: not parsed again
        self._logged_bad: str | None = None
        self._warned: str | None = None  # digest whose expiry warning was logged
        self.current = self._load()
        self.server_context: ssl.SSLContext = self.current.context
        self.server_context.sni_callback = self._hand_over

    def _load(self) -> CertificatePair:
        """The files' pair; if they cannot be served (they changed since the host started,
        and rotation refused them), the host's last good pair; PairError if neither."""
        files = None
        try:
            files = read_files(self._cert_path, self._key_path)
            return load_pair(self._cert_path, self._key_path, files, self._clock())
        except PairError as exc:
            pair = last_good.load(self._clock())
            if pair is None:
                raise
            self.refused = str(exc)
            if files is not None:  # refused by the host already, and logged by its speaker
                self._bad_digest = self._refused_digest = self._logged_bad = files.digest
            log.warning(
                "TLS certificate files cannot be served (%s); this worker starts with the "
                "host's last good pair, %s, expires %s",
                exc, pair.subject, _day(pair.not_after),
            )  # fmt: skip
            return pair

    def _hand_over(self, ssl_object: Any, server_name: str | None, context: Any) -> None:
        current = self.current.context
        if current is not context:
            ssl_object.context = current

    def poll(self, speaker: bool) -> None:
        """One look at the files; ``speaker``: this worker logs for the host."""
        try:
            files = read_files(self._cert_path, self._key_path)
        except PairError as exc:
            self._refuse("unreadable", str(exc), speaker)
            return
        digest = files.digest
        if digest == self.current.digest:
            self._bad_digest = self._refused_digest = self._logged_bad = self.refused = None
            self._warn_if_expiring(speaker)
            return
        if digest == self._refused_digest:
            return  # refused already: the same bytes would get the same verdict
        try:
            pair = load_pair(self._cert_path, self._key_path, files, self._clock())
        except PairError as exc:
            self._refuse(digest, str(exc), speaker)
            return
        self.current, self.rotations = pair, self.rotations + 1
        self._bad_digest = self._refused_digest = self._logged_bad = self.refused = None
        if speaker:
            log.warning(
                "TLS certificate rotated: now serving %s, expires %s",
                pair.subject, _day(pair.not_after),
            )  # fmt: skip
        self._warn_if_expiring(speaker)
        self._keep(files)

    def _keep(self, files: Files) -> None:
        """``files`` as the host's last good pair (a replacement worker starts with it)."""
        try:
            last_good.keep(files)
        except OSError as exc:
            log.warning("TLS: the new pair could not be kept for replacement workers: %s", exc)

    def _refuse(self, digest: str, reason: str, speaker: bool) -> None:
        settled = digest == self._bad_digest
        self._bad_digest = digest
        if not settled:
            return  # maybe a rotation half-written: judge it on the next look
        self.refused = reason
        if digest != "unreadable":  # unreadable files are read again: that is the check
            self._refused_digest = digest
        if speaker and self._logged_bad != digest:
            self._logged_bad = digest
            log.error(
                "TLS certificate files changed but cannot be served (%s); still serving %s, "
                "expires %s",
                reason, self.current.subject, _day(self.current.not_after),
            )  # fmt: skip

    def _warn_if_expiring(self, speaker: bool) -> None:
        pair = self.current
        left = pair.expires_in(self._clock())
        if speaker and left < WARN_BEFORE_EXPIRY and self._warned != pair.digest:
            self._warned = pair.digest
            log.warning(
                "TLS certificate %s expires %s, in %.1f days: renew it (LB_TLS_CERT)",
                pair.subject, _day(pair.not_after), left / 86400,
            )  # fmt: skip

    async def watch(self, speaker: Callable[[], bool]) -> None:
        """Forever: poll the files every ``POLL_INTERVAL``."""
        while True:
            try:
                self.poll(speaker())
            except Exception:  # the watch must outlive any surprise
                log.exception("TLS certificate watch failed; trying again")
            await asyncio.sleep(POLL_INTERVAL)

    def describe(self) -> dict[str, Any]:
        """The served certificate for ``/stats`` and ``/lb-status``."""
        pair = self.current
        return {
            "subject": pair.subject,
            "issuer": pair.issuer,
            "not_after": pair.not_after.strftime("%Y-%m-%dT%H:%M:%SZ"),
            "expires_in_s": round(pair.expires_in(self._clock()), 3),
            "fingerprint_sha256": pair.fingerprint,
            "rotations": self.rotations,
            "refused": self.refused,
        }


def _day(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%d %H:%M:%S UTC")
