"""The upstream's answer relayed to the client: its head as it came, its body as it arrives."""

from __future__ import annotations

from collections.abc import Sequence

import httpx
from sanic import Request
from sanic.compat import Header

from service.frontdoor.preformatted import STATUS_LINES, PreformattedResponse
from service.logs import HEADER
from service.proxying.headers import client_response_fields
from service.transport import arrived_whole, seam

_REQUEST_ID = HEADER.encode("ascii")
_LINE = b"%b: %b\r\n"  # a (name, value) field
_NO_BODY = frozenset({204, 304, *range(100, 200)})


class ProxiedResponse(PreformattedResponse):
    """An upstream's response head, sent as is.

    ``fields``: the upstream's end-to-end header fields as the bytes they came in, never
    decoded and encoded again, then the load balancer's own (the request id, RateLimit
    fields, a sticky cookie). ``headers`` holds only what Sanic manages when it formats the
    head itself (a streamed body: Content-Length or chunked; Connection), and is made only
    then: a body sent whole needs none of it (``whole``). Sanic's own ``processed_headers``
    would also add ``content-type: None`` to a response that has none: an upstream's answer
    must reach the client without invented headers.
    """

    __slots__ = ("_headers", "declared_length", "fields")

    def __init__(self, upstream: httpx.Response) -> None:
        # HTTPResponse.__init__ is not called: it would build the Header object that a body
        # sent whole never needs (``headers`` below makes it on first use)
        self.asgi = False
        self.body = None
        self.content_type = None
        self.stream = None
        self._cookies = None
        self._headers: Header | None = None
        self.status = upstream.status_code
        self.fields, self.declared_length = client_response_fields(seam.triples(upstream.headers))

    @property
    def headers(self) -> Header:  # type: ignore[override]
        """What Sanic manages; the upstream's Content-Length is in it from the start."""
        if self._headers is None:
            self._headers = Header()
            if self.declared_length is not None:
                self._headers["content-length"] = self.declared_length.decode("latin-1")
        return self._headers

    @headers.setter
    def headers(self, value: Header) -> None:
        self._headers = value

    def whole(self, size: int, keep_alive: bool) -> bytes | None:
        if self._headers is not None or self.status in _NO_BODY:
            return None  # something asked for Sanic's headers: Sanic formats the head
        framing = b"content-length: %d\r\nconnection: %b\r\n\r\n" % (
            size,
            b"keep-alive" if keep_alive else b"close",
        )
        return (
            STATUS_LINES[self.status] + b"".join([_LINE % field for field in self.fields]) + framing
        )

    @property
    def processed_headers(self) -> list[tuple[bytes, bytes]]:  # type: ignore[override]
        return self.fields + [
            (name.encode("ascii"), f"{value}".encode(errors="surrogateescape"))
            for name, value in self.headers.items()
        ]


async def relay(
    request: Request, upstream: httpx.Response, fields: Sequence[tuple[bytes, bytes]] = ()
) -> int | None:
    """Stream the upstream's response to the client chunk by chunk; the body bytes relayed,
    or None if it broke off. ``fields`` are header fields of the load balancer's own to add.

    A body that has arrived whole by the time its head is relayed (most small answers) goes
    out with the head in one write. If the upstream breaks off mid-body the client
    connection is aborted, so the client sees a truncated response as an error rather than
    a short body that looks complete.
    """
    proxied = ProxiedResponse(upstream)
    if fields:  # the admission's RateLimit fields (service.admission), as bytes already
        proxied.fields += fields
    proxied.fields.append((_REQUEST_ID, request.ctx.request_id.encode()))
    response = await request.respond(proxied)
    if proxied.declared_length is not None:  # the client gets the framing the upstream chose
        whole = arrived_whole(upstream)
        if whole is not None:
            await response.send(whole, end_stream=True)
            return len(whole)
    size = 0
    try:
        async for chunk in upstream.stream:  # type: ignore[union-attr]
            size += len(chunk)
            await response.send(chunk)
        await response.eof()
    except httpx.HTTPError:
        if request.transport is not None:
            request.transport.abort()
        return None
    return size
