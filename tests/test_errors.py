"""One error tree and one body shape for every answer the load balancer makes itself."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import httpx
import pytest

from service.errors import (
    BadPath,
    BodyTooLarge,
    UpstreamBroken,
    UpstreamConnectTimeout,
    UpstreamRefused,
    UpstreamTimeout,
    classify,
)
from tests.support import LoadBalancer, env_for, raw_request

SHAPE = {"error", "detail"}


@pytest.fixture(scope="module")
def small_body_lb(upstreams: dict) -> Iterator[LoadBalancer]:
    balancer = LoadBalancer(env_for(upstreams, LB_MAX_BODY_SIZE="10"))
    yield balancer
    balancer.stop()


@pytest.mark.parametrize(
    ("exc", "connected", "kind", "status", "reason"),
    [
        (httpx.ConnectError("no route"), True, UpstreamRefused, 502, "refused"),
        (httpx.ConnectTimeout("slow"), True, UpstreamConnectTimeout, 504, "timeout"),
        (httpx.ReadTimeout("slow"), True, UpstreamTimeout, 504, "timeout"),
        (httpx.RemoteProtocolError("cut"), True, UpstreamBroken, 502, "broken"),
        (ConnectionRefusedError(111, "refused"), False, UpstreamRefused, 502, "refused"),
        (TimeoutError(), False, UpstreamConnectTimeout, 504, "timeout"),
        (TimeoutError(), True, UpstreamTimeout, 504, "timeout"),
        (asyncio.IncompleteReadError(b"", 10), True, UpstreamBroken, 502, "broken"),
        (ConnectionResetError(104, "reset"), True, UpstreamBroken, 502, "broken"),
    ],
)
def test_one_classifier_for_every_upstream_failure(
    exc: BaseException, connected: bool, kind: type, status: int, reason: str
) -> None:
    error = classify("api-gateway", exc, connected=connected)
    assert type(error) is kind
    assert error.status == status
    assert error.reason.startswith(reason)
    assert error.body()["upstream"] == "api-gateway"
    assert set(error.body()) == SHAPE | {"upstream"}


def test_client_errors_share_the_shape() -> None:
    assert BadPath("encoded slash").body() == {"error": "bad request", "detail": "encoded slash"}
    too_large = BodyTooLarge(10)
    assert too_large.status == 413
    assert set(too_large.body()) == SHAPE


@pytest.mark.parametrize(
    ("head", "status"),
    [
        (b"DELETE /stats HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n", 405),
        (b"GET /page HTTP/9.9\r\nHost: x\r\n\r\n", 400),
        (b"GET /%2f HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n", 400),
        (
            b"POST /api/x HTTP/1.1\r\nHost: x\r\nContent-Length: 20\r\nConnection: close\r\n\r\n"
            + b"x" * 20,
            413,
        ),
    ],
)
def test_sanic_and_proxy_errors_answer_the_same_json_shape(
    small_body_lb: LoadBalancer, head: bytes, status: int
) -> None:
    got, headers, body = raw_request(small_body_lb.port, head)
    assert got == status
    assert headers["content-type"] == "application/json"
    document = httpx.Response(200, content=body).json()
    assert set(document) == SHAPE, document
    assert document["error"] and document["detail"]
