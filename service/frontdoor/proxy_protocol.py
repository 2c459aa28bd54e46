"""``LB_PROXY_PROTOCOL``: the client's address from a TCP balancer's PROXY protocol header.

With it on, a connection from a peer in ``LB_TRUSTED_PROXIES`` must begin with a header (v1
or v2, ``service.frontdoor.proxy_header``); its source address then *is* the connection's
peer for everything that asks (``request.ip``: the access log, ``X-Forwarded-For`` sent
upstream, rate limits, ``LB_ADMIN_ALLOW``; and when that address is itself a trusted proxy,
its ``X-Forwarded-For`` is read as for any peer). A connection from any other peer is plain
HTTP: a header on it reaches the strict head check and is a ``400``, never believed (the
specification's §5: accept the header "only from a number of known sources").

How: until the header is whole, the connection's transport is driven by
:class:`_HeaderReader`, a ``BufferedProtocol`` that hands the socket buffers exactly as
large as the header can still be (``proxy_header.missing``), so not one byte after the
header is consumed. Then the transport is handed to Sanic's protocol (``set_protocol``,
``connection_made``) as if it had just connected, with the header's address in its
``conn_info``. With TLS (``LB_TLS_CERT``) the header comes before the handshake, so Sanic
listens without TLS (``service.tls.loader`` gives it no context in this mode) and the
handshake is started here with ``loop.start_tls`` once the header is read, on the bytes
that follow it; a connection from any other peer starts its handshake at once (the bytes
that arrived before ``start_tls`` took the transport are handed to its TLS protocol first:
:class:`_EarlyBytes`). Either way, Sanic's protocol sees a connection only after its
handshake, as with Sanic's own TLS.

A header that is malformed, truncated (the peer ends the connection inside it), longer than
the specification allows, or that does not arrive within ``LB_HEADER_TIMEOUT``, closes the
connection; :class:`RefusalLog` says why, once per peer and minute. A trusted peer that
connects and closes without a byte (a TCP health check) is not logged.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
import time
from ipaddress import IPv6Address
from typing import Any

from service.frontdoor.client import Address, believable, parse_address
from service.frontdoor.protocol import FrontDoorProtocol
from service.frontdoor.proxy_header import (
    V1_MIN,
    ProxyHeader,
    ProxyHeaderError,
    missing,
    parse,
)

log = logging.getLogger("service.frontdoor")

REFUSAL_LOG_INTERVAL = 60.0  # seconds: one line per peer per minute
REFUSAL_LOG_PEERS = 1024  # peers remembered per worker (a balancer fleet is far fewer)


class RefusalLog:
    """Why a trusted peer's connection was closed, logged once per peer and minute."""

    def __init__(self, interval: float = REFUSAL_LOG_INTERVAL) -> None:
        self.interval = interval
        self._last: dict[str, float] = {}

    def refused(self, peer: str, reason: str) -> None:
        now = time.monotonic()
        last = self._last.get(peer)
        if last is not None and now - last < self.interval:
            return
        if len(self._last) >= REFUSAL_LOG_PEERS:
            self._last = {p: t for p, t in self._last.items() if now - t < self.interval}
            if len(self._last) >= REFUSAL_LOG_PEERS:
                return  # a flood of distinct trusted peers: the lines already said it
        self._last[peer] = now
        log.warning(
            "PROXY protocol: closed a connection from %s: %s (LB_PROXY_PROTOCOL; logged once "
            "per peer and minute)",
            peer,
            reason,
        )


class ProxyProtocolFrontDoor(FrontDoorProtocol):
    """``FrontDoorProtocol`` for ``LB_PROXY_PROTOCOL=true`` (``FrontDoorApp.prepare`` picks
    it): a trusted peer's connection starts with the header reader; TLS is started here."""

    def connection_made(self, transport: Any) -> None:
        lb = self.app.ctx.lb
        peer = _peer_of(transport)
        context: ssl.SSLContext | None = lb.tls.server_context if lb.tls is not None else None
        if lb.client_addresses.trusts(peer):
            reader = _HeaderReader(self, transport, peer, context)
            transport.set_protocol(reader)
            reader.start(lb.settings.frontdoor.header_timeout, lb.proxy_protocol_refusals)
        elif context is not None:
            early = _EarlyBytes(transport)  # what arrives before start_tls takes the transport
            transport.set_protocol(early)
            self.start_tls(transport, context, None, early)
        else:
            FrontDoorProtocol.connection_made(self, transport)

    def start_tls(
        self,
        transport: Any,
        context: ssl.SSLContext,
        source: tuple[str, int] | None,
        early: _EarlyBytes | None = None,
    ) -> None:
        """The handshake on the bytes after the header; then serve over it. The task is
        kept in Sanic's own slot for the connection's task (the class has no others), which
        ``connection_made`` then takes over, and ``connection_lost`` cancels."""
        self._task = self.loop.create_task(self._secure(transport, context, source, early))

    async def _secure(
        self,
        transport: Any,
        context: ssl.SSLContext,
        source: tuple[str, int] | None,
        early: _EarlyBytes | None,
    ) -> None:
        if early is not None:
            # runs after start_tls's first step (below, in this same step of the task) has
            # given the transport to its TLS protocol, and before that protocol's
            # connection_made and the transport's resume_reading, which it schedules
            self.loop.call_soon(early.hand_over)
        try:
            # asyncio's default handshake timeout (60 s), as Sanic's own TLS listener has
            secure = await self.loop.start_tls(transport, self, context, server_side=True)
        except (OSError, RuntimeError):  # ssl.SSLError, a reset, the timeout; a closed
            # transport: the client's problem, as with Sanic's TLS (not logged either)
            transport.abort()
            return
        if secure is not None:
            self.serve(secure, source)

    def connection_lost(self, exc: Exception | None) -> None:
        if self.conn_info is None:  # lost before it was served: during the TLS handshake
            if self._task is not None:
                self._task.cancel()
            return
        FrontDoorProtocol.connection_lost(self, exc)

    def serve(self, transport: Any, source: tuple[str, int] | None) -> None:
        """Sanic's connection start on ``transport``, with ``source`` as its peer."""
        FrontDoorProtocol.connection_made(self, transport)
        info = self.conn_info
        if source is not None and info is not None:
            address, port = source
            info.client_ip = address
            info.client = f"[{address}]" if ":" in address else address
            info.client_port = port
            info.peername = (address, port)


