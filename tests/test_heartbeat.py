"""``/api/ws-heartbeat`` against a real load-balancer process.

Clients are the ``websockets`` package's sync client (which answers pings by itself) and,
where a client must misbehave (never answer a ping, vanish without a close frame), a raw
socket that performs the upgrade handshake by hand.
"""

from __future__ import annotations

import base64
import hashlib
import os
import signal
import socket
import struct
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from pathlib import Path

import httpx
import pytest
from websockets.exceptions import ConnectionClosed
from websockets.protocol import State
from websockets.sync.client import ClientConnection, connect

from tests.support import LoadBalancer, UpstreamServer, children, env_for, wait_for

WS_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
OP_CLOSE, OP_PING = 0x8, 0x9


def ws_url(balancer: LoadBalancer) -> str:
    return f"ws://127.0.0.1:{balancer.port}/api/ws-heartbeat"


def own(balancer: LoadBalancer) -> dict:
    response = balancer.client.get("/stats")
    assert response.status_code == 200
    return response.json()["load-balancer"]


def own_when(balancer: LoadBalancer, check: Callable[[dict], bool], timeout: float = 2.0) -> dict:
    """Poll ``/stats`` until ``check(entry)`` holds (fails after ``timeout``); that entry."""

    def entry() -> dict | None:
        found = own(balancer)
        return found if check(found) else None

    return wait_for(entry, timeout).value


def open_ws(balancer: LoadBalancer) -> ClientConnection:
    # No client-side pings: only the server's pings and the client's pongs are exchanged.
    return connect(ws_url(balancer), ping_interval=None, open_timeout=5, close_timeout=2)


