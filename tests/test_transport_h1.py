"""Conformance of ``service.transport_h1.H1Transport`` against scripted upstreams.

Each test runs a tiny asyncio server whose behaviour is written out byte by byte (requests
are parsed with h11, an independent HTTP/1.1 implementation), and checks what the transport
does: framing both ways, streaming, keep-alive reuse and its limits, HEAD/204/304, errors and
timeouts as httpx exceptions. Lives under bench/ with the transport's measurements; run with

    /work/venv/bin/python -m pytest -q bench/test_transport_h1.py
"""

from __future__ import annotations

import asyncio
import gzip
import hashlib
import socket
from collections.abc import AsyncIterator, Awaitable, Callable
from types import SimpleNamespace
from typing import Self

import h11
import httpx
import pytest
import uvloop

from service.settings import ProxySettings
from service.transport.h1 import HIGH_WATER, H1Transport, arrived_whole
from service.transport import build_client, seam
from tests.support.tools import require
import contextlib

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter, "Server"], Awaitable[None]]
TIMEOUTS = {"connect": 2.0, "read": 2.0, "write": 2.0, "pool": 2.0}


class Server:
    """An upstream on 127.0.0.1 that runs ``handler`` for every connection it accepts."""

    def __init__(self, handler: Handler) -> None:
        self.handler = handler
        self.connections = 0
        self.open = 0
        self.max_open = 0
        self.requests: list[tuple[h11.Request, bytes]] = []

    async def __aenter__(self) -> Self:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.url = f"http://127.0.0.1:{self._server.sockets[0].getsockname()[1]}"
        return self

    async def __aexit__(self, *exc: object) -> None:
        self._server.close()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        self.open += 1
        self.max_open = max(self.max_open, self.open)
        try:
            await self.handler(reader, writer, self)
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            self.open -= 1
            writer.close()


async def read_request(reader: asyncio.StreamReader, server: Server) -> h11.Request | None:
    """One request, parsed by h11, its body read whole; None at the end of the connection."""
    conn = h11.Connection(h11.SERVER)
    request, body = None, bytearray()  # not bytes +=, quadratic for an 8 MiB body
    while True:
        event = conn.next_event()
        if event is h11.NEED_DATA:
            data = await reader.read(65536)
            if not data and request is None:
                return None
            conn.receive_data(data)
        elif isinstance(event, h11.Request):
            request = event
        elif isinstance(event, h11.Data):
            body += event.data
        elif isinstance(event, h11.EndOfMessage):
            assert request is not None
            server.requests.append((request, bytes(body)))
            return request
        else:
            raise AssertionError(event)


def answer(body: bytes = b"ok", status: int = 200, *headers: bytes) -> bytes:
    head = b"HTTP/1.1 %d X\r\nContent-Length: %d\r\n" % (status, len(body))
    return head + b"".join(h + b"\r\n" for h in headers) + b"\r\n" + body


def replies_once(reply: bytes) -> Handler:
    """A handler that reads one request, writes ``reply`` as it is and closes."""

    async def handler(
        reader: asyncio.StreamReader, writer: asyncio.StreamWriter, server: Server
    ) -> None:
        await read_request(reader, server)
        writer.write(reply)
        await writer.drain()

    return handler


def replies_each(reply: bytes, delay: float = 0.0) -> Handler:
    """A handler that answers every request of the connection with ``reply``, each after
    ``delay`` seconds (none when 0)."""

    async def handler(
        reader: asyncio.StreamReader, writer: asyncio.StreamWriter, server: Server
    ) -> None:
        while await read_request(reader, server) is not None:
            if delay:
                await asyncio.sleep(delay)
            writer.write(reply)
            await writer.drain()

    return handler


keep_alive = replies_each(answer(b"hello"))
slow_ok = replies_each(answer(), delay=0.05)  # 50 ms an answer: requests overlap


def transport(**limits: object) -> H1Transport:
    return H1Transport(limits=httpx.Limits(**{"max_connections": 10, **limits}))  # type: ignore[arg-type]


@contextlib.asynccontextmanager
async def served(handler: Handler, **limits: object) -> AsyncIterator[tuple[Server, H1Transport]]:
    """An upstream running ``handler`` and a ``transport(**limits)``, closed after."""
    async with Server(handler) as server:
        t = transport(**limits)
        try:
            yield server, t
        finally:
            await t.aclose()


