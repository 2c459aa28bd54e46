"""The transports the benchmarks compare, by name: ``FACTORIES[name](limits)``.

- ``httpcore``: httpx's default ``AsyncHTTPTransport`` (httpcore's pool).
- ``aiohttp``: ``bench.aiohttp_transport.AiohttpTransport`` (aiohttp's pool under httpx).
- ``h1``: ``service.transport_h1.H1Transport`` (asyncio protocol + httptools).
- ``httpx-aiohttp``: the ``httpx-aiohttp`` package's transport, when it is installed.
- ``null``: answers ``{"ok":true}`` at once without any I/O: the ceiling any transport could
  reach under the same proxy code (what is left is httpx's client layer, Sanic and ours).
"""

from __future__ import annotations

from collections.abc import Callable

import httpx

Factory = Callable[[httpx.Limits], httpx.AsyncBaseTransport]


def _httpcore(limits: httpx.Limits) -> httpx.AsyncBaseTransport:
    return httpx.AsyncHTTPTransport(limits=limits, trust_env=False)


def _aiohttp(limits: httpx.Limits) -> httpx.AsyncBaseTransport:
    from bench.aiohttp_transport import AiohttpTransport

    return AiohttpTransport(limits=limits)


def _h1(limits: httpx.Limits) -> httpx.AsyncBaseTransport:
    from service.transport.h1 import H1Transport

    return H1Transport(limits=limits)


def _httpx_aiohttp(limits: httpx.Limits) -> httpx.AsyncBaseTransport:
    from httpx_aiohttp import AiohttpTransport  # optional; not a dependency of the service

    return AiohttpTransport()


class NullTransport(httpx.AsyncBaseTransport):
    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        return httpx.Response(
            200,
            headers=[(b"Content-Type", b"application/json"), (b"Content-Length", b"11")],
            stream=httpx.ByteStream(b'{"ok":true}'),
            request=request,
        )


FACTORIES: dict[str, Factory] = {
    "httpcore": _httpcore,
    "aiohttp": _aiohttp,
    "h1": _h1,
    "httpx-aiohttp": _httpx_aiohttp,
    "null": lambda limits: NullTransport(),
}
