"""``GET /stats`` through a real load-balancer process in front of real upstream servers.

The load balancer's own figures (classification of real API traffic, the 10 s window,
durations, idleness) and the aggregation of every service's ``/stats`` (unwrapping,
failures as offline entries with a reason, the 2 s deadline, the size cap, the cache).
Tests that need exact counts start a fresh load balancer; the module-scoped ``lb`` is shared.
"""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest
from websockets.sync.client import connect

from tests.support import (
    STATS_PAYLOADS,
    LoadBalancer,
    SilentServer,
    UpstreamServer,
    closed_port_url,
    env_for,
)

AGGREGATED = ("api-gateway", "auth", "blog_service", "user_service")
CAP = 1024 * 1024  # the default LB_STATS_MAX_PAYLOAD


def stats(balancer: LoadBalancer) -> dict:
    response = balancer.client.get("/stats")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("application/json")
    return response.json()


def own(balancer: LoadBalancer) -> dict:
    return stats(balancer)["load-balancer"]


@pytest.fixture
def fresh_lb(upstreams: dict[str, UpstreamServer]) -> Iterator[LoadBalancer]:
    """A load balancer of this test alone: its counters start at zero."""
    balancer = LoadBalancer(env_for(upstreams, LB_STATS_CACHE_TTL="0"))
    yield balancer
    balancer.stop()


@pytest.fixture
def restore_payloads(upstreams: dict[str, UpstreamServer]) -> Iterator[dict[str, UpstreamServer]]:
    """The shared upstreams, with their ``/stats`` payloads put back after the test."""
    yield upstreams
    for name, server in upstreams.items():
        server.stats_payload = STATS_PAYLOADS[name]


# ------------------------------------------------------------------ the load balancer's figures


def test_classification_of_real_api_traffic(fresh_lb: LoadBalancer) -> None:
    client = fresh_lb.client
    before = own(fresh_lb)
    assert before["total_requests"] == 0
    assert before["has_real_traffic"] is False
    assert before["success_rate"] == 0  # before the first real request

    # Not real API traffic: HEAD, X-Heartbeat: true, and anything outside /api/.
    for _ in range(20):
        assert client.head("/api/x").status_code == 200
    for _ in range(20):
        assert client.get("/api/x", headers={"X-Heartbeat": "true"}).status_code == 200
    for _ in range(30):
        assert client.get("/").status_code == 200
    entry = own(fresh_lb)
    assert entry["total_requests"] == 70
    assert entry["requests_per_second"] == 0
    assert entry["avg_response_time_ms"] == 0
    assert entry["has_real_traffic"] is False
    assert entry["success_rate"] == 0

    for _ in range(50):
        assert client.get("/api/x").status_code == 200
    entry = own(fresh_lb)
    assert entry["total_requests"] == 120
    assert entry["requests_per_second"] == 5.0
    assert entry["success_rate"] == 100.0
    assert entry["has_real_traffic"] is True
    assert entry["status"] == "healthy"
    assert entry["avg_response_time_ms"] > 0

    # An upstream's 4xx is a failure of a real request; a failing HEAD is not real traffic.
    for _ in range(10):
        assert client.get("/api/x?status=404").status_code == 404
    for _ in range(5):
        assert client.head("/api/x?status=500").status_code == 500
    entry = own(fresh_lb)
    assert entry["total_requests"] == 135
    assert entry["requests_per_second"] == 6.0
    assert entry["success_rate"] == pytest.approx(100.0 * 50 / 60, abs=0.01)

    # Answered by the load balancer itself, not proxied: not counted (the Go original
    # counts 0), neither the /blog redirect nor a canonical-path one under /api/.
    for path in ("/blog", "/blog?x=1", "/api//x"):
        response = client.get(path, follow_redirects=False)
        assert response.status_code == 308, path
    entry = own(fresh_lb)
    assert entry["total_requests"] == 135
    assert entry["requests_per_second"] == 6.0
    assert entry["success_rate"] == pytest.approx(100.0 * 50 / 60, abs=0.01)


