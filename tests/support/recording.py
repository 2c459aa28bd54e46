"""``RecordingUpstream``: a raw HTTP/1.1 server on 127.0.0.1 that keeps every byte it got.

It answers each request it can frame (Content-Length or chunked) with ``200 ok`` and keeps
the raw bytes of every connection, so a test can prove what did, and did not, arrive
behind the load balancer (a smuggled request would show up here as its own request line).
"""

from __future__ import annotations

import contextlib
import socket
import threading


class RecordingUpstream:
    def __init__(self) -> None:
        self._sock = socket.socket()
        self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._sock.bind(("127.0.0.1", 0))
        self._sock.listen(128)
        self.port = self._sock.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self._lock = threading.Lock()
        self._received: list[bytearray] = []
        self._connections: list[socket.socket] = []
        self.request_lines: list[bytes] = []
        self._thread = threading.Thread(target=self._accept, daemon=True)
        self._thread.start()

    def received(self) -> bytes:
        """Everything every connection sent, joined."""
        with self._lock:
            return b"".join(bytes(chunk) for chunk in self._received)

    def stop(self) -> None:
        """Stop listening for real: ``close`` alone leaves a thread blocked in ``accept``
        holding the socket open (and answering), so shut it down first; then end every
        connection."""
        with contextlib.suppress(OSError):
            self._sock.shutdown(socket.SHUT_RDWR)
        self._sock.close()
        self._thread.join(5)
        with self._lock:
            connections, self._connections = self._connections, []
        for conn in connections:
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self._sock.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn: socket.socket) -> None:
        record = bytearray()
        with self._lock:
            self._received.append(record)
            self._connections.append(conn)
        buffer = b""
        conn.settimeout(30)
        try:
            while True:
                while b"\r\n\r\n" not in buffer:
                    chunk = conn.recv(65536)
                    if not chunk:
                        return
                    record += chunk
                    buffer += chunk
                head, _, buffer = buffer.partition(b"\r\n\r\n")
                lines = head.split(b"\r\n")
                with self._lock:
                    self.request_lines.append(lines[0])
                fields = {}
                for line in lines[1:]:
                    name, _, value = line.partition(b":")
                    fields[name.strip().lower()] = value.strip()
                if fields.get(b"transfer-encoding", b"").lower() == b"chunked":
                    while b"\r\n0\r\n\r\n" not in b"\r\n" + buffer:
                        chunk = conn.recv(65536)
                        if not chunk:
                            return
                        record += chunk
                        buffer += chunk
                    _, _, buffer = (b"\r\n" + buffer).partition(b"\r\n0\r\n\r\n")
                else:
                    length = int(fields.get(b"content-length", b"0"))
                    while len(buffer) < length:
                        chunk = conn.recv(65536)
                        if not chunk:
                            return
                        record += chunk
                        buffer += chunk
                    buffer = buffer[length:]
                conn.sendall(
                    b"HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ncontent-length: 2\r\n\r\nok"
                )
        except OSError:
            return
        finally:
            conn.close()
