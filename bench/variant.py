"""The load balancer with another client or transport under it, for benchmarks only.

``sanic bench.variant:app`` with ``BENCH_VARIANT=<spec>`` in the environment. Sanic spawns
its workers and each re-imports this module, so the swap happens here, at module level,
before ``service.app`` builds the application: ``service.upstreams.build_client`` is
replaced; everything else (routing, headers, metrics, the proxy blueprint) is the service's.

``<spec>`` is ``service`` (nothing swapped) or ``<transport>[@httpx]``:

- ``<transport>``: a name of ``bench.variant_transports.FACTORIES`` (httpcore, aiohttp, h1,
  httpx-aiohttp, null) under the service's own client (``service.upstreams.build_client``);
- ``@httpx``: under a plain ``httpx.AsyncClient`` built as the first version of the service
  built it (so ``aiohttp@httpx`` is that version, and ``httpcore@httpx`` is stock httpx).

(The ``+proposal``, ``+url`` and ``+stream`` suffixes of bench/README.md's older runs applied
``bench/proxy_proposal.py``, since deleted: stale against the service.)
"""

from __future__ import annotations

import os
from http.cookiejar import CookieJar, DefaultCookiePolicy

import httpx

from bench.variant_transports import FACTORIES
from service.transport import clients as upstreams
from service.settings import ProxySettings, Upstream


def _plain_client(
    upstream: Upstream, proxy: ProxySettings, transport: httpx.AsyncBaseTransport
) -> httpx.AsyncClient:
    """The client of the service's first version: httpx's whole ``send`` path, a cookie jar."""
    return httpx.AsyncClient(
        base_url=upstream.url,
        transport=transport,
        timeout=httpx.Timeout(
            connect=proxy.connect_timeout,
            read=proxy.read_timeout,
            write=proxy.read_timeout,
            pool=proxy.connect_timeout,
        ),
        cookies=httpx.Cookies(CookieJar(policy=DefaultCookiePolicy(allowed_domains=[]))),
        follow_redirects=False,
        trust_env=False,
    )


def _install(spec: str) -> None:
    name, _, client = spec.partition("@")
    if (name != "service" and name not in FACTORIES) or client not in ("", "httpx"):
        raise SystemExit(f"bench.variant: unknown BENCH_VARIANT {spec!r} (see bench/variant.py)")
    if name != "service":
        factory = FACTORIES[name]
        original = upstreams.build_client

        def build_client(upstream: Upstream, proxy: ProxySettings) -> httpx.AsyncClient:
            transport = factory(upstreams.limits_of(proxy))
            if client == "httpx":
                return _plain_client(upstream, proxy, transport)
            return original(upstream, proxy, transport=transport)

        upstreams.build_client = build_client  # type: ignore[assignment]


_install(os.environ.get("BENCH_VARIANT", "service"))

from service.app import app

__all__ = ["app"]
