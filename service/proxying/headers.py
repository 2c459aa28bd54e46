"""Header rewriting at the proxy boundary (RFC 9110 §7.6.1 and the X-Forwarded-* family).

Both directions work on bytes, as the headers came off the wire, and each header list is
walked once: the request's fields are read straight from the head Sanic received (no decode
and re-encode), the response's from the transport's ``(name, lower-case name, value)``
triples.

The forwarding headers (``X-Forwarded-For/-Proto/-Host/-Port``, ``X-Real-IP``,
``Forwarded``) are believed only from a trusted proxy (``LB_TRUSTED_PROXIES``), as Traefik's
``forwardedHeaders.trustedIPs`` does. From anyone else they were written by the client, and
an upstream reading the leftmost ``X-Forwarded-For`` entry would be told whatever it wrote:
so they are removed, and the load balancer's own sent instead (``X-Forwarded-For``: the
peer alone; ``-Proto``: the listener's scheme; ``-Host``: the client's ``Host``; ``X-Real-IP``
the client; no ``-Port`` and no ``Forwarded``, as nginx sends neither by default). From a
trusted proxy they are kept, its ``X-Forwarded-For`` chain gets the peer's own address
appended (each hop appends the address it received the request from, as Envoy and nginx's
``$proxy_add_x_forwarded_for`` do), and ours are added only where it sent none.
``X-Real-IP`` is always ours: the client as the load balancer resolved it
(``service.frontdoor.client``), the address its own log and limits use.
"""

from __future__ import annotations


from collections.abc import Iterable

from service.transport.fields import split_fields
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
# the client's trace context is replaced by the load balancer's (service.tracing)
_TRACE_CONTEXT = frozenset({b"traceparent", b"tracestate"})
# believed only from a trusted proxy (see the module docstring)
FORWARDING = frozenset(
    {
        b"x-forwarded-for",
        b"x-forwarded-proto",
        b"x-forwarded-host",
        b"x-forwarded-port",
        b"x-real-ip",
        b"forwarded",
    }
)
_OWS = b" \t"
# every name the loop below treats otherwise than passing it on
_SPECIAL = HOP_BY_HOP | FORWARDING | _TRACE_CONTEXT | {b"x-request-id", b"host"}


def _named(values: Iterable[bytes]) -> frozenset[bytes]:
    """The names a ``Connection`` field's values list that are not hop-by-hop already (for
    ``keep-alive``, the usual value, none): the other fields to drop."""
    named = {token.strip(_OWS).lower() for value in values for token in value.split(b",")}
    return frozenset(named - HOP_BY_HOP)


def _sort_fields(
    fields: list[Triple],
    trusted_peer: bool,
    host: bytes | None,
    request_id: bytes | None,
    drop_underscored: bool,
) -> tuple[list[Triple], list[bytes], list[bytes], bytes, bool, bool]:
    """Every field of a request that holds a special one (``_SPECIAL``), one by one: the
    fields kept, the ``Connection`` values, the ``X-Forwarded-For`` values (from a trusted
    peer), the client's ``Host``, and whether a trusted peer's ``X-Forwarded-Proto`` and
    ``X-Forwarded-Host`` are kept."""
    out: list[Triple] = []
    forwarded_for: list[bytes] = []
    connection: list[bytes] = []
    client_host = b""
    kept_proto = kept_host = False
    for name, lower, value in fields:
        if lower not in _SPECIAL:  # most fields: passed on as they came
            if not (drop_underscored and b"_" in lower):
                out.append((name, lower, value))
        elif lower in HOP_BY_HOP:
            if lower == b"connection":
                connection.append(value)
        elif lower in FORWARDING:
            if not trusted_peer or lower == b"x-real-ip":
                continue
            if lower == b"x-forwarded-for":
                forwarded_for.append(value)
                continue
            kept_proto = kept_proto or lower == b"x-forwarded-proto"
            kept_host = kept_host or lower == b"x-forwarded-host"
            out.append((name, lower, value))
        elif lower in _TRACE_CONTEXT or (lower == b"x-request-id" and request_id is not None):
            continue
        elif lower == b"host":
            client_host = value
            if host is None:
                out.append((name, lower, value))
        else:  # x-request-id, kept (no id of the load balancer's to send instead)
            out.append((name, lower, value))
    return out, connection, forwarded_for, client_host, kept_proto, kept_host


