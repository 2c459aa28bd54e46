"""Every answer the load balancer makes itself, and the one place a failure is classified.

::

    LoadBalancerError            the answer's status, and {"error", "detail"} as its body
                                 (+ "trace_id", but for the 400, 403 and 413 of ClientError)
    ├── ClientError         4xx  the request cannot be served as sent
    │   ├── BadRequest      400  malformed request ("bad request")
    │   │   └── BadPath     400  a path that cannot be routed safely
    │   ├── Forbidden       403  an operator's page asked from outside LB_ADMIN_ALLOW
    │   ├── BodyTooLarge    413  a body over LB_MAX_BODY_SIZE ("payload too large")
    │   └── RateLimited     429  over a rate limit or LB_MAX_CLIENT_REQUESTS ("rate_limited",
    │                            + "limit"; Retry-After, and the RateLimit fields)
    ├── PoolUnavailable     503  answered at once (+ "upstream"; Retry-After: 1)
    │   ├── Overloaded           a pool at its max_requests in flight ("overloaded"); not a
    │   │                        failure of the upstream
    │   └── NoTargets            the route's pool has no target at all ("no_targets": its
    │                            names resolve to nothing)
    └── UpstreamError       502  any failure talking to an upstream (+ "upstream", "target")
        ├── UpstreamRefused        no connection could be made ("refused", or "dns" when
        │                          the target's host name does not resolve, or "tls: ..."
        │                          when its certificate is not trusted)
        ├── UpstreamTimeout   504  connect or read took longer than allowed ("timeout")
        │   └── UpstreamConnectTimeout  no connection at all: nothing was sent
        ├── UpstreamBroken         the connection broke after it was made ("broken")
        └── UpstreamBadPayload     a /stats answer we cannot use (HTTP status, invalid JSON,
                                   not a JSON object, too large)

:func:`classify` turns whatever an upstream call raised (httpx, asyncio, OS errors) into an
:class:`UpstreamError`, for the proxy, the WebSocket tunnel and the ``/stats`` fan-out alike.
The proxy answers :meth:`LoadBalancerError.body`; ``/stats`` shows ``reason``. Sanic's own
errors (405, 431, a malformed request line) are given the same body shape by
:func:`sanic_error_body`.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import ssl
from http import HTTPStatus
from typing import Any

import httpx
from sanic import Request, Sanic
from sanic.exceptions import SanicException
from sanic.response import HTTPResponse, json

from service.logs import HEADER, LOCAL_ROUTE, Answered, request_id_of

log = logging.getLogger("service.errors")


class LoadBalancerError(Exception):
    status: int = 500
    error: str = "internal error"
    # whether the body names the request's trace ("trace_id"): answers about the way through
    # the load balancer do (429, 502, 503, 504); a request refused as sent (400, 403, 413)
    # answers in the shape Sanic's own refusals have, whoever refuses it
    traced: bool = True

    def __init__(self, detail: str) -> None:
        super().__init__(detail)
        self.detail = detail

    def body(self) -> dict[str, str]:
        return {"error": self.error, "detail": self.detail}

    def headers(self) -> dict[str, str] | None:
        """Headers of the answer beyond the JSON body's (none for most errors)."""
        return None


class ClientError(LoadBalancerError):
    status = 400
    traced = False


class BadRequest(ClientError):
    error = "bad request"


class BadPath(BadRequest):
    """A request path that cannot be routed safely; the detail is the client's reason."""


class Forbidden(ClientError):
    status = 403
    error = "forbidden"


class BodyTooLarge(ClientError):
    status = 413
    error = "payload too large"

    def __init__(self, limit: int) -> None:
        super().__init__(f"request body over {limit} bytes")


