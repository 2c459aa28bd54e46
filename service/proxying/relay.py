"""The upstream's answer relayed to the client: its head as it came, its body as it arrives."""

from __future__ import annotations

from collections.abc import Sequence

import httpx
from sanic import Request

from service.preformatted import PreformattedResponse
from service.logs import HEADER
from service.proxying.headers import client_response_fields
from service.transport import arrived_whole, seam

_REQUEST_ID = HEADER.encode("ascii")


class ProxiedResponse(PreformattedResponse):
    """An upstream's response head, sent as is: its end-to-end fields as the bytes they came
    in, never decoded and encoded again, then the load balancer's own (the request id,
    RateLimit fields, a sticky cookie); its Content-Length apart, for the framing."""

    __slots__ = ()

    def __init__(self, upstream: httpx.Response) -> None:
        fields, length = client_response_fields(seam.triples(upstream.headers))
        super().__init__(upstream.status_code, fields, declared_length=length)


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
