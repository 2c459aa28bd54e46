"""When a failed attempt may be tried again on another target.

nginx's ``proxy_next_upstream error timeout http_502 http_503 http_504`` with its
``non_idempotent`` rule, and Envoy's retry budget on top (``service.pool.RetryBudget``):

- a request whose connection could not be made is retried whatever its method: nothing
  reached the upstream;
- otherwise only idempotent methods are retried (RFC 9110 §9.2.2), and only while nothing
  of the response has reached the client;
- a request whose body has started to stream is never retried: the body cannot be replayed.
"""

from __future__ import annotations

from service.errors import UpstreamConnectTimeout, UpstreamError, UpstreamRefused
from service.forwarding import RequestBody

IDEMPOTENT = frozenset({"GET", "HEAD", "OPTIONS", "PUT", "DELETE", "TRACE"})
# Statuses that count against a target (passive health) and that an idempotent request
# may be retried on.
FAILURE_STATUSES = frozenset({502, 503, 504})


def may_retry_error(method: str, body: RequestBody | None, error: UpstreamError) -> bool:
    if body is not None and body.started:
        return False
    if isinstance(error, (UpstreamRefused, UpstreamConnectTimeout)):
        return True
    return method in IDEMPOTENT


def may_retry_status(method: str, body: RequestBody | None, status: int) -> bool:
    return status in FAILURE_STATUSES and method in IDEMPOTENT and not (body and body.started)
