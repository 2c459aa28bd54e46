"""The reverse proxy: every path no local endpoint claims is routed and streamed upstream.

request -> :class:`~service.routing.Router` -> upstream client -> streamed response, with the
request measured once, here, when its last byte has been handed to the client.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from dataclasses import dataclass

import httpx
from sanic import Blueprint, Request
from sanic.compat import Header
from sanic.exceptions import PayloadTooLarge
from sanic.response import HTTPResponse, json, redirect

from service.errors import UpstreamError, from_httpx
from service.headers import end_to_end, request_headers
from service.metrics import RequestSample
from service.routing import BadPath, Forward, Redirect

bp = Blueprint("proxy")

LOCAL = "local"  # the route of a request the proxy answered itself (redirect, bad path)
METHODS = ("GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS")


class ProxiedResponse(HTTPResponse):
    """An upstream's response head, sent as is.

    Sanic's own ``processed_headers`` would add ``content-type: None`` to a response that
    has no content type; an upstream's answer must reach the client without invented headers.
    """

    @property
    def processed_headers(self):  # type: ignore[override]
        return (
            (name.encode("ascii"), f"{value}".encode(errors="surrogateescape"))
            for name, value in self.headers.items()
        )


@bp.route("/", methods=METHODS, stream=True, name="root")
@bp.route("/<path:path>", methods=METHODS, stream=True, name="path")
async def proxy(request: Request, path: str = "") -> HTTPResponse | None:
    """Measure the whole exchange once, whatever its outcome."""
    started = time.perf_counter()
    outcome = Outcome()
    try:
        return await _exchange(request, outcome)
    finally:
        duration = time.perf_counter() - started
        request.app.ctx.metrics.record(
            RequestSample.of(request, outcome.route, outcome.status, duration, outcome.proxy_error)
        )


@dataclass(slots=True)
class Outcome:
    """What the measurement needs to know of an exchange, filled in as it happens."""

    route: str = LOCAL
    status: int = 0
    proxy_error: bool = False


async def _exchange(request: Request, outcome: Outcome) -> HTTPResponse | None:
    """Route, forward and stream one request.

    Returns a response for Sanic to send (small, locally made ones, and HEAD answers), or
    None when the upstream's response has already been streamed to the client.
    """
    try:
        decision = request.app.ctx.router.resolve(request.path, request.query_string)
    except BadPath as exc:
        return _local(outcome, json({"error": "bad request", "detail": str(exc)}, 400))
    if isinstance(decision, Redirect):
        return _local(outcome, redirect(decision.location, status=308))
    outcome.route = decision.route.upstream
    limit = request.app.ctx.settings.proxy.max_body_size
    if limit and _declared_length(request) > limit:
        return _local(outcome, _too_large(limit))
    try:
        upstream = await _open_upstream(request, decision, limit)
    except UpstreamError as exc:
        outcome.proxy_error = True
        return _local(outcome, json(exc.body(), status=exc.status))
    except PayloadTooLarge:
        return _local(outcome, _too_large(limit))
    outcome.status = upstream.status_code
    try:
        if request.method == "HEAD":
            # Sanic sends a HEAD answer's head itself; streaming one through respond() trips
            # over Sanic's head_response_ignored (a sync function it later awaits).
            return ProxiedResponse(status=upstream.status_code, headers=_response_headers(upstream))
        await _relay(request, upstream)
        return None
    finally:
        await upstream.aclose()


def _local(outcome: Outcome, response: HTTPResponse) -> HTTPResponse:
    outcome.status = response.status
    return response


def _declared_length(request: Request) -> int:
    try:
        return int(request.headers.get("content-length") or 0)
    except ValueError:
        return 0


async def _open_upstream(request: Request, decision: Forward, limit: int) -> httpx.Response:
    """Send the request upstream and return its streamed response, or raise UpstreamError."""
    ctx = request.app.ctx
    name = decision.route.upstream
    client: httpx.AsyncClient = ctx.upstreams[name]
    target = ctx.settings.upstream(name)
    if limit and request.stream is not None:
        request.stream.request_max_size = limit
    keep_host = ctx.settings.proxy.keep_host
    headers = request_headers(
        request.headers.items(),
        connection=request.headers.getall("connection", []),
        client_ip=request.ip,
        scheme=_forwarded_proto(request),
        host=request.host,
        upstream_host=None if keep_host else client.base_url.netloc.decode("ascii"),
    )
    has_body = "content-length" in request.headers or "transfer-encoding" in request.headers
    body = _RequestBody(request) if has_body else None
    url = target.url + request.path + ("?" + request.query_string if request.query_string else "")
    outgoing = httpx.Request(
        request.method,
        url,
        headers=headers,
        content=body,
        extensions={"timeout": client.timeout.as_dict()},
    )
    try:
        return await client.send(outgoing, stream=True)
    except httpx.HTTPError as exc:
        if body is not None and body.too_large:
            # The client's (chunked) body went over the limit while it was being sent: the
            # transport reports that as a failed send, but it is the client's fault.
            raise PayloadTooLarge("Request body exceeds the size limit") from exc
        raise from_httpx(name, exc) from exc


def _forwarded_proto(request: Request) -> str:
    """``http`` or ``https``: Sanic says ``ws``/``wss`` for a request carrying an Upgrade."""
    scheme = request.scheme
    return {"ws": "http", "wss": "https"}.get(scheme, scheme)


class _RequestBody:
    """The client's body as an async iterator that remembers whether it overflowed."""

    def __init__(self, request: Request) -> None:
        self._request = request
        self.too_large = False

    async def __aiter__(self) -> AsyncIterator[bytes]:
        try:
            while (chunk := await self._request.stream.read()) is not None:  # type: ignore[union-attr]
                yield chunk
        except PayloadTooLarge:
            self.too_large = True
            raise


async def _relay(request: Request, upstream: httpx.Response) -> None:
    """Stream the upstream's response to the client chunk by chunk.

    If the upstream breaks off mid-body the client connection is aborted, so the client sees
    a truncated response as an error rather than a short body that looks complete.
    """
    response = await request.respond(
        ProxiedResponse(status=upstream.status_code, headers=_response_headers(upstream))
    )
    try:
        async for chunk in upstream.aiter_raw():
            await response.send(chunk)
        await response.eof()
    except httpx.HTTPError:
        if request.transport is not None:
            request.transport.abort()


def _response_headers(upstream: httpx.Response) -> Header:
    connection = upstream.headers.get_list("connection")
    return Header(end_to_end(upstream.headers.multi_items(), connection))


def _too_large(limit: int) -> HTTPResponse:
    return json({"error": "payload too large", "detail": f"request body over {limit} bytes"}, 413)
