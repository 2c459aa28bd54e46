"""An httpx transport written for this proxy: HTTP/1.1 on asyncio protocols and httptools.

httpx stays the client API (requests, responses, timeouts, exceptions); this module moves
the bytes. It does the least a reverse proxy needs and nothing else, which is what makes it
faster than httpcore's pool or aiohttp's client under it (figures in bench/README.md):

- one keep-alive pool per transport, bounded by ``httpx.Limits`` (``max_connections``
  open at once, ``max_keepalive_connections`` idle, ``keepalive_expiry`` seconds idle); a
  request over the limit waits up to the pool timeout;
- the request is written as given: its headers in order (Host included), its body streamed
  with ``Content-Length`` or chunked framing as its headers say, never buffered whole;
- the response is parsed by httptools (llhttp, the parser Sanic itself uses) and its body
  handed out chunk by chunk as it arrives, raw: never decompressed, never interpreted;
  reading pauses while more than ``HIGH_WATER`` bytes wait for the consumer;
- a connection goes back to the pool only when its response was complete on the wire and
  both sides allow keep-alive; an idle connection that receives data or closes is dropped.

Errors are httpx's (see :class:`H1Transport`); cookies, redirects and authentication are
the client's business, which for the proxy means none of them.
"""

from __future__ import annotations

import asyncio
import collections
import ssl
from collections.abc import AsyncIterator
from typing import Any

import httptools
import httpx

from service.transport import seam
from service.transport.fields import split_fields

HIGH_WATER = 64 * 1024  # bytes of response body buffered before reading pauses
MAX_HEAD = 256 * 1024  # bytes of response headers accepted (llhttp itself sets no limit)
_TIMED_OUT = object()
_IDEMPOTENT = frozenset({"GET", "HEAD", "OPTIONS", "PUT", "DELETE", "TRACE"})
_DEFAULT_PORTS = {"http": 80, "https": 443}


class H1Transport(httpx.AsyncBaseTransport):
    """``handle_async_request`` sends one request on a pooled connection.

    Contract (as httpx's): return a response whose ``stream`` yields the raw body and must
    be closed; raise ``ConnectError``/``ConnectTimeout`` when no connection could be made,
    ``PoolTimeout`` when none became free in time, ``ReadTimeout`` when the upstream stays
    silent past the read timeout, ``WriteTimeout`` when it stops taking the request body,
    ``RemoteProtocolError``/``ReadError`` when the connection breaks or the answer is not
    HTTP/1.1, ``LocalProtocolError`` when the request cannot be sent as given. An exception
    raised by the request body itself (a client's upload failing) passes through unchanged.
    """

    def __init__(self, *, limits: httpx.Limits, ssl_context: ssl.SSLContext | None = None) -> None:
        self._limits = limits
        self._ssl_context = ssl_context
        self._pool: _Pool | None = None

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        pool = self._pool or self._open_pool()
        scheme, host, port = seam.origin(request.url)
        if scheme not in _DEFAULT_PORTS:
            raise httpx.UnsupportedProtocol(f"unsupported URL scheme {scheme!r}", request=request)
        # "sni_hostname" (httpx's extension, as httpcore reads it): connect to the URL's host
        # (an address) but verify and send SNI for this name; part of the pool key, so a
        # connection made for one name is never reused for another.
        key = (scheme, host, port or _DEFAULT_PORTS[scheme], request.extensions.get("sni_hostname"))
        timeouts = request.extensions.get("timeout", {})
        head, framing, declared = _request_head(request)
        replayable = framing is None or isinstance(request.stream, httpx.ByteStream)
        while True:
            conn, reused = await pool.acquire(key, timeouts, request)
            try:
                return await conn.exchange(request, head, framing, declared, timeouts)
            except _StaleConnection:
                # The upstream closed an idle connection as we reused it (its keep-alive
                # timer fired): nothing was answered, so a request that can be sent again
                # goes on another connection; a fresh connection failing so is an error.
                pool.discard(conn)
                if not (reused and replayable and request.method in _IDEMPOTENT):
                    raise httpx.RemoteProtocolError(
                        "server disconnected without sending a response", request=request
                    ) from None
            except BaseException:
                pool.discard(conn)
                raise

    def _open_pool(self) -> _Pool:
        # Created lazily: the pool belongs to the running event loop.
        self._pool = _Pool(self._limits, self._ssl_context)
        return self._pool

    async def aclose(self) -> None:
        if self._pool is not None:
            self._pool.close()
            self._pool = None

    def connections_in_use(self) -> int:
        """Connections busy with an exchange (connecting, sending or receiving) now."""
        return self._pool.in_use() if self._pool is not None else 0

    def retire(self, url: str) -> None:
        """``url``'s origin left its pool: close its idle connections now, and each busy one
        when its exchange ends, until a request to that origin comes again."""
        if self._pool is not None:
            scheme, host, port = seam.origin(httpx.URL(url))
            self._pool.retire((scheme, host, port or _DEFAULT_PORTS[scheme]))


