"""Header rewriting at the proxy boundary (RFC 9110 §7.6.1 and the X-Forwarded-* family)."""

from __future__ import annotations

from collections.abc import Iterable

HOP_BY_HOP = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-connection",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
        "proxy-authenticate",
        "proxy-authorization",
    }
)

Pairs = list[tuple[str, str]]


def end_to_end(headers: Iterable[tuple[str, str]], connection: list[str]) -> Pairs:
    """Drop hop-by-hop headers, including every header named in ``Connection``."""
    named = {token.strip().lower() for value in connection for token in value.split(",")}
    drop = HOP_BY_HOP | named
    return [(k, v) for k, v in headers if k.lower() not in drop]


def request_headers(
    headers: Iterable[tuple[str, str]],
    *,
    connection: list[str],
    client_ip: str,
    scheme: str,
    host: str,
    upstream_host: str | None,
    request_id: str | None = None,
) -> Pairs:
    """The headers sent upstream: end-to-end ones plus X-Forwarded-For/-Proto/-Host.

    ``upstream_host`` replaces the client's ``Host`` when the proxy does not keep it;
    ``request_id`` replaces the client's ``X-Request-ID`` (it is the client's when sane).
    """
    forwarded_for: list[str] = []
    out: Pairs = []
    for name, value in end_to_end(headers, connection):
        lower = name.lower()
        if lower == "x-forwarded-for":
            forwarded_for.append(value)
        elif lower in ("x-forwarded-proto", "x-forwarded-host") or (
            request_id is not None and lower == "x-request-id"
        ):
            continue  # set below from what this proxy saw
        elif lower != "host" or upstream_host is None:
            out.append((name, value))
    if upstream_host is not None:
        out.append(("Host", upstream_host))
    forwarded_for.append(client_ip)
    out.append(("X-Forwarded-For", ", ".join(forwarded_for)))
    out.append(("X-Forwarded-Proto", scheme))
    if host:
        out.append(("X-Forwarded-Host", host))
    if request_id is not None:
        out.append(("X-Request-ID", request_id))
    return out
