"""Changes proposed for files the transport's owner does not own, applied by monkeypatching.

``BENCH_VARIANT=<transport>+url`` (the first), ``+stream`` (the second) or ``+proposal``
(both) installs them in every worker (bench/variant.py), so ``proxy_bench.py --transport
h1,h1+url`` measures their effect; bench/README.md gives
the figures and the exact edits. Written against ``service/forwarding.py`` and
``service/blueprints/proxy.py`` as they were in the working tree on top of commit 6ae06d6.

1. ``service/forwarding.py``: build the upstream URL through a bounded cache,
   ``_url = functools.lru_cache(maxsize=1024)(httpx.URL)``, and pass ``_url(...)`` to
   ``httpx.Request`` instead of the string: httpx parses and validates a string URL on every
   request (~12 µs: a regex, percent-encoding checks and ``ipaddress`` for an IP host), and
   ``httpx.URL`` is immutable, so one parsed URL per distinct target is enough.
2. ``service/blueprints/proxy.py`` ``_relay``: ``async for chunk in upstream.stream`` instead
   of ``upstream.aiter_raw()``, skipping httpx's per-chunk re-chunking and byte counting.
   Measured (``+stream``): no difference within noise, so not proposed; kept so the
   measurement can be repeated.
"""

from __future__ import annotations

import functools
import types

import httpx
from sanic import Request

from service import forwarding
from service.blueprints import proxy


def install(*, url: bool = True, stream: bool = True) -> None:
    if url:
        _install_url_cache()
    if stream:
        _install_direct_stream()


def _install_url_cache() -> None:
    cached_url = functools.lru_cache(maxsize=1024)(httpx.URL)

    def request(method: str, url: str | httpx.URL, **kwargs: object) -> httpx.Request:
        return httpx.Request(method, cached_url(url) if isinstance(url, str) else url, **kwargs)  # type: ignore[arg-type]

    # forwarding.py calls ``httpx.Request(...)`` with a str: give it a module whose Request
    # goes through the cache and whose every other name is httpx's.
    shim = types.ModuleType("httpx")
    shim.__dict__.update(httpx.__dict__)
    shim.Request = request  # type: ignore[attr-defined]
    forwarding.httpx = shim  # type: ignore[attr-defined]


def _install_direct_stream() -> None:
    async def _relay(request: Request, upstream: httpx.Response) -> bool:
        response = await request.respond(
            proxy.ProxiedResponse(
                status=upstream.status_code, headers=proxy._response_headers(upstream)
            )
        )
        try:
            async for chunk in upstream.stream:  # type: ignore[union-attr]
                await response.send(chunk)
            await response.eof()
        except httpx.HTTPError:
            if request.transport is not None:
                request.transport.abort()
            return False
        return True

    proxy._relay = _relay  # type: ignore[assignment]
