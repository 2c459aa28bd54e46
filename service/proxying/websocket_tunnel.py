"""WebSocket pass-through: an ``Upgrade: websocket`` request tunnelled to a target, byte for byte.

Like nginx, the proxy takes part only in the handshake: it forwards the upgrade request
(end-to-end headers, ``Upgrade``/``Connection`` re-added, X-Forwarded-* set) and the
target's answer; after a ``101`` it relays raw bytes both ways, so frames, pings and pongs,
and close codes pass unchanged, and the endpoints answer each other's pings. The tunnel
closes when either side closes or when neither has sent anything for ``idle_timeout``.

httpx has no upgrade support, so this is the one upstream call made on asyncio streams.

Taking over the client connection: Sanic's protocol object is swapped for
:class:`_ClientSide` on the same transport; when the tunnel ends, Sanic's protocol is told
the connection was lost, which ends its connection task the way a client disconnect does.
"""

from __future__ import annotations

import asyncio
import ssl
import time
from urllib.parse import urlsplit

from sanic import Request
from sanic.compat import Header
from sanic.response import HTTPResponse

from service.errors import classify
from service.pools import Target
from service.proxying.forwarding import upstream_fields
from service.proxying.headers import client_response_fields, response_head_fields
from service.tracing import RequestTrace, error_type_of

HEAD_LIMIT = 64 * 1024
CHUNK = 64 * 1024
HIGH_WATER = 1024 * 1024
BODY_LIMIT = 1024 * 1024  # of a refused upgrade's answer


def is_upgrade(request: Request) -> bool:
    if "upgrade" not in request.headers:  # nearly every request: one lookup
        return False
    upgrade = request.headers.get("upgrade", "").lower()
    connection = request.headers.get("connection", "").lower()
    return upgrade == "websocket" and "upgrade" in connection


class Handshake:
    """The target's answer to the upgrade request: status, head bytes, header fields."""

    def __init__(self, head: bytes) -> None:
        self.head = head
        self.status = int(head.split(b"\r\n", 1)[0].split(b" ", 2)[1])
        self.fields = response_head_fields(head)


Opened = tuple[asyncio.StreamReader, asyncio.StreamWriter, Handshake]


async def open_tunnel(
    request: Request,
    *,
    upstream: str,
    target_url: str,
    connect_timeout: float,
    read_timeout: float,
    trace: RequestTrace,
    target: Target,
    ssl_context: ssl.SSLContext | None = None,
    server_hostname: str | None = None,
) -> Opened:
    """Connect to the target and exchange the handshake; raise UpstreamError on failure.
    ``ssl_context``: how an https target is verified (the upstream clients' context);
    ``server_hostname``: the name verified and sent as SNI when it is not the URL's host (a
    resolved target: connect to the address, verify the name). The handshake carries the
    attempt's ``traceparent`` (``trace``)."""
    traceparent = trace.attempt(target, upstream, "GET")
    parts = urlsplit(target_url)
    secure = parts.scheme == "https"
    port = parts.port or (443 if secure else 80)
    try:
        reader, writer = await asyncio.wait_for(
            asyncio.open_connection(
                parts.hostname,
                port,
                ssl=(ssl_context or ssl.create_default_context()) if secure else None,
                server_hostname=server_hostname if secure else None,
            ),
            connect_timeout,
        )
    except (TimeoutError, OSError) as exc:
        error = classify(upstream, exc, connected=False)
        trace.failed(error_type_of(error.reason))
        raise error from None
    writer.write(_request_head(request, traceparent, trace.tracestate))
    try:
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), read_timeout)
        handshake = Handshake(head)
        trace.answered(handshake.status)
        return reader, writer, handshake
    except (
        TimeoutError,
        asyncio.IncompleteReadError,
        asyncio.LimitOverrunError,
        ValueError,
        IndexError,
        OSError,
    ) as exc:
        writer.close()
        error = classify(upstream, exc)
        trace.failed(error_type_of(error.reason))
        raise error from None


def _request_head(request: Request, traceparent: bytes, tracestate: bytes | None) -> bytes:
    fields = upstream_fields(request, None, traceparent, tracestate)
    fields += [(b"Connection", b"connection", b"Upgrade"), (b"Upgrade", b"upgrade", b"websocket")]
    query = request.query_string
    target_line = request.path + ("?" + query if query else "")
    lines = [f"GET {target_line} HTTP/1.1".encode("latin-1")]
    lines += [name + b": " + value for name, _, value in fields]
    return b"\r\n".join(lines) + b"\r\n\r\n"


