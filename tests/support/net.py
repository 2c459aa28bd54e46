"""Ports and raw HTTP over a socket, on 127.0.0.1."""

from __future__ import annotations

import os
import socket
from collections.abc import Iterable


def free_port() -> int:
    """A port nothing listens on right now (the kernel's choice of an ephemeral one)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


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
