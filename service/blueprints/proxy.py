"""The reverse proxy: every path no local endpoint claims is routed and streamed upstream.

request -> ``Router.resolve`` (service.proxying.routing: prefix, match, weighted backend;
counted per route and backend, service.routes) -> ``Pool.attempt`` (service.pools: target,
retries, passive health) -> ``exchange.send`` (service.proxying.exchange) -> streamed
response, with the request measured once, here, when its last byte has been handed to the
client. Every answer the load balancer makes itself is a ``LoadBalancerError``
(service.errors), answered in one place.
"""

from __future__ import annotations

import ssl
import time
from collections.abc import Awaitable
from dataclasses import dataclass

import httpx
from sanic import Blueprint, Request
from sanic.response import HTTPResponse, redirect

from service.admission import Admission
from service.errors import BodyTooLarge, LoadBalancerError, UpstreamError, error_response
from service.logs import HEADER, begin_request, log_request
from service.metrics import LOCAL, RequestSample
from service.pools import Pool, RetryRule, Target
from service.proxying import exchange, websocket_tunnel
from service.proxying.affinity import affinity_of, sticky_field
from service.proxying.relay import ProxiedResponse, relay
from service.proxying.routing import Redirect
from service.settings import PROXIED_METHODS, ProxySettings
from service.tracing import RequestTrace, error_type_of
from service.transport import seam

bp = Blueprint("proxy")

METHODS = PROXIED_METHODS
# Once a target has the handshake it may have acted on it: retried only when no connection
# was made.
TUNNEL_RETRY = RetryRule(idempotent=False)


