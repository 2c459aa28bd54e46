"""One exchange with one target: the client's request sent, its streamed response back.

Which target, and whether to try again, is the pool's (``service.pools``); this module only
turns a Sanic request into an ``httpx.Request`` for a given target — from parts already in
hand: the head's bytes, the target's URL parsed at start-up (``service.transport.seam``) —
and classifies what went wrong.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
from sanic import Request
from sanic.exceptions import PayloadTooLarge

from service.errors import BodyTooLarge, classify
from service.pools import Target
from service.proxying.forwarding import upstream_fields
from service.settings import ProxySettings
from service.tracing import RequestTrace, error_type_of
from service.transport import seam

_CHUNKED = (b"Transfer-Encoding", b"transfer-encoding", b"chunked")


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


def outgoing(
    request: Request,
    target: Target,
    proxy: ProxySettings,
    body: RequestBody | None,
    traceparent: bytes | None = None,
    tracestate: bytes | None = None,
) -> httpx.Request:
    """The request for ``target``: the client's method, path, query and end-to-end headers,
    X-Forwarded-* from what the connection knows, the attempt's trace context, and the
    body's framing."""
    fields = upstream_fields(
        request, None if proxy.keep_host else target.authority, traceparent, tracestate
    )
    if body is not None and "content-length" not in request.headers:
        fields.append(_CHUNKED)  # the client's chunked body goes on chunked
    if "host" not in request.headers:
        fields.insert(0, (b"Host", b"host", target.authority))
    return seam.request_of(
        request.method,
        seam.url_for(target.base_url, request.path, request.query_string),
        seam.headers_of(fields),
        body,
        _extensions(target, proxy),
    )


def _extensions(target: Target, proxy: ProxySettings) -> dict[str, object]:
    """httpx's request extensions: the timeouts, and for an https target resolved from a
    name (``;resolve``) that name as SNI and the one verified: the URL holds the address."""
    if target.origin and target.base_url.scheme == "https":
        return {"timeout": proxy.timeouts, "sni_hostname": target.origin}
    return {"timeout": proxy.timeouts}


async def send(
    request: Request,
    *,
    upstream: str,
    target: Target,
    client: httpx.AsyncClient,
    proxy: ProxySettings,
    body: RequestBody | None,
    trace: RequestTrace,
) -> httpx.Response:
    """Send ``request`` to ``target`` as one attempt of ``trace``; the streamed response,
    or UpstreamError."""
    traceparent = trace.attempt(target, upstream, request.method)
    try:
        response = await client.send(
            outgoing(request, target, proxy, body, traceparent, trace.tracestate), stream=True
        )
    except PayloadTooLarge as exc:
        trace.failed("body_too_large")
        raise BodyTooLarge(proxy.max_body_size) from exc
    except httpx.HTTPError as exc:
        if body is not None and body.too_large:
            # The client's (chunked) body went over the limit while it was being sent: the
            # transport reports that as a failed send, but it is the client's fault.
            trace.failed("body_too_large")
            raise BodyTooLarge(proxy.max_body_size) from exc
        error = classify(upstream, exc)
        trace.failed(error_type_of(error.reason))
        raise error from exc
    trace.answered(response.status_code)
    return response
