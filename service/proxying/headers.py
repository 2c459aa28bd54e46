"""Header rewriting at the proxy boundary (RFC 9110 §7.6.1 and the X-Forwarded-* family).

Both directions work on bytes, as the headers came off the wire, and each header list is
walked once: the request's fields are read straight from the head Sanic received (no decode
and re-encode), the response's from the transport's ``(name, lower-case name, value)``
triples.
"""

from __future__ import annotations

from collections.abc import Iterable

from service.transport.seam import Triple

HOP_BY_HOP = frozenset(
    {
        b"connection",
        b"keep-alive",
        b"proxy-connection",
        b"te",
        b"trailer",
        b"transfer-encoding",
        b"upgrade",
        b"proxy-authenticate",
        b"proxy-authorization",
    }
)
_SET_BY_US = frozenset({b"x-forwarded-for", b"x-forwarded-proto", b"x-forwarded-host"})
_OWS = b" \t"


def head_fields(head: bytes) -> list[Triple]:
    """The header fields of a request head (request line first, as Sanic keeps it).

    Sanic has already split the head the same way (name up to the first colon), so both
    agree on every field; optional whitespace around the value is not part of it (RFC 9112
    §5.1).
    """
    fields = []
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        fields.append((name, name.lower(), value.strip(_OWS)))
    return fields


def _dropped(fields: Iterable[Triple]) -> frozenset[bytes]:
    """Hop-by-hop names, with every name listed in ``Connection``."""
    named = [
        token.strip(_OWS).lower()
        for _, lower, value in fields
        if lower == b"connection"
        for token in value.split(b",")
    ]
    return HOP_BY_HOP.union(named) if named else HOP_BY_HOP


def upstream_request_fields(
    fields: list[Triple], *, client_ip: bytes, scheme: bytes, host: bytes | None
) -> list[Triple]:
    """The headers sent upstream: end-to-end ones plus X-Forwarded-For/-Proto/-Host.

    ``host`` replaces the client's ``Host`` when the proxy does not keep it.
    """
    drop = _dropped(fields)
    out: list[Triple] = []
    forwarded_for: list[bytes] = []
    client_host = b""
    for field in fields:
        lower = field[1]
        if lower in drop:
            continue
        if lower in _SET_BY_US:
            if lower == b"x-forwarded-for":
                forwarded_for.append(field[2])
            continue
        if lower == b"host":
            client_host = field[2]
            if host is not None:
                continue
        out.append(field)
    if host is not None:
        out.append((b"Host", b"host", host))
    forwarded_for.append(client_ip)
    out.append((b"X-Forwarded-For", b"x-forwarded-for", b", ".join(forwarded_for)))
    out.append((b"X-Forwarded-Proto", b"x-forwarded-proto", scheme))
    if client_host:
        out.append((b"X-Forwarded-Host", b"x-forwarded-host", client_host))
    return out


def client_response_fields(fields: list[Triple]) -> tuple[list[tuple[bytes, bytes]], bytes | None]:
    """The end-to-end response headers for the client as ``(name, value)`` pairs, and the
    ``Content-Length`` apart: Sanic frames the response to the client itself."""
    drop = _dropped(fields)
    out = []
    length = None
    for name, lower, value in fields:
        if lower in drop:
            continue
        if lower == b"content-length":
            length = value
            continue
        out.append((name, value))
    return out, length
