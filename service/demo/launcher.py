"""Start the demo services, then the real load balancer in front of them; stop all on a signal.

The load balancer runs as ``python -m sanic service.app`` in a child process of its own
session, so a Ctrl-C in the terminal reaches only this launcher, which then stops the load
balancer (SIGTERM, and SIGKILL if it has not exited in time) before its own services.
"""

from __future__ import annotations

import errno
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

from service.demo.upstreams import URL_VARS, DemoService, start_all

HOST = "127.0.0.1"
DEFAULT_PORT = 7100
DEFAULT_WORKERS = 2
READY_TIMEOUT_S = 30.0
STOP_TIMEOUT_S = 20.0


class DemoError(Exception):
    """Something the user can fix; the message says what."""


def _int_from_env(name: str, default: int, low: int, high: int) -> int:
    raw = os.environ.get(name, "").strip()
    if not raw:
        return default
    try:
        value = int(raw)
    except ValueError:
        value = low - 1
    if not low <= value <= high:
        raise DemoError(
            f"{name}={raw!r} is not valid: expected a whole number from {low} to {high}"
        )
    return value


def check_port_free(port: int) -> None:
    with socket.socket() as sock:
        # As the server will: a port whose old connections linger in TIME_WAIT is free.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((HOST, port))
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                raise DemoError(
                    f"port {port} on {HOST} is already in use (another demo or load balancer?). "
                    f"Stop it, or choose another port: LB_PORT={port + 100} python -m service.demo"
                ) from None
            raise DemoError(f"cannot listen on {HOST}:{port}: {exc.strerror}") from None


def start_load_balancer(services: list[DemoService], port: int, workers: int) -> subprocess.Popen:
    env = dict(os.environ)
    env.update({URL_VARS[s.name]: s.url for s in services})
    env["LB_PORT"] = str(port)
    # The child imports `service` from wherever this launcher imported it.
    package_root = str(Path(__file__).resolve().parent.parent.parent)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [package_root, env.get("PYTHONPATH")]))
    command = [
        sys.executable, "-m", "sanic", "service.app",
        "--host", HOST, "--port", str(port), "--workers", str(workers),
    ]  # fmt: skip
    return subprocess.Popen(command, env=env, start_new_session=True)


def wait_ready(process: subprocess.Popen, url: str, stop: threading.Event) -> None:
    deadline = time.monotonic() + READY_TIMEOUT_S
    while time.monotonic() < deadline and not stop.is_set():
        if process.poll() is not None:
            raise DemoError(
                f"the load balancer exited with code {process.returncode} while starting"
            )
        try:
            with urllib.request.urlopen(url + "/lb-health", timeout=1.0) as response:
                if response.status == 200:
                    return
        except (urllib.error.URLError, OSError):
            pass
        stop.wait(0.2)
    if not stop.is_set():
        raise DemoError(
            f"the load balancer did not answer {url}/lb-health in {READY_TIMEOUT_S:.0f} s"
        )


def stop_load_balancer(process: subprocess.Popen) -> int:
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            print("demo: the load balancer did not stop in time; killing it", file=sys.stderr)
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
    return process.returncode


def main() -> int:
    stop = threading.Event()

    def on_signal(signum: int, frame: object) -> None:
        stop.set()

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)

    services: list[DemoService] = []
    process: subprocess.Popen | None = None
    try:
        port = _int_from_env("LB_PORT", DEFAULT_PORT, 1, 65535)
        workers = _int_from_env("LB_WORKERS", DEFAULT_WORKERS, 1, 64)
        check_port_free(port)
        services = start_all()
        for service in services:
            print(f"demo: {service.name:<13} {service.url}  ({URL_VARS[service.name]})")
        url = f"http://{HOST}:{port}"
        process = start_load_balancer(services, port, workers)
        wait_ready(process, url, stop)
        if not stop.is_set():
            print(f"\ndemo: the load balancer is ready with {workers} worker(s). Open {url}/")
            print("demo: press Ctrl-C to stop everything.\n", flush=True)
        while not stop.wait(0.5):
            if process.poll() is not None:
                raise DemoError(
                    f"the load balancer exited unexpectedly with code {process.returncode}"
                )
        print("\ndemo: stopping...", flush=True)
        return 0
    except DemoError as exc:
        print(f"demo: {exc}", file=sys.stderr)
        return 1
    finally:
        if process is not None:
            stop_load_balancer(process)
        for service in services:
            service.stop()
        if services:
            print("demo: stopped.", flush=True)