def _request_head(request: httpx.Request) -> tuple[bytes, bytes | None, int]:
    """The request line and headers, and how the body is framed (by its headers)."""
    parts = [request.method.encode("ascii"), b" ", request.url.raw_path, b" HTTP/1.1\r\n"]
    framing: bytes | None = None
    declared = 0
    fields = seam.triples(request.headers)
    for name, lower, value in fields:
        parts += (name, b": ", value, b"\r\n")
        if lower == b"content-length":
            framing = framing or b"content-length"
            try:
                declared = int(value)
            except ValueError:
                raise httpx.LocalProtocolError("invalid Content-Length", request=request) from None
        elif lower == b"transfer-encoding" and value.lower().endswith(b"chunked"):
            framing = b"chunked"
    parts.append(b"\r\n")
    head = b"".join(parts)
    lines = len(fields) + 2
    if head.count(b"\n") != lines or head.count(b"\r") != lines:
        raise httpx.LocalProtocolError("CR or LF inside a request header", request=request)
    return head, framing, declared


class _StaleConnection(Exception):
    """A reused connection closed before any byte of the response arrived."""


_Key = tuple[str, str, int, str | None]  # scheme, host, port, name to verify (None: host)


class _Pool:
    """Connections per (scheme, host, port, TLS name); ``_open`` counts connecting, busy and
    idle ones."""

    def __init__(self, limits: httpx.Limits, ssl_context: ssl.SSLContext | None) -> None:
        self._loop = asyncio.get_running_loop()
        self._max = limits.max_connections
        self._max_idle = limits.max_keepalive_connections
        self._expiry = limits.keepalive_expiry
        self._ssl_context = ssl_context
        self._idle: dict[_Key, collections.deque[_Connection]] = {}
        self._all: set[_Connection] = set()
        self._open = 0
        self._waiters: collections.deque[asyncio.Future[None]] = collections.deque()
        self._closed = False
        # origins (scheme, host, port: a key without its server name) whose targets left
        self._retired: set[tuple[str, str, int]] = set()

    async def acquire(
        self, key: _Key, timeouts: dict[str, Any], request: httpx.Request
    ) -> tuple[_Connection, bool]:
        """An idle connection to ``key`` (reused: True), else a new one once a slot is free."""
        pool_timeout = timeouts.get("pool")
        deadline = None if pool_timeout is None else self._loop.time() + pool_timeout
        if self._retired:
            self._retired.discard(key[:3])  # asked for again: a target once more
        while True:
            conn = self._idle_connection(key)
            if conn is not None:
                return conn, True
            if self._max is None or self._open < self._max or self._close_an_idle_connection():
                break
            waiter = self._loop.create_future()
            self._waiters.append(waiter)
            try:
                async with asyncio.timeout_at(deadline):
                    await waiter
            except BaseException as exc:
                if waiter.done() and not waiter.cancelled():
                    self._wake_one()  # pass on the wake-up this task will not use
                elif waiter in self._waiters:
                    self._waiters.remove(waiter)
                if isinstance(exc, TimeoutError):
                    raise httpx.PoolTimeout(
                        "no connection free in the pool", request=request
                    ) from None
                raise
        self._open += 1
        try:
            conn = await self._connect(key, timeouts.get("connect"), request)
        except BaseException:
            self._open -= 1
            self._wake_one()
            raise
        self._all.add(conn)
        return conn, False

    def _idle_connection(self, key: _Key) -> _Connection | None:
        idle = self._idle.get(key)
        now = self._loop.time()
        while idle:
            conn = idle.pop()  # the most recently used: least likely to have been closed
            if conn.closed or (self._expiry is not None and now - conn.idle_since > self._expiry):
                self.discard(conn)
                continue
            conn.busy = True
            return conn
        return None

    def _close_an_idle_connection(self) -> bool:
        """At the limit, an idle connection to another origin gives its slot away."""
        for idle in self._idle.values():
            if idle:
                self.discard(idle.popleft())
                return True
        return False

    async def _connect(
        self, key: _Key, timeout: float | None, request: httpx.Request
    ) -> _Connection:
        scheme, host, port, server_hostname = key
        context = None
        if scheme == "https":
            context = self._ssl_context or httpx.create_ssl_context(trust_env=False)
            self._ssl_context = context
        try:
            async with asyncio.timeout(timeout):
                _, conn = await self._loop.create_connection(
                    lambda: _Connection(self, key),
                    host,
                    port,
                    ssl=context,
                    server_hostname=(server_hostname or host) if context else None,
                )
        except TimeoutError:
            raise httpx.ConnectTimeout(
                f"connect to {host}:{port} timed out", request=request
            ) from None
        except OSError as exc:
            raise httpx.ConnectError(str(exc) or type(exc).__name__, request=request) from exc
        return conn

    def release(self, conn: _Connection) -> None:
        """Back to the idle list if its last exchange left it clean, else closed."""
        conn.busy = False
        if self._closed or not conn.reusable() or (self._retired and conn.key[:3] in self._retired):
            self.discard(conn)
            return
        idle = self._idle.get(conn.key)
        if idle is None:
            idle = self._idle[conn.key] = collections.deque()
        now = self._loop.time()
        conn.idle_since = now
        if self._expiry is not None:
            while idle and now - idle[0].idle_since > self._expiry:
                self.discard(idle.popleft())
        if self._max_idle is not None and len(idle) >= self._max_idle:
            self.discard(conn)
            return
        conn.prepare_for_next()
        idle.append(conn)
        self._wake_one()

    def in_use(self) -> int:
        return self._open - sum(len(idle) for idle in self._idle.values())

    def retire(self, origin: tuple[str, str, int]) -> None:
        """Close the idle connections to ``origin`` (whatever server name they verified) and
        keep none that comes back to idle."""
        self._retired.add(origin)
        for key in [k for k in self._idle if k[:3] == origin]:
            for conn in list(self._idle.get(key, ())):
                self.discard(conn)

    def discard(self, conn: _Connection) -> None:
        """Close ``conn`` and give its slot back (idempotent)."""
        conn.close()
        if conn in self._all:
            self._all.discard(conn)
            self._open -= 1
            idle = self._idle.get(conn.key)
            if idle and conn in idle:
                idle.remove(conn)
            self._wake_one()

    def _wake_one(self) -> None:
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)
                return

    def close(self) -> None:
        self._closed = True
        for conn in list(self._all):
            self.discard(conn)