EARLY_MAX = 64 * 1024  # bytes a client may send before its handshake starts: a ClientHello


class _EarlyBytes(asyncio.Protocol):
    """A TLS connection from a peer that sends no header: the bytes that arrive between
    ``connection_made`` and ``start_tls`` taking the transport (uvloop starts reading as
    soon as ``connection_made`` returns, whatever it paused), handed to the TLS protocol
    through its ``BufferedProtocol`` interface before it starts the handshake."""

    def __init__(self, transport: Any) -> None:
        self._transport = transport
        self._data = bytearray()

    def data_received(self, data: bytes) -> None:
        self._data += data
        if len(self._data) > EARLY_MAX:
            self._transport.abort()

    def eof_received(self) -> bool:
        return False  # close: the handshake then fails, as it would have

    def hand_over(self) -> None:
        protocol = self._transport.get_protocol()
        if protocol is self:  # start_tls did not take the transport (it was closing)
            self._transport.abort()
            return
        view = memoryview(bytes(self._data))
        while view:
            buffer = protocol.get_buffer(len(view))
            size = min(len(buffer), len(view))
            buffer[:size] = view[:size]
            protocol.buffer_updated(size)
            view = view[size:]


class _HeaderReader(asyncio.BufferedProtocol):
    """The transport's protocol until the header is whole (see the module docstring)."""

    def __init__(
        self,
        owner: ProxyProtocolFrontDoor,
        transport: Any,
        peer: str,
        context: ssl.SSLContext | None,
    ) -> None:
        self._owner = owner
        self._transport = transport
        self._peer = peer
        self._context = context
        self._received = bytearray()
        self._chunk = bytearray()
        # the first read asks for the shortest header there is (v1 "PROXY UNKNOWN\r\n"; a
        # v2 header has 16 bytes at least), so even it cannot reach past the header
        self._want = V1_MIN
        self._timer: asyncio.TimerHandle | None = None
        self._refusals: RefusalLog | None = None

    def start(self, timeout: float, refusals: RefusalLog | None) -> None:
        self._refusals = refusals
        self._timer = asyncio.get_running_loop().call_later(
            timeout, self._refuse, f"no PROXY protocol header within {timeout:g} s"
        )

    # asyncio.BufferedProtocol: the transport reads into get_buffer's buffer, at most its size
    def get_buffer(self, sizehint: int) -> bytearray:
        self._chunk = bytearray(self._want)
        return self._chunk

    def buffer_updated(self, nbytes: int) -> None:
        self._received += self._chunk[:nbytes]
        try:
            self._want = missing(self._received)
            header = parse(self._received) if self._want == 0 else None
        except ProxyHeaderError as exc:
            self._refuse(str(exc))
            return
        if header is not None:
            self._accept(header)

    def eof_received(self) -> bool:
        if self._received:  # a connection that said nothing is a health check: no line
            self._refuse("the connection ended inside the PROXY protocol header")
        return False  # close

    def connection_lost(self, exc: Exception | None) -> None:
        if self._timer is not None:
            self._timer.cancel()

    def _refuse(self, reason: str) -> None:
        if self._timer is not None:
            self._timer.cancel()
        if not self._transport.is_closing():
            self._transport.abort()
            if self._refusals is not None:
                self._refusals.refused(self._peer, reason)

    def _accept(self, header: ProxyHeader) -> None:
        if self._timer is not None:
            self._timer.cancel()
        source = _believed_source(header, self._peer)
        transport, owner = self._transport, self._owner
        # Reading stops while the transport changes hands: the next read goes to the new
        # protocol, in the way it reads (uvloop picks its read callbacks when reading starts).
        transport.pause_reading()
        if self._context is not None:
            owner.start_tls(transport, self._context, source)  # start_tls resumes reading
            return
        transport.set_protocol(owner)
        owner.serve(transport, source)
        transport.resume_reading()


def _believed_source(header: ProxyHeader, peer: str) -> tuple[str, int] | None:
    """The header's source as (address, port), or None when the peer stays the client: the
    header names none (LOCAL, UNKNOWN), or one that cannot be believed from this peer."""
    if header.source is None:
        return None
    address: Address = header.source[0]
    if isinstance(address, IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    if not believable(address, parse_address(peer)):
        return None
    return str(address), header.source[1]


def _peer_of(transport: Any) -> str:
    peername = transport.get_extra_info("peername")
    return str(peername[0]) if isinstance(peername, tuple) else ""
