"""Failures: refused, silent and broken upstreams, and bad client input.

One load balancer for the module: the API gateway's port is closed, the blog service accepts
connections and never answers, the dashboard is a real upstream; read timeout 2 s, connect
timeout 5 s and a 1000-byte body limit.

Wall-clock bounds are set against the behaviour they tell apart (answered at once vs. after a
timeout; after one read timeout vs. two), with seconds of margin for a busy shared machine.
"""

from __future__ import annotations

import re

import threading
import time
from collections.abc import Iterator

import httpx
import pytest

from tests.support import (
    ClosingServer,
    LoadBalancer,
    SilentServer,
    UpstreamServer,
    closed_port_url,
    env_for,
    raw_request,
    wait_for,
)

READ_TIMEOUT = 2.0
CONNECT_TIMEOUT = 5.0  # far above how long a refusal takes, even on a busy machine
MAX_BODY = 1000


@pytest.fixture(scope="module")
def silent() -> Iterator[SilentServer]:
    server = SilentServer()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def broken_lb(upstreams: dict[str, UpstreamServer], silent: SilentServer) -> Iterator[LoadBalancer]:
    env = env_for(
        upstreams,
        API_GATEWAY_URL=closed_port_url(),
        BLOG_SERVICE_URL=silent.url,
        LB_READ_TIMEOUT=str(READ_TIMEOUT),
        LB_CONNECT_TIMEOUT=str(CONNECT_TIMEOUT),
        LB_MAX_BODY_SIZE=str(MAX_BODY),
    )
    balancer = LoadBalancer(env)
    yield balancer
    balancer.stop()


def assert_error_body(response: httpx.Response, upstream: str) -> dict:
    assert response.headers["content-type"].startswith("application/json")
    body = response.json()
    # the contract's three keys, plus the pool member that was tried and the request's trace
    assert set(body) == {"error", "upstream", "detail", "target", "trace_id"}
    assert re.fullmatch(r"[0-9a-f]{32}", body["trace_id"])
    assert body["upstream"] == upstream
    assert body["target"].startswith("http://127.0.0.1:")
    assert body["error"] and body["detail"]
    return body


# ---------------------------------------------------------------- upstream failures


def test_refused_is_502_fast(broken_lb: LoadBalancer) -> None:
    for method in ("GET", "POST"):
        started = time.monotonic()
        response = broken_lb.client.request(
            method, "/api/x", content=b"abc" if method == "POST" else None
        )
        elapsed = time.monotonic() - started
        assert response.status_code == 502
        body = assert_error_body(response, "api-gateway")
        assert "refused" in body["detail"]
        # answered at the refusal, not after waiting out the connect timeout
        assert elapsed < CONNECT_TIMEOUT / 2, elapsed


def test_silent_upstream_is_504_after_read_timeout(broken_lb: LoadBalancer) -> None:
    started = time.monotonic()
    response = broken_lb.client.get("/blog/post")
    elapsed = time.monotonic() - started
    assert response.status_code == 504
    body = assert_error_body(response, "blog-service")
    assert "timeout" in body["detail"]
    # after the read timeout, and after one of them, not two (a retry would double it)
    assert READ_TIMEOUT * 0.9 <= elapsed < 2 * READ_TIMEOUT, elapsed


def test_one_failing_upstream_never_slows_the_others(
    broken_lb: LoadBalancer, silent: SilentServer
) -> None:
    results: list[int] = []

    def slow() -> None:
        with httpx.Client(base_url=broken_lb.url, trust_env=False) as client:
            results.append(client.get("/blog/hang").status_code)

    accepted = silent.accepted
    threads = [threading.Thread(target=slow) for _ in range(5)]
    for thread in threads:
        thread.start()
    # the silent requests are now in flight: the silent upstream took their five connections
    # (this was a fixed 0.2-s sleep)
    wait_for(lambda: silent.accepted >= accepted + 5, timeout=READ_TIMEOUT / 2, step=0.01)
    for _ in range(10):
        assert broken_lb.client.get("/page").status_code == 200
        assert broken_lb.client.get("/api/x").status_code == 502
        assert broken_lb.client.get("/lb-health").status_code == 200
    # all thirty answered while the silent requests still wait for their read timeout
    assert results == [], "the other requests waited for the silent upstream's timeouts"
    for thread in threads:
        thread.join()
    assert results == [504] * 5


def test_body_cut_midway_is_an_error_not_a_hang(broken_lb: LoadBalancer) -> None:
    received = 0
    # a hang would end in the client's own ReadTimeout, also a TransportError: excluded below
    with pytest.raises(httpx.TransportError) as raised:
        with httpx.Client(base_url=broken_lb.url, trust_env=False, timeout=10.0) as client:
            with client.stream("GET", "/page?bytes=1000000&cut=1") as response:
                assert response.status_code == 200
                assert response.headers["content-length"] == "1000000"
                for chunk in response.iter_raw():
                    received += len(chunk)
    assert received < 1000000
    assert not isinstance(raised.value, httpx.TimeoutException), raised.value
    assert broken_lb.client.get("/lb-health").status_code == 200
    assert broken_lb.client.get("/page").status_code == 200


