"""A real HAProxy (Debian's ``haproxy``) in TCP mode, in front of load balancers.

One process, several listeners: each ``Listener`` is a TCP frontend on its own port whose
one server is written as HAProxy's ``server`` line takes it (``127.0.0.1:7100 send-proxy
source 127.0.0.9``). Used by tests/test_proxy_protocol.py and bench/proxy_protocol_cost.py.
"""

from __future__ import annotations

import signal
import socket
import subprocess
import time
from collections.abc import Mapping
from pathlib import Path

from tests.support.net import free_port

CONFIG_HEAD = """\
global
    maxconn 2000
    nbthread 1
    stats socket {folder}/admin.sock mode 600 level admin

defaults
    mode tcp
    timeout connect 2s
    timeout client 60s
    timeout server 60s
    timeout check 2s
"""
LISTENER = """
listen {name}
    bind 127.0.0.1:{port}
{extra}    server lb {server}
"""


class HAProxy:
    """``haproxy -db`` with one listener per entry of ``servers`` (name -> server line);
    ``extra`` adds lines to a listener (``option httpchk ...``); ``ports`` by name."""

    def __init__(
        self,
        command: str,
        folder: Path,
        servers: Mapping[str, str],
        *,
        extra: Mapping[str, str] | None = None,
        argv_prefix: tuple[str, ...] = (),
    ) -> None:
        self.folder = folder
        self.ports = {name: free_port() for name in servers}
        text = CONFIG_HEAD.format(folder=folder)
        for name, server in servers.items():
            lines = "".join(f"    {line}\n" for line in (extra or {}).get(name, "").splitlines())
            text += LISTENER.format(name=name, port=self.ports[name], extra=lines, server=server)
        self.config = folder / "haproxy.cfg"
        self.config.write_text(text)
        check = subprocess.run([command, "-c", "-f", str(self.config)], capture_output=True)
        if check.returncode != 0:
            raise RuntimeError(f"haproxy refuses its configuration: {check.stderr.decode()}")
        self.log = open(folder / "haproxy.log", "wb")
        self.process = subprocess.Popen(
            [*argv_prefix, command, "-db", "-f", str(self.config)],
            stdout=self.log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        self._wait_listening()

    def _wait_listening(self, timeout: float = 10.0) -> None:
        deadline = time.monotonic() + timeout
        for port in self.ports.values():
            while True:
                if self.process.poll() is not None:
                    raise RuntimeError(f"haproxy exited: {self.output()}")
                try:
                    socket.create_connection(("127.0.0.1", port), timeout=1).close()
                    break
                except OSError:
                    if time.monotonic() > deadline:
                        raise RuntimeError(f"haproxy is not listening on {port}") from None
                    time.sleep(0.05)

    def url(self, name: str, scheme: str = "http") -> str:
        return f"{scheme}://127.0.0.1:{self.ports[name]}"

    def command(self, line: str) -> str:
        """A command on the admin socket (``show stat``), and its answer."""
        with socket.socket(socket.AF_UNIX) as sock:
            sock.settimeout(5)
            sock.connect(str(self.folder / "admin.sock"))
            sock.sendall(line.encode() + b"\n")
            answer = b""
            while chunk := sock.recv(65536):
                answer += chunk
        return answer.decode()

    def server_status(self, name: str) -> tuple[str, str]:
        """The status (UP, DOWN, no check) and last check status (L7OK, ...) of ``name``'s
        server, from ``show stat``."""
        lines = self.command("show stat").splitlines()
        header = lines[0].lstrip("# ").split(",")
        for line in lines[1:]:
            row = dict(zip(header, line.split(","), strict=False))
            if row.get("pxname") == name and row.get("svname") == "lb":
                return row["status"], row["check_status"]
        raise KeyError(name)

    def output(self) -> str:
        self.log.flush()
        return (self.folder / "haproxy.log").read_text(errors="replace")

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.log.close()