class RawSocket:
    """A WebSocket client by hand: the upgrade handshake, then only what the test sends."""

    def __init__(self, port: int) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=5)
        key = base64.b64encode(os.urandom(16))
        self.sock.sendall(
            b"GET /api/ws-heartbeat HTTP/1.1\r\nHost: 127.0.0.1:%d\r\nUpgrade: websocket\r\n"
            b"Connection: Upgrade\r\nSec-WebSocket-Key: %s\r\nSec-WebSocket-Version: 13\r\n\r\n"
            % (port, key)
        )
        data = b""
        while b"\r\n\r\n" not in data:
            chunk = self.sock.recv(4096)
            assert chunk, "connection closed during the handshake"
            data += chunk
        head, _, self.buffer = data.partition(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        assert lines[0].split()[1] == "101", lines[0]
        accept = base64.b64encode(hashlib.sha1(key + WS_GUID).digest()).decode()
        headers = {
            k.strip().lower(): v.strip() for k, _, v in (ln.partition(":") for ln in lines[1:])
        }
        assert headers["sec-websocket-accept"] == accept

    def _read(self, n: int, deadline: float) -> bytes | None:
        while len(self.buffer) < n:
            self.sock.settimeout(max(0.01, deadline - time.monotonic()))
            try:
                chunk = self.sock.recv(65536)
            except TimeoutError:
                raise
            except OSError:
                return None
            if not chunk:
                return None
            self.buffer += chunk
        data, self.buffer = self.buffer[:n], self.buffer[n:]
        return data

    def next_frame(self, deadline: float) -> tuple[int, bytes] | None:
        """The next frame from the server as (opcode, payload), or None at EOF."""
        head = self._read(2, deadline)
        if head is None:
            return None
        opcode, length = head[0] & 0x0F, head[1] & 0x7F
        assert not head[1] & 0x80, "a server must not mask its frames"
        if length in (126, 127):
            raw = self._read(2 if length == 126 else 8, deadline)
            if raw is None:
                return None
            length = struct.unpack("!H" if len(raw) == 2 else "!Q", raw)[0]
        payload = self._read(length, deadline)
        return None if payload is None else (opcode, payload)

    def close(self, reset: bool = False) -> None:
        if reset:  # RST instead of FIN
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.sock.close()


@pytest.fixture
def quiet_lb(upstreams: dict[str, UpstreamServer]) -> Iterator[LoadBalancer]:
    """A load balancer of this test alone, with no activity of any kind yet."""
    balancer = LoadBalancer(env_for(upstreams, LB_STATS_CACHE_TTL="0"))
    yield balancer
    balancer.stop()


def test_opening_a_socket_counts(
    quiet_lb: LoadBalancer, upstreams: dict[str, UpstreamServer]
) -> None:
    before = own(quiet_lb)
    assert before["ws_connections"] == 0
    assert before["has_real_traffic"] is False
    with open_ws(quiet_lb):
        entry = own_when(quiet_lb, lambda e: e["ws_connections"] == 1)
        assert entry["ws_connections"] == 1
        assert entry["has_real_traffic"] is True
        assert entry["total_requests"] == 0  # the socket is not a proxied request
        assert entry["requests_per_second"] == 0
    assert own_when(quiet_lb, lambda e: e["ws_connections"] == 0)["ws_connections"] == 0
    assert upstreams["api-gateway"].hits["/api/ws-heartbeat"] == 0  # answered locally


def test_a_plain_get_is_not_a_socket_and_not_proxied(
    quiet_lb: LoadBalancer, upstreams: dict[str, UpstreamServer]
) -> None:
    response = quiet_lb.client.get("/api/ws-heartbeat")
    assert 400 <= response.status_code < 500
    assert upstreams["api-gateway"].hits["/api/ws-heartbeat"] == 0
    entry = own(quiet_lb)
    assert entry["ws_connections"] == 0
    assert entry["has_real_traffic"] is False


@pytest.mark.parametrize("reset", [False, True], ids=["fin", "rst"])
def test_a_vanished_client_leaves_nothing_behind(quiet_lb: LoadBalancer, reset: bool) -> None:
    raw = RawSocket(quiet_lb.port)
    assert own_when(quiet_lb, lambda e: e["ws_connections"] == 1)["ws_connections"] == 1
    raw.close(reset=reset)  # no close frame
    assert own_when(quiet_lb, lambda e: e["ws_connections"] == 0)["ws_connections"] == 0


def test_pongs_keep_a_socket_open_and_a_silent_one_is_closed(
    upstreams: dict[str, UpstreamServer],
) -> None:
    idle_timeout = 3.0
    balancer = LoadBalancer(
        env_for(upstreams, LB_STATS_CACHE_TTL="0", LB_WS_PING_INTERVAL="1", LB_WS_IDLE_TIMEOUT="3")
    )
    try:
        with open_ws(balancer) as answering:  # answers pings, sends nothing else
            opened = time.monotonic()
            silent = RawSocket(balancer.port)  # answers nothing
            silent_opened = time.monotonic()
            assert own_when(balancer, lambda e: e["ws_connections"] == 2)["ws_connections"] == 2

            pings, closed_by = 0, None
            deadline = silent_opened + idle_timeout + 5.0  # a busy machine's margin
            while time.monotonic() < deadline:
                try:
                    frame = silent.next_frame(deadline)
                except TimeoutError:
                    break
                if frame is None or frame[0] == OP_CLOSE:
                    closed_by = "eof" if frame is None else "close frame"
                    break
                if frame[0] == OP_PING:
                    pings += 1
            closed_after = time.monotonic() - silent_opened
            silent.close()
            assert closed_by is not None, "a client that never answers a ping must be closed"
            assert closed_after >= idle_timeout - 0.5, f"closed after {closed_after:.2f} s"
            assert pings >= 2  # the server pinged every second meanwhile

            time.sleep(max(0.0, opened + 5.0 - time.monotonic()))
            assert answering.protocol.state is State.OPEN
            with pytest.raises(TimeoutError):
                answering.recv(timeout=0.2)  # no close frame has come either
            answering.send("hb")
            entry = own_when(balancer, lambda e: e["ws_connections"] == 1)
            assert entry["ws_connections"] == 1
        assert own_when(balancer, lambda e: e["ws_connections"] == 0)["ws_connections"] == 0
    finally:
        balancer.stop()


def test_two_hundred_sockets(quiet_lb: LoadBalancer) -> None:
    with open_ws(quiet_lb):
        pass  # warm-up: the first socket pays for imports and buffers
    own_when(quiet_lb, lambda e: e["ws_connections"] == 0)
    rss_before = quiet_lb.rss_kib()
    with ExitStack() as stack:
        sockets = [stack.enter_context(open_ws(quiet_lb)) for _ in range(200)]
        entry = own_when(quiet_lb, lambda e: e["ws_connections"] == 200)
        assert entry["ws_connections"] == 200
        grown_mib = (quiet_lb.rss_kib() - rss_before) / 1024
        assert grown_mib < 60, f"RSS grew by {grown_mib:.1f} MiB for 200 sockets"
        for ws in sockets:  # every socket is alive: a message on each goes through
            ws.send("hb")
        # Close them all at once, as a fleet of dashboards going away would.
        closers = [threading.Thread(target=ws.close) for ws in sockets]
        for closer in closers:
            closer.start()
        for closer in closers:
            closer.join()
    assert own_when(quiet_lb, lambda e: e["ws_connections"] == 0)["ws_connections"] == 0


def test_sockets_on_any_worker_are_counted_by_every_worker(
    upstreams: dict[str, UpstreamServer],
) -> None:
    balancer = LoadBalancer(env_for(upstreams, LB_STATS_CACHE_TTL="0"), workers=2)
    try:
        # Ready means one worker answers; wait for both before counting anything.
        assert own_when(balancer, lambda e: e["workers"] == 2, timeout=10.0)["workers"] == 2
        with ExitStack() as stack:
            for _ in range(10):
                stack.enter_context(open_ws(balancer))
            # every socket counted (this was a fixed 0.3-s sleep)
            own_when(balancer, lambda e: e["ws_connections"] == 10)
            seen = []
            for _ in range(10):
                # A new connection each time, so the kernel may hand it to either worker.
                response = balancer.client.get("/stats", headers={"Connection": "close"})
                seen.append(response.json()["load-balancer"]["ws_connections"])
            assert seen == [10] * 10
        assert own_when(balancer, lambda e: e["ws_connections"] == 0)["ws_connections"] == 0
    finally:
        balancer.stop()


def established_sockets_by_pid(port: int, pids: list[int]) -> dict[int, int]:
    """How many ESTABLISHED TCP connections on local ``port`` each of ``pids`` holds."""
    inodes = set()
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        if int(fields[1].rsplit(":", 1)[1], 16) == port and fields[3] == "01":
            inodes.add(fields[9])
    counts = {}
    for pid in pids:
        try:
            fds = [os.readlink(fd) for fd in Path(f"/proc/{pid}/fd").iterdir()]
        except OSError:
            continue
        counts[pid] = sum(1 for fd in fds if fd.startswith("socket:[") and fd[8:-1] in inodes)
    return counts


def held_by_workers(balancer: LoadBalancer) -> dict[int, int]:
    return established_sockets_by_pid(balancer.port, children(balancer.process.pid))


def test_sockets_of_a_killed_worker_are_no_longer_counted(
    upstreams: dict[str, UpstreamServer],
) -> None:
    balancer = LoadBalancer(env_for(upstreams, LB_STATS_CACHE_TTL="0"), workers=2)
    try:
        assert own_when(balancer, lambda e: e["workers"] == 2, timeout=10.0)["workers"] == 2
        balancer.client.close()  # no keep-alive connection of ours in the way
        with ExitStack() as stack:
            sockets = [stack.enter_context(open_ws(balancer)) for _ in range(10)]
            # every socket held by a worker (this was a fixed 0.3-s sleep)
            wait_for(lambda: sum(held_by_workers(balancer).values()) == 10, timeout=5.0)
            held = held_by_workers(balancer)
            victim = max(held, key=held.__getitem__)
            assert held[victim] >= 1 and sum(held.values()) == 10, held
            os.kill(victim, signal.SIGKILL)

            # The victim's sockets died with it: their clients see the connection end.
            def still_open() -> int:
                return sum(1 for ws in sockets if ws.protocol.state is State.OPEN)

            wait_for(lambda: still_open() == 10 - held[victim], timeout=3.0)
            open_now = still_open()
            assert open_now == 10 - held[victim]

            def count() -> dict:
                response = httpx.get(
                    balancer.url + "/stats", headers={"Connection": "close"}, trust_env=False
                )
                return response.json()["load-balancer"]

            entry = wait_for(
                lambda: e if (e := count())["ws_connections"] == open_now else None,
                timeout=2.0,
                step=0.1,
            ).value
            assert entry["workers"] == 1
            assert entry["ws_connections"] == open_now
    finally:
        balancer.stop()


def test_idle_close_reaches_the_client_as_a_close_frame(
    upstreams: dict[str, UpstreamServer],
) -> None:
    """A websockets client closed for silence gets a proper close frame (code 1001)."""
    balancer = LoadBalancer(env_for(upstreams, LB_WS_PING_INTERVAL="60", LB_WS_IDLE_TIMEOUT="1"))
    try:
        with open_ws(balancer) as ws:
            started = time.monotonic()
            with pytest.raises(ConnectionClosed) as closed:
                ws.recv(timeout=10)  # nothing else closes it this soon (pings every 60 s)
            assert 0.5 <= time.monotonic() - started <= 6.0  # the 1-s timeout, and a margin
            assert closed.value.rcvd is not None and closed.value.rcvd.code == 1001
        assert own_when(balancer, lambda e: e["ws_connections"] == 0)["ws_connections"] == 0
    finally:
        balancer.stop()
