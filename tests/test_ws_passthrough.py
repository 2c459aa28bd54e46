"""WebSocket pass-through: upgrade requests under /api/* are tunnelled to the gateway pool."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import pytest
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect
from websockets.sync.server import Server, ServerConnection, serve

from tests.support import LoadBalancer, UpstreamServer, env_for, wait_for


class EchoServer:
    """A real WebSocket server: echoes frames; ``close:<code>`` makes it close with that code."""

    def __init__(self) -> None:
        self.paths: list[str] = []
        self.headers: list[dict[str, str]] = []
        self._server: Server = serve(self._handle, "127.0.0.1", 0, max_size=4 * 1024 * 1024)
        self.port = self._server.socket.getsockname()[1]
        threading.Thread(target=self._server.serve_forever, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def _handle(self, ws: ServerConnection) -> None:
        self.paths.append(ws.request.path)
        self.headers.append({k.lower(): v for k, v in ws.request.headers.raw_items()})
        try:
            for message in ws:
                if isinstance(message, str) and message.startswith("close:"):
                    ws.close(int(message.split(":")[1]), "bye")
                    return
                ws.send(message)
        except ConnectionClosed:
            pass

    def stop(self) -> None:
        self._server.shutdown()


@pytest.fixture(scope="module")
def echo() -> Iterator[EchoServer]:
    server = EchoServer()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def ws_lb(upstreams: dict[str, UpstreamServer], echo: EchoServer) -> Iterator[LoadBalancer]:
    balancer = LoadBalancer(
        env_for(upstreams, API_GATEWAY_URL=echo.url, LB_WS_TUNNEL_IDLE_TIMEOUT="2")
    )
    yield balancer
    balancer.stop()


def stats(lb: LoadBalancer) -> dict:
    return lb.client.get("/stats").json()["load-balancer"]


def ws_url(lb: LoadBalancer, path: str) -> str:
    return f"ws://127.0.0.1:{lb.port}{path}"


def test_text_and_binary_frames_pass_both_ways(ws_lb: LoadBalancer, echo: EchoServer) -> None:
    with connect(ws_url(ws_lb, "/api/chat?room=1")) as ws:
        ws.send("hello")
        assert ws.recv(timeout=5) == "hello"
        ws.send(b"\x00\x01\xffbinary")
        assert ws.recv(timeout=5) == b"\x00\x01\xffbinary"
    assert echo.paths[-1] == "/api/chat?room=1"
    forwarded = echo.headers[-1]
    assert forwarded["x-forwarded-for"] == "127.0.0.1"
    assert forwarded["x-forwarded-proto"] == "http"


def test_a_one_mebibyte_frame_arrives_whole(ws_lb: LoadBalancer) -> None:
    payload = bytes(range(256)) * 4096
    with connect(ws_url(ws_lb, "/api/big"), max_size=4 * 1024 * 1024) as ws:
        ws.send(payload)
        assert ws.recv(timeout=10) == payload


def test_the_upstream_close_code_reaches_the_client(ws_lb: LoadBalancer) -> None:
    with connect(ws_url(ws_lb, "/api/closing")) as ws:
        ws.send("close:4001")
        with pytest.raises(ConnectionClosed) as closed:
            ws.recv(timeout=5)
    assert closed.value.rcvd is not None and closed.value.rcvd.code == 4001


def test_the_client_close_code_reaches_the_upstream_and_pings_are_answered(
    ws_lb: LoadBalancer,
) -> None:
    with connect(ws_url(ws_lb, "/api/ping")) as ws:
        pong = ws.ping()
        assert pong.wait(timeout=5)  # the upstream answered through the tunnel
        ws.close(code=4002)
    assert ws.close_code == 4002  # the echo server's websockets echoes the close code


def test_a_silent_tunnel_is_closed_after_the_idle_timeout(ws_lb: LoadBalancer) -> None:
    with connect(ws_url(ws_lb, "/api/idle"), ping_interval=None) as ws:
        started = time.monotonic()
        with pytest.raises(ConnectionClosed):
            ws.recv(timeout=15)  # nothing else would close it this soon (the default is 300 s)
        assert 1.5 < time.monotonic() - started < 10  # the 2-s idle timeout, and a margin


def test_the_heartbeat_socket_is_still_answered_locally(
    ws_lb: LoadBalancer, echo: EchoServer
) -> None:
    before = len(echo.paths)
    with connect(ws_url(ws_lb, "/api/ws-heartbeat")) as ws:
        ws.send("hb")
        # the socket is open and counted here (this was a fixed 0.2-s sleep)
        wait_for(lambda: stats(ws_lb)["ws_connections"] == 1, timeout=5)
    assert len(echo.paths) == before
    assert stats(ws_lb)["has_real_traffic"] is True


def test_tunnels_do_not_count_as_real_api_traffic_and_the_proxy_stays_healthy(
    ws_lb: LoadBalancer,
) -> None:
    entry = ws_lb.client.get("/stats").json()["load-balancer"]
    assert entry["real_requests_total"] == 0
    assert ws_lb.client.get("/lb-health").status_code == 200