# ctx_access_logged: this handler writes every request's access line itself (service.errors)
@bp.route("/", methods=METHODS, stream=True, name="root", ctx_access_logged=True)
@bp.route("/<path:path>", methods=METHODS, stream=True, name="path", ctx_access_logged=True)
async def proxy(request: Request, path: str = "") -> HTTPResponse | None:
    """Measure the whole exchange once, whatever its outcome."""
    started = time.perf_counter()
    outcome = Outcome()
    lb = request.app.ctx.lb
    request_id = begin_request(request, lb.request_ids)
    trace = request.ctx.trace = lb.tracing.begin(request)
    try:
        return _with_id(await _exchange(request, outcome, trace), request_id, outcome)
    except LoadBalancerError as error:
        outcome.proxy_error = isinstance(error, UpstreamError)
        if isinstance(error, UpstreamError):
            outcome.error_reason, outcome.target = error.reason, error.target or ""
        response = error_response(error, trace.trace_id)
        return _with_id(_local(outcome, response), request_id, outcome)
    finally:
        duration = time.perf_counter() - started
        trace.finish(
            request,
            outcome.status,
            error_type_of(outcome.error_reason) if outcome.error_reason else "",
        )
        if outcome.admission is not None:
            outcome.admission.release()
        if lb.access_log is not None or outcome.error_reason:
            log_request(request, outcome, duration, lb.access_log)
        lb.metrics.record(
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
    # for the access log and the proxy-error line
    target: str = ""
    size: int = 0  # body bytes sent to the client
    error_reason: str = ""
    # admitted by the gate with something to give back at the end or fields to send
    admission: Admission | None = None


async def _exchange(request: Request, outcome: Outcome, trace: RequestTrace) -> HTTPResponse | None:
    """Route, forward and stream one request.

    Returns a response for Sanic to send (small, locally made ones, and HEAD answers), or
    None when the upstream's response has already been streamed to the client. Raises a
    LoadBalancerError for every answer the proxy makes itself.
    """
    lb = request.app.ctx.lb
    # The configuration this request runs on, taken once before the first await: a reload
    # (service.reload) swaps these objects whole, and the request finishes on the ones it has.
    router, pools, clients, proxy = lb.router, lb.pools, lb.clients, lb.settings.proxy
    decision = router.resolve(request.path, request.query_string, request)
    if isinstance(decision, Redirect):
        return _local(outcome, redirect(decision.location, status=308))
    lb.route_counters.add(decision.counter)  # bound to this router: no await since
    outcome.route = decision.upstream  # the backend drawn for a split route
    trace.route = decision.route.prefix
    if lb.gate is not None:  # admission control: raises 429/503 before any upstream is chosen
        outcome.admission = lb.gate.admit(request, outcome.route)
    limit = proxy.max_body_size
    if limit and _declared_length(request) > limit:
        raise BodyTooLarge(limit)
    if limit and request.stream is not None:
        request.stream.request_max_size = limit
    pool: Pool = pools[decision.upstream]
    if websocket_tunnel.is_upgrade(request):
        outcome.tunnel = True
        return await _tunnel(request, pool, outcome, proxy, clients.ssl_context, trace)
    body = exchange.body_of(request)
    client = clients[pool.name]

    def send(target: Target) -> Awaitable[httpx.Response]:
        return exchange.send(
            request, upstream=pool.name, target=target, client=client, proxy=proxy, body=body,
            trace=trace,
        )  # fmt: skip

    affinity = affinity_of(request, pool) if pool.keyed else None
    attempt = await pool.attempt(
        send, RetryRule.for_method(request.method, body),
        status=_status, discard=_discard, affinity=affinity,
    )  # fmt: skip
    upstream = attempt.answer
    outcome.status = upstream.status_code
    outcome.target = attempt.target.url
    fields = _fields(outcome)
    cookie = None
    if pool.sticky_cookie and affinity is not None:
        cookie = sticky_field(request, attempt.target, affinity)
        fields = fields if cookie is None else [*fields, cookie]
    try:  # what ``async with attempt`` does, without its two coroutines per request
        if request.method == "HEAD":
            # Sanic sends a HEAD answer's head itself; streaming one through respond()
            # trips over Sanic's head_response_ignored (a sync function it later awaits).
            head = ProxiedResponse(upstream)
            if cookie is not None:
                head.fields.append(cookie)
            return head
        size = await relay(request, upstream, fields)
        if size is None:
            attempt.failed = True
        else:
            outcome.size = size
        return None
    except UpstreamError:
        attempt.failed = True
        raise
    finally:
        try:
            await seam.close(upstream)
        finally:
            attempt.finish(failed=attempt.failed)


def _status(response: httpx.Response) -> int:
    return response.status_code


async def _discard(response: httpx.Response) -> None:
    await response.aclose()


async def _tunnel(
    request: Request,
    pool: Pool,
    outcome: Outcome,
    proxy: ProxySettings,
    ssl_context: ssl.SSLContext | None,
    trace: RequestTrace,
) -> HTTPResponse | None:
    """Hand a WebSocket upgrade to a target and relay bytes until either side closes."""

    def open_tunnel(target: Target) -> Awaitable[websocket_tunnel.Opened]:
        return websocket_tunnel.open_tunnel(
            request, upstream=pool.name, target_url=target.url,
            connect_timeout=proxy.connect_timeout, read_timeout=proxy.read_timeout,
            trace=trace, target=target, ssl_context=ssl_context,
            server_hostname=target.origin or None,
        )  # fmt: skip

    # a sticky cookie or a hash key keeps the socket on its target; no cookie is set on
    # the 101 (the target's handshake is relayed as it came)
    affinity = affinity_of(request, pool) if pool.keyed else None
    attempt = await pool.attempt(open_tunnel, TUNNEL_RETRY, affinity=affinity)
    reader, writer, handshake = attempt.answer
    outcome.status = handshake.status
    outcome.target = attempt.target.url
    async with attempt:
        if handshake.status != 101:
            try:
                return await websocket_tunnel.refused_upgrade(handshake, reader, proxy.read_timeout)
            finally:
                writer.close()
        await websocket_tunnel.Tunnel(request, proxy.websocket_idle_timeout).run(
            reader, writer, handshake.head
        )
        return None


def _with_id(
    response: HTTPResponse | None, request_id: str, outcome: Outcome
) -> HTTPResponse | None:
    """The request id (and the admission's RateLimit fields) on a response the proxy
    returns (a streamed one has them already)."""
    if response is not None:
        response.headers[HEADER] = request_id
        if outcome.admission is not None and outcome.admission.fields:
            response.headers.update(outcome.admission.fields)
    return response


def _fields(outcome: Outcome) -> list[tuple[bytes, bytes]]:
    return outcome.admission.raw_fields if outcome.admission is not None else []


def _local(outcome: Outcome, response: HTTPResponse) -> HTTPResponse:
    outcome.status = response.status
    outcome.size = len(response.body or b"")
    return response


def _declared_length(request: Request) -> int:
    try:
        return int(request.headers.get("content-length") or 0)
    except ValueError:
        return 0
