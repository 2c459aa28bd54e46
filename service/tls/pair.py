"""A certificate chain and its key, read, checked and loaded as one.

Read once as bytes (their sha256 is how rotation notices a change: a Kubernetes Secret or a
cert-manager mount swaps a symlink, so modification times say nothing), then checked with
``cryptography`` — the leaf parses, the key parses and is the leaf's, the leaf has not
expired — because ``ssl`` cannot read a certificate's subject or expiry through any public
API, and OpenSSL's own "key values mismatch" names neither file. Only then does OpenSSL
load the files into a fresh context (``service.tls.contexts.server_context``).

Every failure is a :class:`PairError` whose message names the setting at fault, for the
one line that stops start-up and the one line that refuses a rotation.
"""

from __future__ import annotations

import hashlib
import ssl
from dataclasses import dataclass
from datetime import datetime

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization

from service.tls.contexts import server_context

CERT_VAR, KEY_VAR = "LB_TLS_CERT", "LB_TLS_KEY"
# The largest certificate or key file read: a chain of a dozen certificates is ~20 KiB; a
# larger file (a wrong path, a log file) is refused without being read whole, every second.
MAX_FILE_BYTES = 1024 * 1024
_SPKI = (serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)


class PairError(ValueError):
    """A certificate/key pair that cannot be served; the message names the setting."""


@dataclass(frozen=True, slots=True)
class Files:
    """The two files' bytes as read at one moment, and a digest of both."""

    cert: bytes
    key: bytes

    @property
    def digest(self) -> str:
        return hashlib.sha256(self.cert + b"\0" + self.key).hexdigest()


@dataclass(frozen=True, slots=True)
class CertificatePair:
    """A pair that passed every check, with the context that serves it."""

    context: ssl.SSLContext
    digest: str  # of the files' bytes (see Files)
    subject: str  # RFC 4514, e.g. "CN=lb.example.com,O=Example"
    issuer: str
    not_after: datetime  # UTC
    fingerprint: str  # sha256 of the leaf certificate (DER), as browsers show it

    def expires_in(self, now: datetime) -> float:
        return (self.not_after - now).total_seconds()


def read_files(cert_path: str, key_path: str) -> Files:
    return Files(_read(CERT_VAR, cert_path), _read(KEY_VAR, key_path))


def _read(variable: str, path: str) -> bytes:
    try:
        with open(path, "rb") as file:
            data = file.read(MAX_FILE_BYTES + 1)
    except OSError as exc:
        raise PairError(f"{variable}={path!r} cannot be read: {exc.strerror or exc}") from None
    if len(data) > MAX_FILE_BYTES:
        raise PairError(f"{variable}={path!r} is over {MAX_FILE_BYTES // 1024} KiB, the most read")
    return data


def load_pair(cert_path: str, key_path: str, files: Files, now: datetime) -> CertificatePair:
    """Check ``files`` (the content of the two paths) and load the paths into a context.

    OpenSSL reads the paths again; if their content is no longer ``files`` (a rotation
    landed in between), that is a PairError too, and the caller's next look sees the new
    content settled.
    """
    try:
        leaf = x509.load_pem_x509_certificates(files.cert)[0]
    except ValueError:
        raise PairError(f"{CERT_VAR}={cert_path!r} holds no PEM certificate") from None
    try:
        key = serialization.load_pem_private_key(files.key, password=None)
    except (ValueError, TypeError):
        raise PairError(f"{KEY_VAR}={key_path!r} is not an unencrypted PEM private key") from None
    if key.public_key().public_bytes(*_SPKI) != leaf.public_key().public_bytes(*_SPKI):
        raise PairError(
            f"{KEY_VAR}={key_path!r} is not the key of the certificate in {CERT_VAR}={cert_path!r}"
        )
    not_after = leaf.not_valid_after_utc
    if not_after <= now:
        raise PairError(
            f"{CERT_VAR}={cert_path!r}: the certificate ({leaf.subject.rfc4514_string()}) "
            f"expired on {not_after:%Y-%m-%d %H:%M:%S} UTC"
        )
    try:
        context = server_context(cert_path, key_path)
    except (ssl.SSLError, OSError) as exc:
        raise PairError(f"{CERT_VAR}={cert_path!r}, {KEY_VAR}={key_path!r}: {exc}") from None
    if read_files(cert_path, key_path) != files:
        raise PairError(f"{CERT_VAR}/{KEY_VAR} changed while being loaded")
    return CertificatePair(
        context=context,
        digest=files.digest,
        subject=leaf.subject.rfc4514_string(),
        issuer=leaf.issuer.rfc4514_string(),
        not_after=not_after,
        fingerprint=leaf.fingerprint(hashes.SHA256()).hex(),
    )
