"""An httpx transport on aiohttp's connection pool.

httpx stays the client API (requests, responses, timeouts, exceptions); what moves bytes
under it is aiohttp. httpx's own pool does per-request work that grows with the connections
in flight (encode/httpx#3215) and capped a proxy on this stack at a few percent of Sanic's
own throughput; this transport was the first answer to that. The service now uses
``service.transport_h1.H1Transport``, which costs about half the CPU per proxied request;
this one stays as the alternative the benchmarks compare against (bench/README.md).

The transport is written for a reverse proxy: it sends the request's headers as given
(no automatic User-Agent/Accept/Accept-Encoding, Host taken from the request), never
decompresses, never stores cookies, never follows redirects, and streams both bodies.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import aiohttp
import httpx
from multidict import CIMultiDict
from yarl import URL

# aiohttp would add these when absent; a proxy must send exactly what the client sent.
_NO_AUTO_HEADERS = ("User-Agent", "Accept", "Accept-Encoding", "Content-Type")


class AiohttpTransport(httpx.AsyncBaseTransport):
    """``handle_async_request`` maps one httpx request onto one aiohttp request.

    Contract (as httpx's): return a response whose ``stream`` yields the raw body and must
    be closed; raise httpx's ``ConnectError``/``ConnectTimeout`` when no connection could be
    made, ``ReadTimeout`` when the upstream stays silent past the read timeout, and
    ``ReadError``/``RemoteProtocolError`` when the connection breaks after it was made.
    """

    def __init__(self, *, limits: httpx.Limits) -> None:
        self._limits = limits
        self._session: aiohttp.ClientSession | None = None

    def _open_session(self) -> aiohttp.ClientSession:
        # Created lazily: aiohttp binds the session to the running event loop.
        connector = aiohttp.TCPConnector(
            limit=self._limits.max_connections or 0,
            limit_per_host=0,
            keepalive_timeout=self._limits.keepalive_expiry or 30.0,
            enable_cleanup_closed=False,
            ttl_dns_cache=10,
        )
        return aiohttp.ClientSession(
            connector=connector,
            cookie_jar=aiohttp.DummyCookieJar(),
            auto_decompress=False,
            trust_env=False,
            skip_auto_headers=_NO_AUTO_HEADERS,
            timeout=aiohttp.ClientTimeout(total=None),
        )

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        session = self._session or self._open_session()
        self._session = session
        timeout = request.extensions.get("timeout", {})
        headers = CIMultiDict(
            (k.decode("latin-1"), v.decode("latin-1"))
            for k, v in request.headers.raw
            if k.lower() != b"transfer-encoding"  # aiohttp frames the body itself
        )
        body = _body_of(request)
        try:
            response = await session.request(
                request.method,
                URL(str(request.url), encoded=True),
                headers=headers,
                data=body,
                allow_redirects=False,
                compress=None,
                timeout=aiohttp.ClientTimeout(
                    total=None,
                    sock_connect=timeout.get("connect"),
                    sock_read=timeout.get("read"),
                    connect=timeout.get("pool"),
                ),
            )
        except Exception as exc:
            raise _map_error(exc, request, connected=False) from exc
        return httpx.Response(
            status_code=response.status,
            headers=response.raw_headers,
            stream=_ResponseStream(response, request),
            request=request,
            extensions={
                "http_version": b"HTTP/1.1",
                "reason_phrase": (response.reason or "").encode("latin-1", "replace"),
            },
        )

    async def aclose(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None


class _ResponseStream(httpx.AsyncByteStream):
    def __init__(self, response: aiohttp.ClientResponse, request: httpx.Request) -> None:
        self._response = response
        self._request = request

    async def __aiter__(self) -> AsyncIterator[bytes]:
        try:
            async for chunk in self._response.content.iter_any():
                yield chunk
        except Exception as exc:
            raise _map_error(exc, self._request, connected=True) from exc

    async def aclose(self) -> None:
        self._response.release() if self._response.content.at_eof() else self._response.close()


def _body_of(request: httpx.Request) -> AsyncIterator[bytes] | bytes | None:
    if "content-length" not in request.headers and "transfer-encoding" not in request.headers:
        return None
    try:
        return request.content or None
    except httpx.RequestNotRead:
        return _aiter(request.stream)  # type: ignore[arg-type]


async def _aiter(stream: httpx.AsyncByteStream) -> AsyncIterator[bytes]:
    async for chunk in stream:
        yield chunk


def _map_error(exc: Exception, request: httpx.Request, *, connected: bool) -> Exception:
    """Translate aiohttp's exceptions into httpx's tree (see the class docstring)."""
    message = str(exc) or type(exc).__name__
    if isinstance(exc, httpx.HTTPError):
        return exc
    if isinstance(exc, aiohttp.ConnectionTimeoutError):
        return httpx.ConnectTimeout(message, request=request)
    if isinstance(exc, (aiohttp.SocketTimeoutError, aiohttp.ServerTimeoutError, TimeoutError)):
        return httpx.ReadTimeout(message, request=request)
    if isinstance(exc, aiohttp.ClientConnectorError):
        return httpx.ConnectError(message, request=request)
    if isinstance(exc, (aiohttp.ServerDisconnectedError, aiohttp.ClientPayloadError)):
        return httpx.RemoteProtocolError(message, request=request)
    if isinstance(exc, aiohttp.ClientResponseError):
        return httpx.RemoteProtocolError(message, request=request)
    if isinstance(exc, (aiohttp.ClientError, OSError)):
        if connected:
            return httpx.ReadError(message, request=request)
        return httpx.ConnectError(message, request=request)
    return exc