def test_durations_of_a_slow_upstream(fresh_lb: LoadBalancer) -> None:
    def slow(_: int) -> int:
        return fresh_lb.client.get("/api/slow?delay=0.2").status_code

    with ThreadPoolExecutor(4) as pool:
        assert list(pool.map(slow, range(4))) == [200] * 4
    entry = own(fresh_lb)
    assert entry["requests_per_second"] == 0.4
    avg = entry["avg_response_time_ms"]
    assert 200.0 <= avg <= 260.0
    # the histogram's median of four requests of 200 ms and a little more (on a busy machine
    # they spread, so the median need not be the mean)
    assert 190.0 <= entry["p50_ms"] <= 275.0
    assert entry["p50_ms"] <= entry["p95_ms"] <= entry["p99_ms"]
    # Only these four real requests so far: the lifetime mean is the window's mean.
    assert entry["avg_response_time_ms_lifetime"] == pytest.approx(avg, abs=0.01)

    # A request lasts until its last byte is handed over: a stream of three events 0.2 s
    # apart (then 0.2 s to the end) takes about 0.6 s, not the time to its first byte.
    with fresh_lb.client.stream("GET", "/api/events?sse=3&interval=0.2") as response:
        assert response.status_code == 200
        assert response.read().count(b"data: ") == 3
    after = own(fresh_lb)
    assert after["real_requests_in_window"] == 5
    streamed_ms = 5 * after["avg_response_time_ms"] - 4 * avg
    assert 550.0 <= streamed_ms <= 800.0


def test_idle_after_ten_seconds_then_heartbeat_message(
    upstreams: dict[str, UpstreamServer],
) -> None:
    """Real traffic and a socket's opening age out of the window; a message brings it back.

    Pings are far apart here, so the open socket shows no activity of its own meanwhile.
    """
    balancer = LoadBalancer(
        env_for(
            upstreams, LB_STATS_CACHE_TTL="0", LB_WS_PING_INTERVAL="60", LB_WS_IDLE_TIMEOUT="60"
        )
    )
    url = f"ws://127.0.0.1:{balancer.port}/api/ws-heartbeat"
    try:
        assert own(balancer)["has_real_traffic"] is False
        with connect(url, ping_interval=None, open_timeout=5) as ws:
            for _ in range(2):
                assert balancer.client.get("/api/slow?delay=0.1").status_code == 200
            last = time.monotonic()
            busy = own(balancer)
            assert busy["has_real_traffic"] is True
            assert busy["requests_per_second"] == 0.2
            lifetime = busy["avg_response_time_ms_lifetime"]
            assert 100.0 <= lifetime < 200.0  # the upstream's 100 ms each, not their sum

            # 2 s short of the window's end: a busy machine may delay this call by a second
            time.sleep(max(0.0, last + 8.0 - time.monotonic()))
            still = own(balancer)
            assert still["has_real_traffic"] is True, "the window is 10 s, not shorter"
            assert still["requests_per_second"] == 0.2

            deadline = last + 13.5  # gone soon after 10 s (a 15-s window would still hold it)
            while (idle := own(balancer))["has_real_traffic"] and time.monotonic() < deadline:
                time.sleep(0.1)
            assert idle["has_real_traffic"] is False
            assert idle["requests_per_second"] == 0
            assert idle["avg_response_time_ms"] == 0
            assert idle["p50_ms"] == 0
            assert idle["ws_connections"] == 1  # an open but silent socket is not activity
            assert idle["avg_response_time_ms_lifetime"] == pytest.approx(lifetime, abs=0.01)
            assert idle["success_rate"] == 100.0

            ws.send("hb")
            deadline = time.monotonic() + 5.0
            while not (woken := own(balancer))["has_real_traffic"] and time.monotonic() < deadline:
                time.sleep(0.05)
            assert woken["has_real_traffic"] is True
            assert woken["requests_per_second"] == 0  # a heartbeat is not a request
            assert woken["total_requests"] == 2
    finally:
        balancer.stop()


# ------------------------------------------------------------------ document shape