class _Connection(asyncio.Protocol):
    """One HTTP/1.1 connection: one exchange at a time, its response parsed as it arrives."""

    def __init__(self, pool: _Pool, key: _Key) -> None:
        self.pool = pool
        self.key = key
        self.busy = True
        self.closed = False
        self.idle_since = 0.0
        self._loop = pool._loop
        self._transport: asyncio.Transport | None = None
        self._parser = httptools.HttpResponseParser(self)
        self._waiter: asyncio.Future[Any] | None = None
        self._writable: asyncio.Future[None] | None = None
        self._write_paused = False
        self._read_paused = False
        self._reset()

    def _reset(self) -> None:
        self._request: httpx.Request | None = None
        self._head_only = False
        self._status = 0
        self._reason = b""
        self._headers: list[seam.Triple] = []
        self._head_received = b""  # the bytes received until the head is complete
        self._interim = False  # inside a 1xx response, which is skipped
        self._head_done = False
        self._until_eof = False
        self._chunks: list[bytes] = []
        self._buffered = 0
        self._complete = False
        self._keep_alive = False
        self._got_bytes = False
        self._extra_body = False
        self._error: Exception | None = None

    # -- asyncio.Protocol ---------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        if not self.busy or self._complete:
            # Bytes nobody asked for: the connection's state is unknown, so it goes.
            self._extra_body = True
            if not self.busy:
                self.pool.discard(self)
            return
        self._got_bytes = True
        if not self._head_done:  # kept for on_headers_complete, which splits the fields
            received = self._head_received
            self._head_received = received + data if received else data
        try:
            self._parser.feed_data(data)
            if not self._head_done and len(self._head_received) > MAX_HEAD:
                # llhttp sets no limit; a read is at most the loop's buffer
                raise httptools.HttpParserError(f"response head over {MAX_HEAD} bytes")
        except httptools.HttpParserUpgrade:
            self._head_done = False  # a 101 is not an answer this proxy can relay
            self._fail(
                httpx.RemoteProtocolError("unexpected protocol upgrade", request=self._request)
            )
        except httptools.HttpParserError as exc:
            self._fail(
                httpx.RemoteProtocolError(f"invalid HTTP response: {exc}", request=self._request)
            )
        if self._head_only and self._head_done and not self._complete:
            # A HEAD answer ends with its head, whatever its Content-Length says; the
            # parser cannot be told so, so the next exchange gets a fresh parser.
            self._complete = True
            self._keep_alive = self._keep_alive_after_head()
        self._wake()  # once, for whatever the parser's callbacks found in ``data``

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if not self.busy:
            self.pool.discard(self)
            return
        if self._head_done and not self._complete and self._until_eof and exc is None:
            self._complete = True  # a body delimited by the end of the connection
        elif not self._complete and self._error is None:
            if not self._got_bytes:
                self._error = _StaleConnection()
            else:
                reason = "server disconnected before the response was complete"
                if exc is not None:
                    self._error = httpx.ReadError(f"{reason}: {exc}", request=self._request)
                else:
                    self._error = httpx.RemoteProtocolError(reason, request=self._request)
        self._wake()
        if self._writable is not None and not self._writable.done():
            self._writable.set_result(None)

    def pause_writing(self) -> None:
        self._write_paused = True

    def resume_writing(self) -> None:
        self._write_paused = False
        if self._writable is not None and not self._writable.done():
            self._writable.set_result(None)

    # -- httptools callbacks ------------------------------------------------------------

    def on_status(self, reason: bytes) -> None:
        self._reason += reason

    def on_headers_complete(self) -> None:
        """The fields are split here from the head's bytes, all at once (no ``on_header``
        callback per field: llhttp only checks them)."""
        received = self._head_received
        end = received.find(b"\r\n\r\n")
        if end == -1:  # llhttp took another line ending: not one this proxy relays
            raise ValueError("response head not ended by CRLF CRLF")
        head, self._head_received = received[:end], received[end + 4 :]
        status = self._parser.get_status_code()
        if 100 <= status < 200 and status != 101:
            self._interim, self._reason = True, b""
            return
        if b"\r\n " in head or b"\r\n\t" in head:
            # RFC 9112 §5.2: a proxy either replaces obs-fold or refuses the message (502)
            raise ValueError("obsolete line folding in the response head")
        self._headers = split_fields(head)
        self._head_received = b""
        self._status = status
        self._head_done = True
        if status not in (204, 304):
            self._until_eof = not _framed(self._headers)

    def on_body(self, body: bytes) -> None:
        if self._head_only:
            self._extra_body = True  # a body after a HEAD answer: do not reuse
            return
        self._chunks.append(body)
        self._buffered += len(body)
        if self._buffered > HIGH_WATER and not self._read_paused and self._transport:
            self._read_paused = True
            self._transport.pause_reading()

    def on_message_complete(self) -> None:
        if self._interim:
            self._interim = False
            return
        if self._head_only:
            return  # already complete when its head arrived
        self._complete = True
        self._keep_alive = self._parser.should_keep_alive()

    # -- the exchange -------------------------------------------------------------------

    async def exchange(
        self,
        request: httpx.Request,
        head: bytes,
        framing: bytes | None,
        declared: int,
        timeouts: dict[str, Any],
    ) -> httpx.Response:
        self._request = request
        self._head_only = request.method == "HEAD"
        if self.closed:
            raise _StaleConnection()
        if framing is None:
            self._transport.write(head)  # type: ignore[union-attr]
        else:
            await self._send_body(request, head, framing, declared, timeouts.get("write"))
        read_timeout = timeouts.get("read")
        while not self._head_done:
            if self._error is not None:
                raise self._error
            # ``_wait``, written out: the await of every request's head, where one frame
            # less in the chain of coroutines is measurable (bench/README.md)
            waiter = self._waiter = self._loop.create_future()
            timer = (
                None
                if read_timeout is None
                else self._loop.call_later(read_timeout, _expire, waiter)
            )
            try:
                news = await waiter
            finally:
                self._waiter = None
                if timer is not None:
                    timer.cancel()
            if news is _TIMED_OUT:
                raise httpx.ReadTimeout("no response within the read timeout", request=request)
        return seam.response_of(
            self._status,
            seam.headers_of(self._headers),
            _ResponseBody(self, read_timeout),
            request,
            {"http_version": self._http_version(), "reason_phrase": self._reason},
        )

    async def _send_body(
        self,
        request: httpx.Request,
        head: bytes,
        framing: bytes,
        declared: int,
        write_timeout: float | None,
    ) -> None:
        transport = self._transport
        assert transport is not None
        chunked = framing == b"chunked"
        pending: bytes | None = head  # sent with the first chunk: one write, not two
        sent = 0
        async for chunk in request.stream:  # type: ignore[union-attr]
            if not chunk:
                continue
            if self.closed or self._head_done:
                break  # the upstream answered (or went) before taking the whole body
            sent += len(chunk)
            if chunked:
                transport.writelines((pending or b"", b"%x\r\n" % len(chunk), chunk, b"\r\n"))
            elif sent > declared:
                raise httpx.LocalProtocolError(
                    "request body longer than Content-Length", request=request
                )
            else:
                transport.writelines((pending, chunk) if pending else (chunk,))
            pending = None
            if self._write_paused:
                await self._drain(write_timeout, request)
        else:
            if chunked:
                transport.write((pending or b"") + b"0\r\n\r\n")
            elif sent != declared:
                raise httpx.LocalProtocolError(
                    "request body shorter than Content-Length", request=request
                )
            elif pending:
                transport.write(pending)
            return
        self._extra_body = True  # body cut short: the connection is not reusable

    async def _drain(self, timeout: float | None, request: httpx.Request) -> None:
        while self._write_paused and not self.closed:
            self._writable = self._loop.create_future()
            try:
                async with asyncio.timeout(timeout):
                    await self._writable
            except TimeoutError:
                raise httpx.WriteTimeout(
                    "upstream stopped taking the request body", request=request
                ) from None
            finally:
                self._writable = None

    async def _wait(self, timeout: float | None) -> Any:
        """Until the parser or the connection has news, or ``timeout`` seconds of silence."""
        waiter = self._waiter = self._loop.create_future()
        timer = None if timeout is None else self._loop.call_later(timeout, _expire, waiter)
        try:
            return await waiter
        finally:
            self._waiter = None
            if timer is not None:
                timer.cancel()

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def _fail(self, error: Exception) -> None:
        self._error = error
        self._extra_body = True
        self.close()
        self._wake()

    def take(self) -> bytes:
        """Every body byte received so far, as one chunk (fewer, larger writes downstream)."""
        chunks = self._chunks
        data = chunks[0] if len(chunks) == 1 else b"".join(chunks)
        self._chunks = []
        self._buffered = 0
        if self._read_paused and self._transport is not None:
            self._read_paused = False
            self._transport.resume_reading()
        return data

    def _http_version(self) -> bytes:
        return b"HTTP/1.1" if self._parser.get_http_version() == "1.1" else b"HTTP/1.0"

    def _keep_alive_after_head(self) -> bool:
        connection = b",".join(v for _, n, v in self._headers if n == b"connection").lower()
        return b"close" not in connection and self._parser.get_http_version() == "1.1"

    def reusable(self) -> bool:
        return (
            self._complete
            and self._keep_alive
            and self._error is None
            and not self._extra_body
            and not self.closed
        )

    def prepare_for_next(self) -> None:
        if self._head_only:
            self._parser = httptools.HttpResponseParser(self)
        if self._read_paused and self._transport is not None:
            self._read_paused = False
            self._transport.resume_reading()
        self._reset()

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            if self._transport is not None:
                self._transport.close()


