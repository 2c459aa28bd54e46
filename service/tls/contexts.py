"""The two TLS policies: what the front door accepts from clients, and how upstreams are
trusted. Each is one function building a fresh ``ssl.SSLContext``, so a rotated
certificate gets exactly the same policy as the first one.

Front door: Mozilla's "intermediate" configuration (TLS 1.2 and 1.3; for 1.2 only the ECDHE
and DHE suites with AEAD ciphers; OpenSSL's default TLS 1.3 suites, which are Mozilla's),
no compression (CRIME), no renegotiation (client-initiated renegotiation is a cheap CPU
attack), ALPN ``http/1.1`` (the only protocol Sanic serves here). The DHE suites stay in the
list as Mozilla writes it, but OpenSSL offers them only with DH parameters, which are not
loaded: ECDHE is what clients get.

Upstreams: the system CAs (or ``LB_UPSTREAM_CA`` instead of them, as nginx's
``proxy_ssl_trusted_certificate``), host name checked, TLS 1.2 at least; or, with
``LB_UPSTREAM_TLS_VERIFY=false``, no verification at all.
"""

from __future__ import annotations

import ssl

from service.settings import TlsSettings

MOZILLA_INTERMEDIATE = ":".join(
    (
        "ECDHE-ECDSA-AES128-GCM-SHA256",
        "ECDHE-RSA-AES128-GCM-SHA256",
        "ECDHE-ECDSA-AES256-GCM-SHA384",
        "ECDHE-RSA-AES256-GCM-SHA384",
        "ECDHE-ECDSA-CHACHA20-POLY1305",
        "ECDHE-RSA-CHACHA20-POLY1305",
        "DHE-RSA-AES128-GCM-SHA256",
        "DHE-RSA-AES256-GCM-SHA384",
        "DHE-RSA-CHACHA20-POLY1305",
    )
)
ALPN = ["http/1.1"]


def server_context(cert_path: str, key_path: str) -> ssl.SSLContext:
    """The front door's context for one certificate chain and key (``ssl.SSLError`` or
    ``OSError`` if OpenSSL will not load them)."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.maximum_version = ssl.TLSVersion.TLSv1_3
    context.set_ciphers(MOZILLA_INTERMEDIATE)
    context.options |= ssl.OP_NO_COMPRESSION | ssl.OP_NO_RENEGOTIATION
    context.set_alpn_protocols(ALPN)
    context.load_cert_chain(cert_path, key_path)
    return context


def upstream_context(tls: TlsSettings) -> ssl.SSLContext:
    """The context for ``https://`` targets (``ssl.SSLError``/``OSError`` for a bad CA file)."""
    if not tls.upstream_verify:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    else:
        # cafile given: only that bundle is trusted; else the system's CA store
        context = ssl.create_default_context(cafile=tls.upstream_ca or None)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.set_alpn_protocols(ALPN)
    return context
