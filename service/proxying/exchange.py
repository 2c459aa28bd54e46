"""One exchange with one target: the client's request sent, its streamed response back.

Which target, and whether to try again, is the pool's (``service.pools``); this module only
translates a Sanic request into an httpx request for a given target and classifies what
went wrong.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
from sanic import Request
from sanic.exceptions import PayloadTooLarge

from service.errors import BodyTooLarge, classify
from service.proxying.headers import request_headers
from service.settings import ProxySettings


class RequestBody:
    """The client's body as an async iterator that remembers how far it got.

    ``started`` tells a retry whether any byte was taken from the client (a body can be
    sent only once: it is streamed, never buffered); ``too_large`` tells a failed send
    apart from a client that went over the size limit mid-body.
    """

    def __init__(self, request: Request) -> None:
        self._request = request
        self.started = False
        self.too_large = False

    async def __aiter__(self) -> AsyncIterator[bytes]:
        self.started = True
        try:
            while (chunk := await self._request.stream.read()) is not None:  # type: ignore[union-attr]
                yield chunk
        except PayloadTooLarge:
            self.too_large = True
            raise


def body_of(request: Request) -> RequestBody | None:
    has_body = "content-length" in request.headers or "transfer-encoding" in request.headers
    return RequestBody(request) if has_body else None


async def send(
    request: Request,
    *,
    upstream: str,
    target_url: str,
    client: httpx.AsyncClient,
    proxy: ProxySettings,
    body: RequestBody | None,
) -> httpx.Response:
    """Send ``request`` to ``target_url``; the streamed response, or UpstreamError."""
    headers = request_headers(
        request.headers.items(),
        connection=request.headers.getall("connection", []),
        client_ip=request.ip,
        scheme=forwarded_proto(request),
        host=request.host,
        upstream_host=None if proxy.keep_host else httpx.URL(target_url).netloc.decode("ascii"),
        request_id=getattr(request.ctx, "request_id", None),
    )
    query = request.query_string
    outgoing = httpx.Request(
        request.method,
        target_url + request.path + ("?" + query if query else ""),
        headers=headers,
        content=body,
        extensions={"timeout": client.timeout.as_dict()},
    )
    try:
        return await client.send(outgoing, stream=True)
    except PayloadTooLarge as exc:
        raise BodyTooLarge(proxy.max_body_size) from exc
    except httpx.HTTPError as exc:
        if body is not None and body.too_large:
            # The client's (chunked) body went over the limit while it was being sent: the
            # transport reports that as a failed send, but it is the client's fault.
            raise BodyTooLarge(proxy.max_body_size) from exc
        raise classify(upstream, exc) from exc


def forwarded_proto(request: Request) -> str:
    """``http`` or ``https``: Sanic says ``ws``/``wss`` for a request carrying an Upgrade."""
    scheme = request.scheme
    return {"ws": "http", "wss": "https"}.get(scheme, scheme)
