"""The upstream's answer relayed to the client: its head as it came, its body as it arrives."""

from __future__ import annotations

from collections.abc import Sequence

import httpx
from sanic import Request

from service.frontdoor.preformatted import PreformattedResponse
from service.logs import HEADER
from service.proxying.headers import client_response_fields
from service.transport import arrived_whole, seam


class ProxiedResponse(PreformattedResponse):
    """An upstream's response head, sent as is.

    ``self.headers`` holds only what Sanic manages (the framing it chooses: Content-Length,
    or chunked; Connection) and the request id; the upstream's end-to-end headers go out
    first, as the bytes they came in, never decoded and encoded again. Sanic's own
    ``processed_headers`` would also add ``content-type: None`` to a response that has none:
    an upstream's answer must reach the client without invented headers.
    """

    __slots__ = ("declared_length", "upstream_headers")

    def __init__(self, upstream: httpx.Response) -> None:
        super().__init__(status=upstream.status_code)
        self.upstream_headers, length = client_response_fields(seam.triples(upstream.headers))
        self.declared_length = length
        if length is not None:
            self.headers["content-length"] = length.decode("latin-1")

    def leading_fields(self) -> list[tuple[bytes, bytes]]:
        return self.upstream_headers[:]

    @property
    def processed_headers(self) -> list[tuple[bytes, bytes]]:  # type: ignore[override]
        return self.leading_fields() + [
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
    proxied.headers[HEADER] = request.ctx.request_id
    if fields:  # the admission's RateLimit fields (service.admission), as bytes already
        proxied.upstream_headers += fields
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