class RateLimited(ClientError):
    """Refused by admission control (``service.admission``) before reaching an upstream."""

    status = 429
    error = "rate_limited"
    traced = True

    def __init__(self, limit: str, retry_after: int, fields: dict[str, str] | None = None) -> None:
        super().__init__(f"over the limit {limit!r}; retry in {retry_after} s")
        self.limit = limit
        self.retry_after = retry_after
        self.fields = fields or {}

    def body(self) -> dict[str, str]:
        return {"error": self.error, "limit": self.limit, "detail": self.detail}

    def headers(self) -> dict[str, str] | None:
        return {"retry-after": str(self.retry_after), **self.fields}


class PoolUnavailable(LoadBalancerError):
    """A pool that cannot take the request now, answered at once with 503 and a
    ``retry-after`` of a second, naming the pool."""

    status = 503

    def __init__(self, upstream: str, detail: str) -> None:
        super().__init__(detail)
        self.upstream = upstream

    def body(self) -> dict[str, str]:
        return {"error": self.error, "upstream": self.upstream, "detail": self.detail}

    def headers(self) -> dict[str, str] | None:
        return {"retry-after": "1"}


class Overloaded(PoolUnavailable):
    """A pool with ``max_requests`` in flight across the host (Envoy's circuit breaker):
    answered at once, never queued; not counted against the pool's targets."""

    error = "overloaded"

    def __init__(self, upstream: str, max_requests: int) -> None:
        detail = f"{upstream} has {max_requests} requests in flight (max_requests)"
        super().__init__(upstream, detail)


class NoTargets(PoolUnavailable):
    """A pool with no target to send to: every ``resolve`` entry of it found no address
    (NXDOMAIN or no record: a headless Service with no ready pod). Answered at once, not
    after a connect timeout, and not a proxy 502: nothing was tried."""

    error = "no_targets"

    def __init__(self, upstream: str) -> None:
        detail = f"upstream {upstream!r} has no target: its names resolve to no address"
        super().__init__(upstream, detail)


class UpstreamError(LoadBalancerError):
    status = 502
    error = "bad gateway"

    def __init__(self, upstream: str, reason: str) -> None:
        super().__init__(reason)
        self.upstream = upstream
        self.reason = reason
        self.target: str | None = None  # the pool member that was tried, once known

    def __str__(self) -> str:
        return f"{self.upstream}: {self.reason}"

    def body(self) -> dict[str, str]:
        body = {"error": self.error, "upstream": self.upstream, "detail": self.reason}
        if self.target is not None:
            body["target"] = self.target
        return body


class UpstreamRefused(UpstreamError):
    error = "upstream unreachable"


class UpstreamTimeout(UpstreamError):
    status = 504
    error = "upstream timeout"


class UpstreamConnectTimeout(UpstreamTimeout):
    """No connection within the connect timeout: like a refusal, nothing was sent."""


class UpstreamBroken(UpstreamError):
    error = "upstream connection broken"


class UpstreamBadPayload(UpstreamError):
    error = "bad upstream payload"


def classify(upstream: str, exc: BaseException, *, connected: bool = True) -> UpstreamError:
    """The :class:`UpstreamError` for what talking to ``upstream`` raised.

    ``connected`` tells an OS error or a timeout before the connection was made (refused,
    connect timeout) from one after it (broken, read timeout), for callers that see bare
    socket errors (the WebSocket tunnel); httpx's exceptions say it themselves.
    """
    if isinstance(exc, UpstreamError):
        return exc
    detail = str(exc) or type(exc).__name__
    if isinstance(exc, httpx.ConnectTimeout) or (isinstance(exc, TimeoutError) and not connected):
        return UpstreamConnectTimeout(upstream, f"timeout: connect timed out ({detail})")
    if isinstance(exc, httpx.TimeoutException | TimeoutError):
        return UpstreamTimeout(upstream, "timeout: no answer within the read timeout")
    if isinstance(exc, httpx.ConnectError) or (isinstance(exc, OSError) and not connected):
        if (tls := _tls_failure(exc)) is not None:
            return UpstreamRefused(upstream, tls)
        if _resolution_failed(exc):
            return UpstreamRefused(upstream, f"dns: {detail}")
        return UpstreamRefused(upstream, f"refused: {detail}")
    if isinstance(exc, asyncio.IncompleteReadError | asyncio.LimitOverrunError):
        return UpstreamBroken(upstream, "broken: invalid or missing answer")
    return UpstreamBroken(upstream, f"broken: {detail}")