def _framed(headers: list[seam.Triple]) -> bool:
    """Whether a response's body is delimited by Content-Length or chunked coding (else by
    the end of the connection)."""
    for _, lower, value in headers:
        if lower == b"content-length" or (
            lower == b"transfer-encoding" and value.lower().endswith(b"chunked")
        ):
            return True
    return False


def arrived_whole(response: httpx.Response) -> bytes | None:
    """The whole body of a streamed response from this transport if every byte of it has
    arrived already (a small answer usually comes in the packet of its head), taken from
    the stream; else None, and the body streams as usual."""
    stream = response.stream
    if type(stream) is not _ResponseBody or stream._closed:
        return None
    conn = stream._conn
    if not conn._complete or conn._error is not None:
        return None
    return conn.take() if conn._chunks else b""


def _expire(waiter: asyncio.Future[Any]) -> None:
    if not waiter.done():
        waiter.set_result(_TIMED_OUT)


class _ResponseBody(httpx.AsyncByteStream):
    """The response body as it arrives; closing it hands the connection back (or closes it)."""

    def __init__(self, conn: _Connection, read_timeout: float | None) -> None:
        self._conn = conn
        self._read_timeout = read_timeout
        self._closed = False

    async def __aiter__(self) -> AsyncIterator[bytes]:
        conn = self._conn
        while not self._closed:
            if conn._chunks:
                yield conn.take()
            elif conn._complete:
                return
            elif conn._error is not None:
                error = conn._error
                if isinstance(error, _StaleConnection):  # cannot happen after a head; be safe
                    error = httpx.RemoteProtocolError("server disconnected", request=conn._request)
                raise error
            elif await conn._wait(self._read_timeout) is _TIMED_OUT:
                raise httpx.ReadTimeout(
                    "upstream silent past the read timeout", request=conn._request
                )

    async def aclose(self) -> None:
        if not self._closed:
            self._closed = True
            self._conn.pool.release(self._conn)
