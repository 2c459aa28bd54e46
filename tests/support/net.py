"""Ports and raw HTTP over a socket, on 127.0.0.1."""

from __future__ import annotations

import os
import random
import socket
from collections.abc import Iterable


# Ports handed out to be bound later by another process (a load balancer, dnsmasq) come from
# below the kernel's ephemeral range (32768-60999), so no socket bound to port 0 meanwhile
# (an upstream server, an outgoing connection) can take one; and each pytest-xdist process
# has a block of its own, so two test processes never pick the same port and find each
# other's server answering.
_FIRST, _BLOCK = 20000, 6000


def _block() -> range:
    worker = os.environ.get("PYTEST_XDIST_WORKER", "gw0").removeprefix("gw")
    first = _FIRST + (int(worker) % 2 if worker.isdigit() else 0) * _BLOCK
    return range(first, first + _BLOCK)


def free_port(udp_too: bool = False) -> int:
    """A port of this test process's block that nothing listens on right now (TCP, and
    UDP too with ``udp_too``)."""
    block = _block()
    for _ in range(200):
        port = random.choice(block)
        kinds = (socket.SOCK_STREAM, socket.SOCK_DGRAM) if udp_too else (socket.SOCK_STREAM,)
        try:
            for kind in kinds:
                with socket.socket(socket.AF_INET, kind) as sock:
                    sock.bind(("127.0.0.1", port))
        except OSError:
            continue
        return port
    raise RuntimeError(f"no free port in {block}")


def closed_port_url() -> str:
    """A 127.0.0.1 URL on which nothing listens (connection refused)."""
    return f"http://127.0.0.1:{free_port()}"


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


def socket_owner(server_port: int, client_port: int, pids: Iterable[int]) -> int | None:
    """Which of ``pids`` holds the server side of the 127.0.0.1 connection from
    ``client_port`` to ``server_port`` (/proc/net/tcp for its inode, then each process's
    file descriptors): with several workers, which one accepted it."""
    local = f"0100007F:{server_port:04X}"
    remote = f"0100007F:{client_port:04X}"
    inode = None
    with open("/proc/net/tcp") as table:
        for line in table.readlines()[1:]:
            fields = line.split()
            if fields[1] == local and fields[2] == remote:
                inode = fields[9]
    if inode is None:
        return None
    wanted = f"socket:[{inode}]"
    for pid in pids:
        try:
            fds = os.listdir(f"/proc/{pid}/fd")
        except OSError:
            continue
        for fd in fds:
            try:
                if os.readlink(f"/proc/{pid}/fd/{fd}") == wanted:
                    return pid
            except OSError:
                continue
    return None