def is_number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def test_contract_keys_and_types(lb: LoadBalancer) -> None:
    document = stats(lb)
    assert set(document) >= {"load-balancer", *AGGREGATED, "database", "cache"}
    assert "dashboard-ui" not in document  # not aggregated
    entry = document["load-balancer"]
    assert entry["status"] == "healthy"
    assert isinstance(entry["total_requests"], int) and not isinstance(
        entry["total_requests"], bool
    )
    for key in (
        "requests_per_second",
        "avg_response_time_ms",
        "avg_response_time_ms_lifetime",
        "success_rate",
    ):
        assert is_number(entry[key]), key
    assert isinstance(entry["has_real_traffic"], bool)

    # Each entry is the inner object of the service's {"<name>": {...}} answer.
    assert document["api-gateway"] == {"service_status": "online", "info": "Proxying API requests"}
    assert document["auth"] == {"service_status": "online", "active_session_count": 0}
    assert document["blog_service"] == {"service_status": "online", "post_count": 3}
    assert document["user_service"] == STATS_PAYLOADS["user-service"]["user_service"]
    assert document["database"] == {"status": "healthy"}
    assert document["cache"] == {"status": "healthy", "hit_ratio": 0}


def test_unwrapping_rules(lb: LoadBalancer, restore_payloads: dict[str, UpstreamServer]) -> None:
    ups = restore_payloads
    ups["auth-service"].stats_payload = {"service_status": "online", "active_session_count": 2}
    ups["blog-service"].stats_payload = {"post_count": 7}  # one key, but not an object
    ups["api-gateway"].stats_payload = {"gateway-v2": {"service_status": "online"}}  # any one key
    ups["user-service"].stats_payload = {"user_service": {"service_status": "online"}}
    document = stats(lb)
    assert document["auth"] == {"service_status": "online", "active_session_count": 2}
    assert document["blog_service"] == {"post_count": 7}
    assert document["api-gateway"] == {"service_status": "online"}
    assert document["user_service"] == {"service_status": "online"}
    # Nothing to lift when the user service reports neither.
    assert "database" not in document and "cache" not in document


# ------------------------------------------------------------------ degraded upstreams


def assert_offline(entry: dict, reason: str) -> None:
    assert set(entry) == {"service_status", "error"}, entry
    assert entry["service_status"] == "offline"
    assert reason in entry["error"], entry


def test_degraded_upstreams_are_offline_with_a_reason() -> None:
    gateway = UpstreamServer("api-gateway", [1, 2]).start()  # a JSON list
    blog = UpstreamServer("blog-service", b"{not json").start()
    dashboard = UpstreamServer("dashboard-ui").start()
    silent = SilentServer()  # the user service hangs
    balancer = LoadBalancer(
        env_for(
            {},
            API_GATEWAY_URL=gateway.url,
            BLOG_SERVICE_URL=blog.url,
            DASHBOARD_UI_URL=dashboard.url,
            AUTH_SERVICE_URL=closed_port_url(),
            USER_SERVICE_URL=silent.url,
            LB_STATS_CACHE_TTL="0",
            LB_STATS_TIMEOUT="2",
        )
    )
    try:
        started = time.monotonic()
        document = stats(balancer)
        elapsed = time.monotonic() - started
        # one 2-s deadline for the whole fan-out, not the hung service's silence (the client
        # would give up at 30 s) nor a deadline per upstream in turn
        assert elapsed < 4.0
        assert_offline(document["auth"], "refused")
        assert_offline(document["user_service"], "timeout")
        assert_offline(document["blog_service"], "invalid JSON")
        assert_offline(document["api-gateway"], "not a JSON object")
        assert "database" not in document and "cache" not in document
        assert document["load-balancer"]["status"] == "healthy"
        # The proxy and its health check are unaffected.
        assert balancer.client.get("/lb-health").status_code == 200
        assert balancer.client.get("/api/x").json()["upstream"] == "api-gateway"
    finally:
        balancer.stop()
        silent.stop()
        for server in (gateway, blog, dashboard):
            server.stop()


def test_http_error_and_too_large_leave_healthy_entries_intact(
    lb: LoadBalancer, restore_payloads: dict[str, UpstreamServer]
) -> None:
    ups = restore_payloads
    ups["blog-service"].stats_payload = (500, {"blog_service": {"service_status": "online"}})
    ups["auth-service"].stats_payload = (404, b"")
    ups["api-gateway"].stats_payload = {"api-gateway": {"blob": "x" * CAP}}  # just over 1 MiB
    document = stats(lb)
    assert_offline(document["blog_service"], "HTTP 500")
    assert_offline(document["auth"], "HTTP 404")
    assert_offline(document["api-gateway"], "too large")
    assert document["user_service"] == STATS_PAYLOADS["user-service"]["user_service"]
    assert document["database"] == {"status": "healthy"}


