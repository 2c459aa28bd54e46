"""Certificates made on the spot for the TLS tests (``cryptography``): a private CA, leaf
certificates it signs for given names, and their PEM files, including the Kubernetes Secret
layout (``tls.crt`` -> ``..data/tls.crt`` -> a timestamped directory) rotated by a symlink
swap, as the kubelet does it."""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

DAY = dt.timedelta(days=1)


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


@dataclass
class Issued:
    """A certificate and its key, in memory and as PEM."""

    cert: x509.Certificate
    key: ec.EllipticCurvePrivateKey

    @property
    def cert_pem(self) -> bytes:
        return self.cert.public_bytes(serialization.Encoding.PEM)

    @property
    def key_pem(self) -> bytes:
        return self.key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )

    @property
    def fingerprint(self) -> str:
        return self.cert.fingerprint(hashes.SHA256()).hex()

    def write(self, folder: Path, cert: str = "tls.crt", key: str = "tls.key") -> tuple[str, str]:
        folder.mkdir(parents=True, exist_ok=True)
        (folder / cert).write_bytes(self.cert_pem)
        (folder / key).write_bytes(self.key_pem)
        return str(folder / cert), str(folder / key)


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


_CA_USAGE = x509.KeyUsage(
    digital_signature=True,
    content_commitment=False,
    key_encipherment=False,
    data_encipherment=False,
    key_agreement=False,
    key_cert_sign=True,
    crl_sign=True,
    encipher_only=False,
    decipher_only=False,
)


def make_ca(common_name: str = "sanic-lb test CA") -> Issued:
    key = ec.generate_private_key(ec.SECP256R1())
    now = _now()
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name(common_name))
        .issuer_name(_name(common_name))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - DAY)
        .not_valid_after(now + 30 * DAY)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(_CA_USAGE, critical=True)
        .sign(key, hashes.SHA256())
    )
    return Issued(cert, key)


def issue(
    ca: Issued,
    common_name: str,
    names: tuple[str, ...] = ("localhost", "127.0.0.1"),
    *,
    valid_for: dt.timedelta = 30 * DAY,
    expired: bool = False,
) -> Issued:
    """A server certificate for ``names`` (DNS names or IP addresses) signed by ``ca``."""
    key = ec.generate_private_key(ec.SECP256R1())
    now = _now()
    start, end = (now - 10 * DAY, now - DAY) if expired else (now - DAY, now + valid_for)
    alt: list[x509.GeneralName] = []
    for name in names:
        try:
            alt.append(x509.IPAddress(ipaddress.ip_address(name)))
        except ValueError:
            alt.append(x509.DNSName(name))
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name(common_name))
        .issuer_name(ca.cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(end)
        .add_extension(x509.SubjectAlternativeName(alt), critical=False)
        .add_extension(
            x509.ExtendedKeyUsage([x509.ExtendedKeyUsageOID.SERVER_AUTH]), critical=False
        )
        .sign(ca.key, hashes.SHA256())
    )
    return Issued(cert, key)


class SecretMount:
    """A Kubernetes Secret volume: ``tls.crt``/``tls.key`` are symlinks through ``..data``
    to a timestamped directory; :meth:`swap` writes a new directory and re-points ``..data``
    with one atomic rename, as the kubelet (and so cert-manager's renewals) does."""

    def __init__(self, root: Path, pair: Issued) -> None:
        self.root = root
        self._generation = 0
        root.mkdir(parents=True, exist_ok=True)
        self.swap(pair)
        for name in ("tls.crt", "tls.key"):
            os.symlink(f"..data/{name}", root / name)
        self.cert, self.key = str(root / "tls.crt"), str(root / "tls.key")

    def swap(self, pair: Issued, *, key_of: Issued | None = None) -> None:
        """Publish ``pair`` (with ``key_of``'s key instead: a mismatched pair)."""
        self._generation += 1
        folder = self.root / f"..{self._generation:04d}"
        folder.mkdir()
        (folder / "tls.crt").write_bytes(pair.cert_pem)
        (folder / "tls.key").write_bytes((key_of or pair).key_pem)
        link = self.root / "..data_tmp"
        os.symlink(folder.name, link)
        os.replace(link, self.root / "..data")