async def refused_upgrade(
    handshake: Handshake, reader: asyncio.StreamReader, read_timeout: float
) -> HTTPResponse:
    """A non-101 answer, passed on as an ordinary response with its (bounded) body."""
    pairs, length_field = client_response_fields(handshake.fields)
    headers = Header([(n.decode("latin-1"), v.decode("latin-1")) for n, v in pairs])
    length = None if length_field is None else length_field.decode("latin-1")
    body = b""
    try:
        if length is not None and length.isdigit():
            body = await asyncio.wait_for(
                reader.readexactly(min(int(length), BODY_LIMIT)), read_timeout
            )
        elif not any(lower == b"transfer-encoding" for _, lower, _ in handshake.fields):
            body = await asyncio.wait_for(reader.read(BODY_LIMIT), read_timeout)
    except (TimeoutError, asyncio.IncompleteReadError, OSError):
        pass
    return HTTPResponse(body=body, status=handshake.status, headers=headers)


class _ClientSide(asyncio.Protocol):
    """The client's half of the tunnel, installed on Sanic's transport after the 101."""

    def __init__(self, upstream: asyncio.StreamWriter, tunnel: Tunnel) -> None:
        self._upstream = upstream
        self._tunnel = tunnel
        self._drain: asyncio.Future[None] | None = None  # held so the task is not collected
        self.can_write = asyncio.Event()
        self.can_write.set()

    def data_received(self, data: bytes) -> None:
        self._tunnel.touch()
        self._upstream.write(data)
        if self._upstream.transport.get_write_buffer_size() > HIGH_WATER:
            self._tunnel.client.pause_reading()
            self._drain = asyncio.ensure_future(self._resume_when_drained())

    async def _resume_when_drained(self) -> None:
        try:
            await self._upstream.drain()
        finally:
            if not self._tunnel.client.is_closing():
                self._tunnel.client.resume_reading()

    def eof_received(self) -> bool:
        self._tunnel.done.set()
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        self.can_write.set()
        self._tunnel.done.set()

    def pause_writing(self) -> None:
        self.can_write.clear()

    def resume_writing(self) -> None:
        self.can_write.set()


class Tunnel:
    """Relays bytes between the client's transport and the target until either side ends."""

    def __init__(self, request: Request, idle_timeout: float) -> None:
        # Sanic's own response timeout would cut a long-lived tunnel; its websocket flag
        # switches it off for this connection, as for Sanic's own websocket handlers.
        request.stream.upgrade_websocket = True  # type: ignore[union-attr]
        self.client = request.transport
        self._sanic_protocol = self.client.get_protocol()
        self._idle_timeout = idle_timeout
        self._last = time.monotonic()
        self.done = asyncio.Event()

    def touch(self) -> None:
        self._last = time.monotonic()

    async def run(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, head: bytes
    ) -> None:
        client_side = _ClientSide(writer, self)
        self.client.set_protocol(client_side)
        early = getattr(self._sanic_protocol, "recv_buffer", b"")
        if early:  # bytes the client sent right behind its upgrade request
            writer.write(bytes(early))
            del early[:]
        self.client.write(head)
        pump = asyncio.create_task(self._to_client(reader, client_side))
        try:
            while not self.done.is_set():
                idle = time.monotonic() - self._last
                if idle >= self._idle_timeout:
                    break
                try:
                    await asyncio.wait_for(self.done.wait(), self._idle_timeout - idle)
                except TimeoutError:
                    continue
        finally:
            pump.cancel()
            writer.close()
            self.client.close()
            # End Sanic's connection task as a client disconnect would: connection_lost
            # cancels the task this handler runs in, and the cancellation lands at the next
            # await, here, before Sanic looks for a response to send.
            self._sanic_protocol.connection_lost(None)
            await asyncio.sleep(0)

    async def _to_client(self, reader: asyncio.StreamReader, client_side: _ClientSide) -> None:
        try:
            while chunk := await reader.read(CHUNK):
                self.touch()
                await client_side.can_write.wait()
                self.client.write(chunk)
        except (OSError, asyncio.IncompleteReadError):
            pass
        finally:
            self.done.set()