async def start(
    t: H1Transport,
    url: str,
    method: str = "GET",
    timeouts: dict[str, float] | None = None,
    **kw: object,
) -> httpx.Response:
    """The response with its head read and its body still to come (``response.stream``)."""
    request = httpx.Request(method, url, extensions={"timeout": timeouts or TIMEOUTS}, **kw)  # type: ignore[arg-type]
    return await t.handle_async_request(request)


async def fetch(
    t: H1Transport,
    url: str,
    method: str = "GET",
    timeouts: dict[str, float] | None = None,
    **kw: object,
) -> tuple[httpx.Response, bytes]:
    response = await start(t, url, method, timeouts, **kw)
    body = b""
    try:
        async for chunk in response.stream:  # type: ignore[union-attr]
            body += chunk
    finally:
        await response.stream.aclose()  # type: ignore[union-attr]
    return response, body


_loop = {"run": asyncio.run}


@pytest.fixture(autouse=True, params=["asyncio", "uvloop"])
def event_loop_kind(request: pytest.FixtureRequest) -> None:
    """Every test on both loops: Sanic runs the transport on uvloop."""
    _loop["run"] = asyncio.run if request.param == "asyncio" else uvloop.run


def run(coro: Awaitable[None]) -> None:
    _loop["run"](asyncio.wait_for(coro, 60))  # type: ignore[arg-type]


# ------------------------------------------------------------------------ framing, reuse


def test_content_length_response_and_keep_alive_reuse() -> None:
    async def main() -> None:
        async with served(keep_alive) as (server, t):
            for _ in range(3):
                response, body = await fetch(t, server.url + "/a?b=1")
                assert (response.status_code, body) == (200, b"hello")
            assert server.connections == 1
            assert server.requests[0][0].target == b"/a?b=1"

    run(main())


def test_request_is_sent_as_given() -> None:
    async def main() -> None:
        async with served(keep_alive) as (server, t):
            headers = [("Host", "example.org"), ("X-Two", "1"), ("X-Two", "2")]
            await fetch(t, server.url + "/p%20q", headers=headers)
            request = server.requests[0][0]
            assert request.target == b"/p%20q"
            assert request.headers == [
                (b"host", b"example.org"),
                (b"x-two", b"1"),
                (b"x-two", b"2"),
            ]

    run(main())


def test_chunked_response_streams_chunk_by_chunk() -> None:
    release = asyncio.Event()

    async def handler(
        reader: asyncio.StreamReader, writer: asyncio.StreamWriter, server: Server
    ) -> None:
        await read_request(reader, server)
        writer.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nfirst\r\n")
        await writer.drain()
        await release.wait()
        writer.write(b"6\r\nsecond\r\n0\r\n\r\n")
        await writer.drain()
        await read_request(reader, server)

    async def main() -> None:
        async with served(handler) as (server, t):
            response = await start(t, server.url)
            chunks = aiter(response.stream)  # type: ignore[arg-type]
            assert await anext(chunks) == b"first"  # before the rest was even sent
            release.set()
            assert b"".join([c async for c in chunks]) == b"second"
            await response.stream.aclose()  # type: ignore[union-attr]
            assert response.headers["transfer-encoding"] == "chunked"  # passed, not acted on

    run(main())


def test_a_body_arrived_whole_is_taken_at_once_and_a_partial_one_streams() -> None:
    """``arrived_whole``: the body of a small answer that came with its head, in one piece,
    the connection reused after; None while any of it is still to come (then it streams)."""
    release = asyncio.Event()

    async def handler(
        reader: asyncio.StreamReader, writer: asyncio.StreamWriter, server: Server
    ) -> None:
        await read_request(reader, server)
        writer.write(answer(b"whole"))
        await read_request(reader, server)
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nhalf-")
        await writer.drain()
        await release.wait()
        writer.write(b"later")
        await writer.drain()
        await read_request(reader, server)

    async def main() -> None:
        async with served(handler) as (server, t):
            response = await start(t, server.url)
            await asyncio.sleep(0.05)  # nothing more will come: the body is in
            assert arrived_whole(response) == b"whole"
            assert [c async for c in response.stream] == []  # type: ignore[union-attr]
            await response.stream.aclose()  # type: ignore[union-attr]
            response = await start(t, server.url)
            await asyncio.sleep(0.05)
            assert arrived_whole(response) is None  # five bytes of ten: not whole
            release.set()
            assert b"".join([c async for c in response.stream]) == b"half-later"  # type: ignore[union-attr]
            await response.stream.aclose()  # type: ignore[union-attr]
            assert server.connections == 1  # reused after the whole body was taken
            assert arrived_whole(httpx.Response(200, content=b"x")) is None  # not ours

    run(main())


