"""Shared fixtures: real upstream servers on ephemeral ports and real load-balancer processes."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections import deque
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from sanic import Sanic

from tests.upstream_server import UpstreamServer

REPO = Path(__file__).resolve().parent.parent
SANIC = str(Path(sys.executable).with_name("sanic"))

# upstream name -> environment variable of its URL
URL_VARS = {
    "api-gateway": "API_GATEWAY_URL",
    "dashboard-ui": "DASHBOARD_UI_URL",
    "blog-service": "BLOG_SERVICE_URL",
    "auth-service": "AUTH_SERVICE_URL",
    "user-service": "USER_SERVICE_URL",
}
STATS_PAYLOADS = {
    "api-gateway": {"api-gateway": {"service_status": "online", "info": "Proxying API requests"}},
    "dashboard-ui": {"dashboard-ui": {"service_status": "online"}},
    "blog-service": {"blog_service": {"service_status": "online", "post_count": 3}},
    "auth-service": {"auth": {"service_status": "online", "active_session_count": 0}},
    "user-service": {
        "user_service": {
            "service_status": "online",
            "database": {"status": "healthy"},
            "cache": {"status": "healthy", "hit_ratio": 0},
        }
    },
}


@pytest.fixture(autouse=True)
def _fresh_sanic_registry(request: pytest.FixtureRequest) -> Iterator[None]:
    """Each test may build apps with the same names; Sanic keeps a global registry of them."""
    Sanic._app_registry.clear()
    Sanic.test_mode = True
    yield
    Sanic._app_registry.clear()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start_upstreams() -> dict[str, UpstreamServer]:
    return {name: UpstreamServer(name, STATS_PAYLOADS[name]).start() for name in URL_VARS}


def env_for(upstreams: dict[str, UpstreamServer], **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("LB_", "SANIC_"))}
    env.update({URL_VARS[name]: server.url for name, server in upstreams.items()})
    env.update(extra)
    return env


class LoadBalancer:
    """A real ``sanic service.app`` process on 127.0.0.1 and an httpx client for it."""

    def __init__(self, env: dict[str, str], *, workers: int | None = None) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.workers = workers
        mode = ["--single-process"] if workers is None else ["--workers", str(workers)]
        # The process's output is read by a thread: kept (last lines) for diagnosis, echoed
        # live with LB_TEST_LOG=1, and watched for "Worker ready" (see _wait_ready).
        self.output: deque[str] = deque(maxlen=500)
        self.workers_ready = 0
        self._echo = bool(os.environ.get("LB_TEST_LOG"))
        self.process = subprocess.Popen(
            [SANIC, "service.app", "--host", "127.0.0.1", "--port", str(self.port), *mode],
            cwd=REPO,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        self._reader = threading.Thread(target=self._read_output, daemon=True)
        self._reader.start()
        self.client = httpx.Client(base_url=self.url, timeout=30.0, trust_env=False)
        self._wait_ready()

    def _read_output(self) -> None:
        assert self.process.stdout is not None
        for raw in iter(self.process.stdout.readline, b""):
            line = raw.decode("utf-8", "replace")
            self.output.append(line)
            if "Worker ready" in line:
                self.workers_ready += 1
            if self._echo:
                sys.stderr.write(line)
        self.process.stdout.close()

    def _wait_ready(self, timeout: float = 20.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"load balancer exited with {self.process.returncode}")
            try:
                if self.client.get("/lb-health").status_code == 200:
                    break
            except httpx.TransportError:
                time.sleep(0.1)
        else:
            raise RuntimeError("load balancer did not become ready")
        # With several workers, the first one answering is not enough: until the main process
        # has seen every worker's start-up ack (it polls every 0.1 s), a SIGTERM makes Sanic
        # 25.12 spin forever in WorkerManager.wait_for_ack instead of shutting down.
        if self.workers:
            while self.workers_ready < self.workers:
                if time.monotonic() > deadline:
                    raise RuntimeError(f"only {self.workers_ready} of {self.workers} workers ready")
                time.sleep(0.05)
            time.sleep(0.3)

    def rss_kib(self) -> int:
        """Resident memory of the process tree's serving process(es), in KiB."""
        total = 0
        for pid in [self.process.pid, *_children(self.process.pid)]:
            try:
                for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                    if line.startswith("VmRSS:"):
                        total += int(line.split()[1])
            except OSError:
                continue
        return total

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 20.0) -> int:
        self.client.close()
        if self.process.poll() is None:
            self.process.send_signal(sig)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()
        self._reader.join(5)
        return self.process.returncode


def raw_request(
    port: int, head: bytes, body: bytes = b"", timeout: float = 5.0
) -> tuple[int, dict[str, str], bytes]:
    """Send ``head`` (and ``body``) exactly as given over a fresh connection and read until the
    server closes it (send ``Connection: close``); return status, headers (lower-case names,
    last value wins) and the body bytes as they came off the wire."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.sendall(head + body)
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    head_bytes, _, rest = data.partition(b"\r\n\r\n")
    lines = head_bytes.decode("latin-1").split("\r\n")
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    return int(lines[0].split()[1]), headers, rest


def _children(pid: int) -> list[int]:
    try:
        text = Path(f"/proc/{pid}/task/{pid}/children").read_text()
    except OSError:
        return []
    kids = [int(p) for p in text.split()]
    return kids + [g for k in kids for g in _children(k)]


@pytest.fixture(scope="module")
def upstreams() -> Iterator[dict[str, UpstreamServer]]:
    servers = start_upstreams()
    yield servers
    for server in servers.values():
        server.stop()


@pytest.fixture(scope="module")
def lb(upstreams: dict[str, UpstreamServer]) -> Iterator[LoadBalancer]:
    """One single-process load balancer per test module, in front of ``upstreams``."""
    balancer = LoadBalancer(env_for(upstreams, LB_READ_TIMEOUT="3", LB_STATS_CACHE_TTL="0"))
    yield balancer
    balancer.stop()
