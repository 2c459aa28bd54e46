"""The reverse proxy: every path no local endpoint claims is routed and streamed upstream.

request -> :class:`~service.routing.Router` -> upstream client -> streamed response, with the
request measured once, here, when its last byte has been handed to the client.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import httpx
from sanic import Blueprint, Request
from sanic.compat import Header
from sanic.exceptions import PayloadTooLarge
from sanic.response import HTTPResponse, json, redirect

from service import forwarding, websocket_tunnel
from service.errors import UpstreamConnectTimeout, UpstreamError, UpstreamRefused
from service.headers import end_to_end
from service.metrics import RequestSample
from service.pool import Pool, RetryBudget, Target
from service.retries import FAILURE_STATUSES, may_retry_error, may_retry_status
from service.routing import BadPath, Redirect

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
            RequestSample.of(
                request,
                outcome.route,
                outcome.status,
                duration,
                outcome.proxy_error,
                outcome.tunnel,
            )
        )


@dataclass(slots=True)
class Outcome:
    """What the measurement needs to know of an exchange, filled in as it happens."""

    route: str = LOCAL
    status: int = 0
    proxy_error: bool = False
    tunnel: bool = False


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
    if limit and request.stream is not None:
        request.stream.request_max_size = limit
    pool: Pool = request.app.ctx.pools[decision.route.upstream]
    if websocket_tunnel.is_upgrade(request):
        outcome.tunnel = True
        return await _tunnel(request, pool, outcome)
    try:
        target, upstream, started = await _attempts(request, pool)
    except UpstreamError as exc:
        outcome.proxy_error = True
        return _local(outcome, json(exc.body(), status=exc.status))
    except PayloadTooLarge:
        return _local(outcome, _too_large(limit))
    outcome.status = upstream.status_code
    failed = upstream.status_code in FAILURE_STATUSES
    try:
        if request.method == "HEAD":
            # Sanic sends a HEAD answer's head itself; streaming one through respond() trips
            # over Sanic's head_response_ignored (a sync function it later awaits).
            return ProxiedResponse(status=upstream.status_code, headers=_response_headers(upstream))
        failed = not await _relay(request, upstream) or failed
        return None
    finally:
        await upstream.aclose()
        pool.finished(target, time.perf_counter() - started, failed=failed)


async def _attempts(request: Request, pool: Pool) -> tuple[Target, httpx.Response, float]:
    """Send to a target of ``pool``; on a retryable failure, once more to another target.

    Returns the target, its response and when the attempt started; the caller must finish
    the attempt with the pool. A failed attempt is finished here. Raises the last
    UpstreamError when no attempt worked.
    """
    ctx = request.app.ctx
    body = forwarding.body_of(request)
    budget: RetryBudget = ctx.retry_budget
    budget.request()
    tried: frozenset[int] = frozenset()
    while True:
        target = pool.choose(tried)
        pool.started(target)
        started = time.perf_counter()
        retry_left = not tried and len(pool.targets) > 1
        try:
            response = await forwarding.send(
                request, upstream=pool.name, target_url=target.url,
                client=ctx.upstreams[pool.name], proxy=ctx.settings.proxy, body=body,
            )  # fmt: skip
        except UpstreamError as error:
            pool.finished(target, time.perf_counter() - started, failed=True)
            if retry_left and may_retry_error(request.method, body, error) and budget.try_spend():
                tried = frozenset({target.position})
                continue
            raise
        except BaseException:
            pool.finished(target, time.perf_counter() - started, failed=False)
            raise
        status = response.status_code
        if retry_left and may_retry_status(request.method, body, status) and budget.try_spend():
            await response.aclose()
            pool.finished(target, time.perf_counter() - started, failed=True)
            tried = frozenset({target.position})
            continue
        return target, response, started


async def _tunnel(request: Request, pool: Pool, outcome: Outcome) -> HTTPResponse | None:
    """Hand a WebSocket upgrade to a target and relay bytes until either side closes."""
    proxy = request.app.ctx.settings.proxy
    tried: frozenset[int] = frozenset()
    while True:
        target = pool.choose(tried)
        pool.started(target)
        started = time.perf_counter()
        try:
            reader, writer, handshake = await websocket_tunnel.open_tunnel(
                request, upstream=pool.name, target_url=target.url,
                connect_timeout=proxy.connect_timeout, read_timeout=proxy.read_timeout,
            )  # fmt: skip
        except UpstreamError as error:
            pool.finished(target, time.perf_counter() - started, failed=True)
            connect_failed = isinstance(error, (UpstreamRefused, UpstreamConnectTimeout))
            if connect_failed and not tried and len(pool.targets) > 1:
                tried = frozenset({target.position})
                continue
            error.target = target.url
            outcome.proxy_error = True
            return _local(outcome, json(error.body(), status=error.status))
        break
    outcome.status = handshake.status
    try:
        if handshake.status != 101:
            try:
                return await websocket_tunnel.refused_upgrade(handshake, reader, proxy.read_timeout)
            finally:
                writer.close()
        await websocket_tunnel.Tunnel(request, proxy.websocket_idle_timeout).run(
            reader, writer, handshake.head
        )
        return None
    finally:
        pool.finished(target, time.perf_counter() - started, failed=False)


def _local(outcome: Outcome, response: HTTPResponse) -> HTTPResponse:
    outcome.status = response.status
    return response


def _declared_length(request: Request) -> int:
    try:
        return int(request.headers.get("content-length") or 0)
    except ValueError:
        return 0


async def _relay(request: Request, upstream: httpx.Response) -> bool:
    """Stream the upstream's response to the client chunk by chunk; False if it broke off.

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
        return False
    return True


def _response_headers(upstream: httpx.Response) -> Header:
    connection = upstream.headers.get_list("connection")
    return Header(end_to_end(upstream.headers.multi_items(), connection))


def _too_large(limit: int) -> HTTPResponse:
    return json({"error": "payload too large", "detail": f"request body over {limit} bytes"}, 413)