def test_fields_are_split_as_sent_with_their_whitespace_trimmed() -> None:
    reply = (
        b"HTTP/1.1 200 OK\r\nX-Colon: a:b: c \r\nX-Empty:\r\nx-lower:\t v \t\r\n"
        b"Set-Cookie: a=1\r\nSet-Cookie: b=2\r\nContent-Length: 2\r\n\r\nok"
    )

    async def handler(
        reader: asyncio.StreamReader, writer: asyncio.StreamWriter, server: Server
    ) -> None:
        await read_request(reader, server)
        for i in range(0, len(reply), 7):  # the head in pieces: split only once it is whole
            writer.write(reply[i : i + 7])
            await writer.drain()
            await asyncio.sleep(0.001)
        await read_request(reader, server)

    async def main() -> None:
        async with served(handler) as (server, t):
            response, body = await fetch(t, server.url)
            assert body == b"ok"
            assert seam.triples(response.headers) == [
                (b"X-Colon", b"x-colon", b"a:b: c"),
                (b"X-Empty", b"x-empty", b""),
                (b"x-lower", b"x-lower", b"v"),
                (b"Set-Cookie", b"set-cookie", b"a=1"),
                (b"Set-Cookie", b"set-cookie", b"b=2"),
                (b"Content-Length", b"content-length", b"2"),
            ]

    run(main())


def test_body_until_eof() -> None:
    async def main() -> None:
        reply = b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\nall of it"
        async with served(replies_once(reply)) as (server, t):
            for _ in range(2):
                _response, body = await fetch(t, server.url)
                assert body == b"all of it"
            assert server.connections == 2  # never reused after Connection: close

    run(main())


def test_gzip_bytes_pass_unchanged() -> None:
    payload = gzip.compress(b'{"x": 1}' * 100)

    gzipped = replies_once(answer(payload, 200, b"Content-Encoding: gzip"))

    async def main() -> None:
        async with served(gzipped) as (server, t):
            response, body = await fetch(t, server.url, headers={"Accept-Encoding": "gzip"})
            assert body == payload
            assert response.headers["content-encoding"] == "gzip"

    run(main())


@pytest.mark.parametrize("status", [204, 304])
def test_no_body_statuses_and_reuse(status: int) -> None:
    no_body = replies_each(b"HTTP/1.1 %d X\r\nETag: x\r\n\r\n" % status)

    async def main() -> None:
        async with served(no_body) as (server, t):
            for _ in range(2):
                response, body = await fetch(t, server.url)
                assert (response.status_code, body) == (status, b"")
            assert server.connections == 1

    run(main())


def test_head_has_no_body_whatever_its_length_and_reuses() -> None:
    async def handler(
        reader: asyncio.StreamReader, writer: asyncio.StreamWriter, server: Server
    ) -> None:
        while (request := await read_request(reader, server)) is not None:
            if request.method == b"HEAD":
                writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n")
            else:
                writer.write(answer(b"body"))
            await writer.drain()

    async def main() -> None:
        async with served(handler) as (server, t):
            response, body = await fetch(t, server.url, "HEAD")
            assert (response.status_code, body, response.headers["content-length"]) == (
                200,
                b"",
                "1000",
            )
            response, body = await fetch(t, server.url)
            assert body == b"body"
            response, body = await fetch(t, server.url, "HEAD")
            assert body == b""
            assert server.connections == 1

    run(main())


def test_retire_closes_idle_connections_to_an_origin_whatever_name_they_verify() -> None:
    """A target that left its pool (DNS, reload): its idle connections close at once, those
    made for another server name (``sni_hostname``) too; asked for again, it is a target."""

    async def main() -> None:
        async with served(replies_each(answer(b"ok"))) as (server, t):
            await fetch(t, server.url)
            named = httpx.Request(
                "GET", server.url, extensions={"timeout": TIMEOUTS, "sni_hostname": "svc.test"}
            )
            response = await t.handle_async_request(named)
            await response.aread()
            await response.aclose()
            assert server.connections == 2
            assert t._pool is not None and t._pool._open == 2
            t.retire(server.url)
            assert t._pool._open == 0  # both closed, not left idle
            assert (await fetch(t, server.url))[1] == b"ok"
            assert server.connections == 3 and t._pool._open == 1  # kept again

    run(main())