def upstream_request_fields(
    head: bytes,
    *,
    peer: bytes,
    client: bytes,
    trusted_peer: bool,
    scheme: bytes,
    host: bytes | None,
    request_id: bytes | None = None,
    drop_underscored: bool = False,
    traceparent: bytes | None = None,
    tracestate: bytes | None = None,
) -> list[Triple]:
    """The headers sent upstream, from the request head as Sanic received it (request line
    first): end-to-end ones, then the forwarding headers (module docstring).

    Sanic has split the same head the same way (name up to the first colon), so both agree
    on every field; optional whitespace around a value is not part of it (RFC 9112 §5.1).
    ``peer``: the TCP peer's address; ``client``: the resolved client; ``trusted_peer``:
    the peer is one of ``LB_TRUSTED_PROXIES``. ``host`` replaces the client's ``Host`` when
    the proxy does not keep it; ``request_id`` replaces the client's ``X-Request-ID`` (it
    is the client's when sane). ``drop_underscored``: the head has header names holding
    ``_`` that are not to be forwarded (the front door found them, ``LB_UNDERSCORES_IN_HEADERS``).
    The client's ``traceparent`` and ``tracestate`` are never passed on as they came: the
    load balancer sends its own (``traceparent``), and ``tracestate`` when it was valid.
    One pass over the fields; a second over the kept ones only when ``Connection`` names
    other headers.
    """
    out, connection, forwarded_for, client_host, kept_proto, kept_host = _sort_fields(
        split_fields(head), trusted_peer, host, request_id, drop_underscored
    )
    named = _named(connection) if connection else None
    if named:
        out = [field for field in out if field[1] not in named]
    if host is not None:
        out.append((b"Host", b"host", host))
    forwarded_for.append(peer)
    out.append((b"X-Forwarded-For", b"x-forwarded-for", b", ".join(forwarded_for)))
    if not kept_proto:
        out.append((b"X-Forwarded-Proto", b"x-forwarded-proto", scheme))
    if client_host and not kept_host:
        out.append((b"X-Forwarded-Host", b"x-forwarded-host", client_host))
    out.append((b"X-Real-IP", b"x-real-ip", client))
    if request_id is not None:
        out.append((b"X-Request-ID", b"x-request-id", request_id))
    if traceparent is not None:
        out.append((b"traceparent", b"traceparent", traceparent))
        if tracestate is not None:
            out.append((b"tracestate", b"tracestate", tracestate))
    return out


def response_head_fields(head: bytes) -> list[Triple]:
    """The header fields of a response head (status line first, blank line last)."""
    fields = []
    for line in head.rstrip(b"\r\n").split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        fields.append((name, name.lower(), value.strip(_OWS)))
    return fields


def client_response_fields(fields: list[Triple]) -> tuple[list[tuple[bytes, bytes]], bytes | None]:
    """The end-to-end response headers for the client as ``(name, value)`` pairs, and the
    ``Content-Length`` apart: Sanic frames the response to the client itself. One pass; a
    second only when ``Connection`` names a field that is not hop-by-hop already (a lone
    ``keep-alive``, the usual value, names none)."""
    out = []
    length = None
    connection = []
    for name, lower, value in fields:
        if lower in HOP_BY_HOP:
            if lower == b"connection":
                connection.append(value)
        elif lower == b"content-length":
            length = value
        else:
            out.append((name, value))
    if connection and connection != [b"keep-alive"]:
        named = _named(connection)
        if named:
            out = [(name, value) for name, value in out if name.lower() not in named]
            if b"content-length" in named:
                length = None
    return out, length
