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
pair, and is not an error. The log lines come from one worker per host (``speaker``, a
lease in the shared block), so a rotation is one line, not one per worker.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from service.settings import TlsSettings
from service.tls.pair import CertificatePair, PairError, load_pair, read_files

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
        self.current = self._load()  # PairError: start-up checked these files already
        self.server_context: ssl.SSLContext = self.current.context
        self.server_context.sni_callback = self._hand_over
        self.rotations = 0
        self.refused: str | None = None  # why the files' present content is not served
        self._bad_digest: str | None = None  # the refused content, once seen
        self._logged_bad: str | None = None
        self._warned: str | None = None  # digest whose expiry warning was logged

    def _load(self) -> CertificatePair:
        files = read_files(self._cert_path, self._key_path)
        return load_pair(self._cert_path, self._key_path, files, self._clock())

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
            self._bad_digest = self._logged_bad = self.refused = None
            self._warn_if_expiring(speaker)
            return
        try:
            pair = load_pair(self._cert_path, self._key_path, files, self._clock())
        except PairError as exc:
            self._refuse(digest, str(exc), speaker)
            return
        self.current, self.rotations = pair, self.rotations + 1
        self._bad_digest = self._logged_bad = self.refused = None
        if speaker:
            log.warning(
                "TLS certificate rotated: now serving %s, expires %s",
                pair.subject, _day(pair.not_after),
            )  # fmt: skip
        self._warn_if_expiring(speaker)

    def _refuse(self, digest: str, reason: str, speaker: bool) -> None:
        settled = digest == self._bad_digest
        self._bad_digest = digest
        if not settled:
            return  # maybe a rotation half-written: judge it on the next look
        self.refused = reason
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