def test_interim_100_is_skipped() -> None:
    async def main() -> None:
        reply = b"HTTP/1.1 100 Continue\r\n\r\n" + answer(b"final", 201)
        async with served(replies_once(reply)) as (server, t):
            response, body = await fetch(t, server.url, "POST", content=b"x")
            assert (response.status_code, body) == (201, b"final")

    run(main())


async def _body(parts: list[bytes]) -> AsyncIterator[bytes]:
    for part in parts:
        await asyncio.sleep(0)
        yield part


def test_request_bodies_content_length_and_chunked() -> None:
    async def main() -> None:
        async with served(keep_alive) as (server, t):
            parts = [b"a" * 70000, b"", b"b" * 5, b"c" * 100000]
            whole = b"".join(parts)
            # Content-Length given: sent as is, streamed.
            await fetch(
                t,
                server.url,
                "PUT",
                content=_body(parts),
                headers={"Content-Length": str(len(whole))},
            )
            # No length: httpx says chunked, and chunked it goes.
            await fetch(t, server.url, "POST", content=_body(parts))
            await fetch(t, server.url, "POST", content=b"bytes body")
            await fetch(t, server.url, "POST", content=_body([]))
            (r1, b1), (r2, b2), (_r3, b3), (_r4, b4) = server.requests
            assert b1 == whole and dict(r1.headers)[b"content-length"] == str(len(whole)).encode()
            assert b2 == whole and dict(r2.headers)[b"transfer-encoding"] == b"chunked"
            assert b3 == b"bytes body"
            assert b4 == b""
            assert server.connections == 1

    run(main())


