"""The one place that builds httpx objects without running their parsers.

The proxy already holds everything in the form httpx keeps internally: each target's URL was
parsed at start-up, the client's path and query come off the wire already encoded, and header
names and values are bytes. Running ``httpx.Request(...)`` would parse the URL string again
(regexes, quoting, ``ipaddress``) and normalise every header, per request — measured at
about a fifth of a proxied request's time. These functions set the same attributes httpx's
constructors would set, from the parts already in hand.

They rely on httpx 0.28's internals (``URL._uri_reference`` as a ``ParseResult`` named tuple,
``Headers._list`` of ``(raw name, lower-case name, value)`` triples), so ``pyproject.toml``
pins ``httpx>=0.28,<0.29`` and ``tests/test_seam.py`` checks that what they build equals
what the public constructors build. Anything unusual (a non-ASCII target) falls back to
the public constructors.
"""

from __future__ import annotations

from typing import Any

import httpx

Triple = tuple[bytes, bytes, bytes]  # (name as sent, lower-case name, value)
_EMPTY = httpx.ByteStream(b"")


def headers_of(triples: list[Triple]) -> httpx.Headers:
    """``httpx.Headers`` over triples whose second item is already the lower-case name."""
    headers = httpx.Headers.__new__(httpx.Headers)
    headers._list = triples
    headers._encoding = None
    return headers


def triples(headers: httpx.Headers) -> list[Triple]:
    """The header list as httpx keeps it, lower-case names included (no copy)."""
    return headers._list


def url_for(base: httpx.URL, path: str, query: str) -> httpx.URL:
    """``base`` (scheme and authority, parsed once) with the client's path and query, both
    already percent-encoded as they came off the wire."""
    if not (path.isascii() and query.isascii()) or " " in path or " " in query:
        return httpx.URL(str(base).rstrip("/") + path + ("?" + query if query else ""))
    ref = base._uri_reference
    url = httpx.URL.__new__(httpx.URL)
    url._uri_reference = type(ref)(
        ref.scheme, ref.userinfo, ref.host, ref.port, path, query or None, None
    )
    return url


def origin(url: httpx.URL) -> tuple[str, str, int | None]:
    """``(scheme, host, port)`` as the parsed URL holds them: the host in its ASCII form
    (``xn--`` for an internationalised name, what DNS and TLS take), the port None when it is
    the scheme's default. Three attribute reads, where ``url.host`` and ``url.port`` are
    properties that decode the host again."""
    ref = url._uri_reference
    return ref.scheme, ref.host, ref.port


def request_of(
    method: str,
    url: httpx.URL,
    headers: httpx.Headers,
    stream: Any,
    extensions: dict[str, Any],
) -> httpx.Request:
    """An ``httpx.Request`` as its constructor would build it from ``stream=...``; ``stream``
    None means no body. The caller has set the framing headers itself."""
    request = httpx.Request.__new__(httpx.Request)
    request.method = method
    request.url = url
    request.headers = headers
    request.extensions = extensions
    request.stream = _EMPTY if stream is None else stream
    return request


def response_of(
    status: int,
    headers: httpx.Headers,
    stream: httpx.AsyncByteStream,
    request: httpx.Request,
    extensions: dict[str, Any],
) -> httpx.Response:
    """An ``httpx.Response`` as its constructor would build it from ``stream=...``."""
    response = httpx.Response.__new__(httpx.Response)
    response.status_code = status
    response.headers = headers
    response._request = request
    response.next_request = None
    response.extensions = extensions
    response.history = []
    response.is_closed = False
    response.is_stream_consumed = False
    response.default_encoding = "utf-8"
    response.stream = stream
    response._num_bytes_downloaded = 0
    return response


async def close(response: httpx.Response) -> None:
    """``response.aclose()`` without the context httpx wraps around it to attach the request
    to an error the close raises: closing this proxy's transport's streams raises none (it
    hands the connection back or closes it)."""
    if not response.is_closed:
        response.is_closed = True
        await response.stream.aclose()  # type: ignore[union-attr]