def test_body_cut_midway_over_raw_socket(broken_lb: LoadBalancer) -> None:
    """The connection is closed without completing the declared length."""
    status, headers, body = raw_request(
        broken_lb.port,
        b"GET /page?bytes=1000000&cut=1 HTTP/1.1\r\nHost: lb.test\r\n\r\n",  # keep-alive
        timeout=5.0,
    )
    assert status == 200
    assert int(headers["content-length"]) > len(body)


# ------------------------------------------------------------------------ bad input


@pytest.mark.parametrize(
    "head",
    [
        b"THIS IS NOT HTTP\r\n\r\n",
        b"GET\r\nHost: x\r\n\r\n",
        b"GET /page HTTP/9.9\r\nHost: x\r\n\r\n",
        b"GET /page HTTP/1.1\r\nBad Header Without Colon\r\n\r\n",
    ],
)
def test_malformed_request_is_4xx(
    broken_lb: LoadBalancer, upstreams: dict[str, UpstreamServer], head: bytes
) -> None:
    before = sum(upstreams["dashboard-ui"].hits.values())
    status, _, _ = raw_request(broken_lb.port, head)
    assert 400 <= status < 500
    assert sum(upstreams["dashboard-ui"].hits.values()) == before


def test_oversized_headers_are_refused(
    broken_lb: LoadBalancer, upstreams: dict[str, UpstreamServer]
) -> None:
    before = sum(upstreams["dashboard-ui"].hits.values())
    big = "x" * (17 * 1024)
    status, _, _ = raw_request(
        broken_lb.port,
        f"GET /page HTTP/1.1\r\nHost: x\r\nX-Big: {big}\r\nConnection: close\r\n\r\n".encode(),
    )
    assert status in (400, 413, 431)
    many = "".join(f"X-H{i}: {'y' * 100}\r\n" for i in range(200))
    status, _, _ = raw_request(
        broken_lb.port, f"GET /page HTTP/1.1\r\nHost: x\r\n{many}Connection: close\r\n\r\n".encode()
    )
    assert status in (400, 413, 431)
    assert sum(upstreams["dashboard-ui"].hits.values()) == before
    assert broken_lb.client.get("/lb-health").status_code == 200


def test_body_over_limit_with_content_length_is_413(
    broken_lb: LoadBalancer, upstreams: dict[str, UpstreamServer]
) -> None:
    before = upstreams["dashboard-ui"].hits["/upload"]
    response = broken_lb.client.post("/upload", content=b"z" * (MAX_BODY + 1))
    assert response.status_code == 413
    assert response.headers["content-type"].startswith("application/json")
    assert response.json()["error"]
    assert upstreams["dashboard-ui"].hits["/upload"] == before  # never forwarded
    # At the limit exactly, it passes.
    ok = broken_lb.client.post("/upload", content=b"z" * MAX_BODY)
    assert ok.status_code == 200
    assert ok.json()["body_size"] == MAX_BODY


def test_chunked_body_over_limit_is_413(
    broken_lb: LoadBalancer, upstreams: dict[str, UpstreamServer]
) -> None:
    def gen() -> Iterator[bytes]:
        for _ in range(10):
            yield b"z" * 500

    with httpx.Client(base_url=broken_lb.url, trust_env=False, timeout=5.0) as client:
        try:
            response = client.post("/upload-chunked", content=gen())
        except httpx.TransportError:
            pytest.fail("the proxy dropped the connection instead of answering 413")
    assert response.status_code == 413
    assert response.json()["error"]
    ok = broken_lb.client.post("/upload-chunked", content=iter([b"z" * 400, b"z" * 600]))
    assert ok.status_code == 200
    assert ok.json()["body_size"] == MAX_BODY


def test_upstream_stalling_mid_body_ends_in_an_error(broken_lb: LoadBalancer) -> None:
    """Headers and a first event arrive, then the upstream goes quiet past the read timeout."""
    started = time.monotonic()
    events = []
    with pytest.raises(httpx.TransportError):
        with httpx.Client(base_url=broken_lb.url, trust_env=False, timeout=20.0) as client:
            # the second event would come at 3 read timeouts: the stream must end before
            with client.stream("GET", f"/feed?sse=2&interval={3 * READ_TIMEOUT}") as response:
                assert response.status_code == 200
                for line in response.iter_lines():
                    if line.startswith("data:"):
                        events.append(line)
    assert len(events) == 1
    assert time.monotonic() - started < 2 * READ_TIMEOUT  # ended by one read timeout
    assert broken_lb.client.get("/lb-health").status_code == 200


def test_upstream_closing_without_answer_is_502(upstreams: dict[str, UpstreamServer]) -> None:
    """An upstream that accepts and closes at once: 502 with the JSON body, quickly."""
    closing = ClosingServer()
    env = env_for(
        upstreams, API_GATEWAY_URL=closing.url, LB_CONNECT_TIMEOUT="10", LB_READ_TIMEOUT="10"
    )
    balancer = LoadBalancer(env)
    try:
        started = time.monotonic()
        response = balancer.client.get("/api/x")
        assert response.status_code == 502
        assert_error_body(response, "api-gateway")
        assert time.monotonic() - started < 5.0  # at the close, not at a 10-s timeout
        assert balancer.client.get("/blog/x").status_code == 200
    finally:
        balancer.stop()
        closing.stop()