def test_large_upload_and_download_with_bounded_buffer() -> None:
    size = 8 * 1024 * 1024

    async def handler(
        reader: asyncio.StreamReader, writer: asyncio.StreamWriter, server: Server
    ) -> None:
        await read_request(reader, server)
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % size)
        block = b"z" * 65536
        for _ in range(size // len(block)):
            writer.write(block)
            await writer.drain()

    async def upload() -> AsyncIterator[bytes]:
        for _ in range(size // 65536):
            yield b"u" * 65536

    async def main() -> None:
        async with served(handler) as (server, t):
            response = await start(t, server.url, "POST", content=upload())
            received, largest = 0, 0
            async for chunk in response.stream:  # type: ignore[union-attr]
                received += len(chunk)
                largest = max(largest, len(chunk))
                await asyncio.sleep(0.001)  # a slow client
            await response.stream.aclose()  # type: ignore[union-attr]
            assert received == size
            assert largest <= HIGH_WATER + 256 * 1024  # reading paused at the high-water mark
            assert (
                hashlib.sha256(server.requests[0][1]).digest()
                == hashlib.sha256(b"u" * size).digest()
            )

    run(main())


# --------------------------------------------------------------------------------- pool


def test_max_connections_is_respected() -> None:
    async def main() -> None:
        async with served(slow_ok, max_connections=2) as (server, t):
            results = await asyncio.gather(*(fetch(t, server.url) for _ in range(8)))
            assert all(body == b"ok" for _, body in results)
            assert server.max_open <= 2 and server.connections == 2

    run(main())


def test_pool_timeout() -> None:
    async def main() -> None:
        async with served(keep_alive, max_connections=1) as (server, t):
            held = await start(t, server.url)
            with pytest.raises(httpx.PoolTimeout):
                await fetch(t, server.url, timeouts={**TIMEOUTS, "pool": 0.1})
            await held.stream.aclose()  # type: ignore[union-attr]
            _response, body = await fetch(t, server.url)  # the slot is free again
            assert body == b"hello"

    run(main())


def test_max_keepalive_and_expiry() -> None:
    async def main() -> None:
        limits = {"max_keepalive_connections": 1, "keepalive_expiry": 0.3}
        async with served(slow_ok, **limits) as (server, t):
            await asyncio.gather(*(fetch(t, server.url) for _ in range(3)))
            assert server.connections == 3
            await asyncio.sleep(0.05)
            assert server.open == 1  # only one kept idle
            await fetch(t, server.url)
            assert server.connections == 3  # ...and reused
            await asyncio.sleep(0.4)
            await fetch(t, server.url)
            assert server.connections == 4  # expired, not reused

    run(main())


def test_incomplete_body_is_an_error_and_connection_is_not_reused() -> None:
    async def handler(
        reader: asyncio.StreamReader, writer: asyncio.StreamWriter, server: Server
    ) -> None:
        await read_request(reader, server)
        if server.connections == 1:
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nonly half")
            await writer.drain()
            return  # closes
        writer.write(answer())
        await writer.drain()

    async def main() -> None:
        async with served(handler) as (server, t):
            with pytest.raises(httpx.RemoteProtocolError):
                await fetch(t, server.url)
            _response, body = await fetch(t, server.url)
            assert body == b"ok" and server.connections == 2

    run(main())


def test_body_abandoned_by_the_client_is_not_reused() -> None:
    async def handler(
        reader: asyncio.StreamReader, writer: asyncio.StreamWriter, server: Server
    ) -> None:
        while await read_request(reader, server) is not None:
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nfive!")
            await writer.drain()
            await asyncio.sleep(0.1)
            writer.write(b"more!")
            await writer.drain()

    async def main() -> None:
        async with served(handler) as (server, t):
            for _ in range(2):
                response = await start(t, server.url)
                assert await anext(aiter(response.stream)) == b"five!"  # type: ignore[arg-type]
                await response.stream.aclose()  # type: ignore[union-attr]
            assert server.connections == 2

    run(main())


def test_stale_idle_connection_is_retried_for_idempotent_requests_only() -> None:
    async def handler(
        reader: asyncio.StreamReader, writer: asyncio.StreamWriter, server: Server
    ) -> None:
        await read_request(reader, server)
        writer.write(answer())
        await writer.drain()
        # The next request on this connection gets no answer: the connection just closes, as
        # when a server's keep-alive timer fires while the request is on its way.
        await reader.read(65536)

    async def main() -> None:
        async with served(handler) as (server, t):
            await fetch(t, server.url)
            _response, body = await fetch(t, server.url)  # retried on a fresh connection
            assert body == b"ok" and server.connections == 2
            with pytest.raises(httpx.RemoteProtocolError):
                await fetch(t, server.url, "POST", content=_body([b"once"]))  # not replayable

    run(main())


# ------------------------------------------------------------------------------ errors


def test_refused_is_connect_error() -> None:
    async def main() -> None:
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port = sock.getsockname()[1]
        t = transport()
        with pytest.raises(httpx.ConnectError):
            await fetch(t, f"http://127.0.0.1:{port}/")
        await t.aclose()

    run(main())


def test_connect_timeout() -> None:
    async def main() -> None:
        # A listener whose accept queue is full: further SYNs go unanswered.
        with socket.socket() as listener:
            listener.bind(("127.0.0.1", 0))
            listener.listen(0)
            port = listener.getsockname()[1]
            fillers = []
            for _ in range(4):
                s = socket.socket()
                s.setblocking(False)
                with contextlib.suppress(BlockingIOError):
                    s.connect(("127.0.0.1", port))
                fillers.append(s)
            t = transport()
            with pytest.raises(httpx.ConnectTimeout):
                await fetch(t, f"http://127.0.0.1:{port}/", timeouts={**TIMEOUTS, "connect": 0.2})
            await t.aclose()
            for s in fillers:
                s.close()

    run(main())


def test_read_timeouts_before_and_during_the_body() -> None:
    async def handler(
        reader: asyncio.StreamReader, writer: asyncio.StreamWriter, server: Server
    ) -> None:
        await read_request(reader, server)
        if server.connections == 2:
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc")
            await writer.drain()
        await asyncio.sleep(5)

    async def main() -> None:
        async with served(handler) as (server, t):
            short = {**TIMEOUTS, "read": 0.2}
            with pytest.raises(httpx.ReadTimeout):
                await fetch(t, server.url, timeouts=short)
            with pytest.raises(httpx.ReadTimeout):
                await fetch(t, server.url, timeouts=short)

    run(main())


async def _refused_as_broken(handler: Handler) -> None:
    """One GET to an upstream running ``handler`` is a ``RemoteProtocolError``."""
    async with served(handler) as (server, t):
        with pytest.raises(httpx.RemoteProtocolError):
            await fetch(t, server.url)


@pytest.mark.parametrize(
    "reply",
    [
        b"",
        b"SSH-2.0-OpenSSH\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nContent-Length: x\r\n\r\n",
        # obs-fold (RFC 9112 §5.2): refused, never relayed as a line of its own
        b"HTTP/1.1 200 OK\r\nX-A: a\r\n X-Injected: 1\r\nContent-Length: 0\r\n\r\n",
        b"HTTP/1.1 200 OK\nContent-Length: 2\n\nok",  # bare LF line endings
    ],
)
def test_broken_answers_are_remote_protocol_errors(reply: bytes) -> None:
    run(_refused_as_broken(replies_once(reply)))


def test_endless_response_head_is_refused() -> None:
    async def handler(
        reader: asyncio.StreamReader, writer: asyncio.StreamWriter, server: Server
    ) -> None:
        await read_request(reader, server)
        writer.write(b"HTTP/1.1 200 OK\r\n")
        for i in range(100_000):
            writer.write(b"X-Filler-%d: %s\r\n" % (i, b"f" * 100))
            await writer.drain()

    run(_refused_as_broken(handler))


def test_header_injection_is_refused() -> None:
    async def main() -> None:
        async with served(keep_alive) as (server, t):
            with pytest.raises(httpx.LocalProtocolError):
                await fetch(t, server.url, headers={"X-Evil": "a\r\nX-Injected: 1"})
            assert server.requests == []

    run(main())


def test_request_body_error_passes_through_and_frees_the_slot() -> None:
    class UploadBroke(Exception):
        pass

    async def failing() -> AsyncIterator[bytes]:
        yield b"start"
        raise UploadBroke

    async def main() -> None:
        async with served(keep_alive, max_connections=1) as (server, t):
            with pytest.raises(UploadBroke):
                await fetch(t, server.url, "POST", content=failing())
            _response, body = await fetch(t, server.url, timeouts={**TIMEOUTS, "pool": 0.5})
            assert body == b"hello"

    run(main())


def test_cancelled_request_frees_the_slot() -> None:
    async def handler(
        reader: asyncio.StreamReader, writer: asyncio.StreamWriter, server: Server
    ) -> None:
        while await read_request(reader, server) is not None:
            if server.connections == 1:
                await asyncio.sleep(5)
            writer.write(answer())
            await writer.drain()

    async def main() -> None:
        async with served(handler, max_connections=1) as (server, t):
            task = asyncio.create_task(fetch(t, server.url))
            await asyncio.sleep(0.1)
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
            _response, body = await fetch(t, server.url, timeouts={**TIMEOUTS, "pool": 0.5})
            assert body == b"ok" and server.connections == 2

    run(main())


# ---------------------------------------------------------------- the proxy's client


def test_proxy_client_never_stores_or_replays_cookies() -> None:
    handler = replies_each(answer(b"ok", 200, b"Set-Cookie: session=secret; Path=/"))

    async def main() -> None:
        async with Server(handler) as server:
            client = build_client(SimpleNamespace(url=server.url), ProxySettings())  # type: ignore[arg-type]
            first = await client.get("/")
            async with client.stream("GET", "/again") as second:
                await second.aread()
            assert first.headers["set-cookie"] == "session=secret; Path=/"  # passed on...
            assert list(client.cookies.jar) == []  # ...never kept
            assert all(b"cookie" not in dict(r.headers) for r, _ in server.requests)
            await client.aclose()

    run(main())


def test_https(tmp_path: object) -> None:
    import ssl
    import subprocess
    from pathlib import Path

    cert, key = Path(str(tmp_path)) / "cert.pem", Path(str(tmp_path)) / "key.pem"
    subprocess.run(
        [require("openssl"), "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj",
         "/CN=localhost", "-addext", "subjectAltName=DNS:localhost", "-keyout", str(key),
         "-out", str(cert)],
        check=True, capture_output=True,
    )  # fmt: skip
    server_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_context.load_cert_chain(cert, key)
    client_context = ssl.create_default_context(cafile=str(cert))

    async def main() -> None:
        server = Server(keep_alive)
        listener = await asyncio.start_server(server._serve, "127.0.0.1", 0, ssl=server_context)
        port = listener.sockets[0].getsockname()[1]
        t = H1Transport(limits=httpx.Limits(max_connections=4), ssl_context=client_context)
        for _ in range(2):
            _response, body = await fetch(t, f"https://localhost:{port}/")
            assert body == b"hello"
        assert server.connections == 1
        with pytest.raises(httpx.ConnectError):  # not the name in the certificate
            await fetch(
                H1Transport(limits=httpx.Limits(), ssl_context=client_context),
                f"https://127.0.0.1:{port}/",
            )
        await t.aclose()
        listener.close()

    run(main())