def _resolution_failed(exc: BaseException) -> bool:
    """A host name that did not resolve, found anywhere in the chain of causes: a closed
    port and a misspelt host need different fixes, so they must not share a reason."""
    seen: BaseException | None = exc
    for _ in range(8):  # causes are short chains; bounded all the same
        if seen is None:
            return False
        if isinstance(seen, socket.gaierror):
            return True
        seen = seen.__cause__ or seen.__context__
    return False


def _tls_failure(exc: BaseException) -> str | None:
    """The reason of a failed TLS handshake found in the chain of causes, else None: a
    certificate the proxy does not trust is an operator's fix, not a network fault."""
    seen: BaseException | None = exc
    for _ in range(8):
        if seen is None:
            return None
        if isinstance(seen, ssl.SSLCertVerificationError):
            return f"tls: certificate verify failed: {seen.verify_message or seen.reason}"
        if isinstance(seen, ssl.SSLError):
            return f"tls: handshake failed: {seen.reason or seen}"
        seen = seen.__cause__ or seen.__context__
    return None


def sanic_error_body(status: int, message: str) -> dict[str, Any]:
    """Sanic's own errors in the load balancer's shape: ``{"error", "detail"}``."""
    try:
        error = HTTPStatus(status).phrase.lower()
    except ValueError:
        error = "error"
    return {"error": error, "detail": message}


def error_response(error: LoadBalancerError, trace_id: str = "") -> HTTPResponse:
    """The load balancer's own answer for ``error``: its status and its JSON body, with
    the request's ``trace_id`` (``service.tracing``) so that a report leads to its trace."""
    body: dict[str, str] = error.body()
    if trace_id and error.traced:
        body["trace_id"] = trace_id
    return json(body, status=error.status, headers=error.headers())


def startup(app: Sanic) -> None:
    """Sanic's own errors (404 of a method it refuses, 405, a malformed request, oversized
    headers, a head too slow, an unexpected exception) answered in the same shape as the
    proxy's, each with its access line (:func:`log_answer`)."""

    @app.exception(SanicException)
    async def sanic_error(request: Request, exc: SanicException) -> HTTPResponse:
        status = getattr(exc, "status_code", 500) or 500
        message = str(exc) if status < 500 else "the load balancer could not answer"
        headers = {**(exc.headers or {}), HEADER: request_id_of(request)}
        response = json(sanic_error_body(status, message), status=status, headers=headers)
        log_answer(request, response, str(exc) or type(exc).__name__)
        return response

    @app.exception(Exception)
    async def unexpected(request: Request, exc: Exception) -> HTTPResponse:
        headers = {HEADER: request_id_of(request)}
        log.exception("unexpected error on %s %s", request.method, request.path)
        body = sanic_error_body(500, "the load balancer could not answer")
        response = json(body, status=500, headers=headers)
        log_answer(request, response, type(exc).__name__)
        return response


def log_answer(request: Request, response: HTTPResponse, reason: str) -> None:
    """The access line of an answer made here, unless the route's handler writes its own
    (the proxy's, marked ``ctx_access_logged``): one line per request, the front door's own
    answers included (a 400, 405, 408, 413 or 431 made before routing: route ``-``, the
    peer as client, why in ``reason``), and only when ``LB_ACCESS_LOG`` is on. Such an
    answer is made before the request is timed: its duration shows as 0."""
    access_log = request.app.ctx.lb.access_log
    if access_log is None:
        return
    route = request.route
    if route is not None and getattr(route.ctx, "access_logged", False):
        return
    routed = LOCAL_ROUTE if route is not None else ""
    done = Answered(routed, "", response.status, len(response.body or b""))
    access_log.write(request, done, 0.0, reason)
