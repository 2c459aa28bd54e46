"""``LB_HTTP_REDIRECT_PORT``: a plain-HTTP listener that sends every request to https.

Every request is answered ``308`` with ``Location: https://<host><:port><target>`` — the
host of its ``Host`` header (or the address it reached), the TLS listener's port, the
request target unchanged — except ``GET``/``HEAD /lb-health``, answered here as on the TLS
port (``?ready=1``: ``503`` while draining), so probes that speak plain HTTP keep working.
308 rather than 301: the method and body are kept by the client.

Deliberately small: httptools parses the head (at most ``MAX_HEAD`` bytes within the head
deadline), nothing is proxied, the body is never read, and every connection is closed after
its one answer. Each worker listens on the port (``SO_REUSEPORT``), so it is as available as
the TLS port.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Callable
from urllib.parse import parse_qs

import httptools
import orjson

from service.errors import sanic_error_body

MAX_HEAD = 16 * 1024
_HOST = re.compile(rb"(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9.-]+)(:[0-9]{1,5})?")
_HEALTHY = orjson.dumps({"status": "healthy"})
_DRAINING = orjson.dumps(
    {
        **sanic_error_body(503, "draining: shutting down, send new requests elsewhere"),
        "status": "draining",
    }
)


def _answer(status: bytes, headers: list[tuple[bytes, bytes]], body: bytes, head: bool) -> bytes:
    lines = [b"HTTP/1.1 " + status]
    lines += [name + b": " + value for name, value in headers]
    lines += [b"content-length: %d" % len(body), b"connection: close", b"", b""]
    return b"\r\n".join(lines) + (b"" if head else body)


def _json(status: bytes, body: bytes, head: bool) -> bytes:
    return _answer(status, [(b"content-type", b"application/json")], body, head)


_BAD_REQUEST = _json(
    b"400 Bad Request", orjson.dumps(sanic_error_body(400, "not a request to redirect")), False
)


class RedirectProtocol(asyncio.Protocol):
    """One connection: read one request head, answer it, close."""

    def __init__(
        self, https_port: int, draining: Callable[[], bool], header_timeout: float
    ) -> None:
        self._port_suffix = b"" if https_port == 443 else b":%d" % https_port
        self._draining = draining
        self._header_timeout = header_timeout
        self._transport: asyncio.Transport | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._parser = httptools.HttpRequestParser(self)
        self._received = 0
        self._url = b""
        self._host: bytes | None = None
        self._hosts = 0
        self._done = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = transport  # type: ignore[assignment]
        loop = asyncio.get_running_loop()
        self._timer = loop.call_later(self._header_timeout, self._finish, b"")

    def connection_lost(self, exc: Exception | None) -> None:
        self._done = True
        if self._timer is not None:
            self._timer.cancel()

    def data_received(self, data: bytes) -> None:
        if self._done:
            return
        self._received += len(data)
        if self._received > MAX_HEAD:
            self._finish(_BAD_REQUEST)
            return
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            pass  # the head was complete, and answered
        except httptools.HttpParserError:
            self._finish(_BAD_REQUEST)

    # httptools callbacks
    def on_url(self, url: bytes) -> None:
        self._url += url

    def on_header(self, name: bytes, value: bytes) -> None:
        if name.lower() == b"host":
            self._host, self._hosts = value.strip(), self._hosts + 1

    def on_headers_complete(self) -> None:
        if not self._done:
            self._finish(self._respond(self._parser.get_method()))

    def _respond(self, method: bytes) -> bytes:
        target = self._url
        if not target.startswith(b"/") or self._hosts > 1:
            return _BAD_REQUEST
        path, _, query = target.partition(b"?")
        if path == b"/lb-health" and method in (b"GET", b"HEAD"):
            ready = parse_qs(query.decode("latin-1")).get("ready", ["0"])[-1] != "0"
            if ready and self._draining():
                return _json(b"503 Service Unavailable", _DRAINING, method == b"HEAD")
            return _json(b"200 OK", _HEALTHY, method == b"HEAD")
        host = self._host or self._local_host()
        match = _HOST.fullmatch(host)
        if match is None:
            return _BAD_REQUEST
        location = b"https://" + match.group(1) + self._port_suffix + target
        return _answer(b"308 Permanent Redirect", [(b"location", location)], b"", False)

    def _local_host(self) -> bytes:
        """For a request without ``Host`` (HTTP/1.0): the address it was sent to."""
        assert self._transport is not None
        address = str(self._transport.get_extra_info("sockname")[0])
        return (f"[{address}]" if ":" in address else address).encode()

    def _finish(self, answer: bytes) -> None:
        self._done = True
        if self._timer is not None:
            self._timer.cancel()
        if self._transport is not None and not self._transport.is_closing():
            if answer:
                self._transport.write(answer)
            self._transport.close()


async def listen(
    host: str | None,
    port: int,
    https_port: int,
    draining: Callable[[], bool],
    header_timeout: float,
) -> asyncio.Server:
    """Start this worker's redirect listener (``SO_REUSEPORT``: every worker binds it)."""
    loop = asyncio.get_running_loop()
    return await loop.create_server(
        lambda: RedirectProtocol(https_port, draining, header_timeout),
        host or None,
        port,
        reuse_port=True,
    )
