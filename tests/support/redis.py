"""Debian's ``redis-server`` on an ephemeral port, started and stopped by PID."""

from __future__ import annotations

import shutil
import signal
import socket
import subprocess
import tempfile
import time

from tests.support.net import free_port
from tests.support.tools import require


class RedisServer:
    """A throw-away Redis (no persistence) on 127.0.0.1; ``restart()`` keeps its port."""

    def __init__(self, port: int | None = None) -> None:
        self.binary = require("redis-server")
        self.port = port or free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.dir = tempfile.mkdtemp(prefix="lb-redis-")
        self.process: subprocess.Popen[bytes] | None = None
        self.start()

    def start(self) -> None:
        argv = [
            self.binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
            "--appendonly", "no", "--dir", self.dir, "--loglevel", "warning",
            "--enable-debug-command", "local",  # DEBUG SLEEP: a slow Redis, on demand
        ]  # fmt: skip
        self.process = subprocess.Popen(
            argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True
        )
        deadline = time.monotonic() + 10
        while self.command("PING") != "+PONG":
            if self.process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"redis-server on port {self.port} did not start")
            time.sleep(0.05)

    def command(self, *args: str, timeout: float = 2.0) -> str:
        """One command in RESP; the first line of the answer ('' if unreachable)."""
        payload = f"*{len(args)}\r\n" + "".join(f"${len(a)}\r\n{a}\r\n" for a in args)
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=timeout) as sock:
                sock.sendall(payload.encode())
                return sock.recv(65536).split(b"\r\n", 1)[0].decode()
        except OSError:
            return ""

    def stop(self, sig: int = signal.SIGKILL) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(sig)
            self.process.wait(10)
        self.process = None

    def restart(self) -> None:
        """Stopped and started again on the same port, its data gone."""
        self.stop()
        self.start()

    def close(self) -> None:
        self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)