def test_payload_just_under_the_cap_is_accepted(
    lb: LoadBalancer, restore_payloads: dict[str, UpstreamServer]
) -> None:
    overhead = len(json.dumps({"api-gateway": {"blob": ""}}).encode())
    blob = "x" * (CAP - overhead)
    ups = restore_payloads
    ups["api-gateway"].stats_payload = {"api-gateway": {"blob": blob}}
    assert len(json.dumps(ups["api-gateway"].stats_payload).encode()) == CAP
    document = stats(lb)
    assert document["api-gateway"] == {"blob": blob}


class ChunkedStatsServer:
    """Answers every request with a chunked (no Content-Length) JSON body of ``size`` bytes."""

    def __init__(self, size: int) -> None:
        self._size = size
        self._sock = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self._sock.getsockname()[1]}"
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self._sock.accept()
            except OSError:
                return
            threading.Thread(target=self._answer, args=(conn,), daemon=True).start()

    def _answer(self, conn: socket.socket) -> None:
        with conn:
            try:
                data = b""
                while b"\r\n\r\n" not in data:
                    data += conn.recv(4096)
                conn.sendall(
                    b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                    b"Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
                )
                body = b'{"auth": {"blob": "' + b"x" * (self._size - 22) + b'"}}'
                for at in range(0, len(body), 65536):
                    piece = body[at : at + 65536]
                    conn.sendall(b"%x\r\n%s\r\n" % (len(piece), piece))
                conn.sendall(b"0\r\n\r\n")
            except OSError:
                pass

    def stop(self) -> None:
        self._sock.close()


def test_too_large_without_content_length(upstreams: dict[str, UpstreamServer]) -> None:
    chunked = ChunkedStatsServer(3 * CAP)
    balancer = LoadBalancer(
        env_for(upstreams, AUTH_SERVICE_URL=chunked.url, LB_STATS_CACHE_TTL="0")
    )
    try:
        document = stats(balancer)
        assert_offline(document["auth"], "too large")
        assert document["blog_service"] == {"service_status": "online", "post_count": 3}
    finally:
        balancer.stop()
        chunked.stop()


# ------------------------------------------------------------------ fan-out economy


def test_fifty_concurrent_stats_calls_ask_each_upstream_a_handful_of_times(
    upstreams: dict[str, UpstreamServer],
) -> None:
    # reuse for 5 s, an option (the default is 0: fresh on every call); long enough that a
    # busy machine still makes all these calls within one or two lifetimes of an answer
    ttl = 5.0
    balancer = LoadBalancer(env_for(upstreams, LB_STATS_CACHE_TTL=str(ttl)))
    aggregated = [s for name, s in upstreams.items() if name != "dashboard-ui"]
    try:
        before = {s.name: s.hits["/stats"] for s in aggregated}
        barrier = threading.Barrier(50)

        def call(_: int) -> dict:
            with httpx.Client(base_url=balancer.url, timeout=10, trust_env=False) as client:
                barrier.wait()
                response = client.get("/stats")
                assert response.status_code == 200
                return response.json()

        with ThreadPoolExecutor(50) as pool:
            documents = list(pool.map(call, range(50)))
        for document in documents:
            assert document["blog_service"] == {"service_status": "online", "post_count": 3}
            assert document["database"] == {"status": "healthy"}
        for server in aggregated:
            grown = server.hits["/stats"] - before[server.name]
            assert 1 <= grown <= 3, (server.name, grown)
        assert upstreams["dashboard-ui"].hits["/stats"] == 0

        # One after another within the cache's lifetime: the cached answer, at most one refresh.
        before = {s.name: s.hits["/stats"] for s in aggregated}
        started = time.monotonic()
        for _ in range(10):
            assert stats(balancer)["auth"] == {
                "service_status": "online",
                "active_session_count": 0,
            }
        assert time.monotonic() - started < ttl  # what the next assertion presumes
        for server in aggregated:
            assert server.hits["/stats"] - before[server.name] <= 1, server.name
    finally:
        balancer.stop()
