"""The upstream clients: one ``httpx.AsyncClient`` per upstream per worker.

Built in a ``before_server_start`` listener onto ``app.ctx.upstreams`` and closed in
``after_server_stop``, so every request of a worker reuses the same connection pool.
"""

from __future__ import annotations

from http.cookiejar import CookieJar, DefaultCookiePolicy

import httpx
from sanic import Sanic

from service.settings import ProxySettings, Settings, Upstream
from service.transport import AiohttpTransport


def _jar_that_keeps_nothing() -> CookieJar:
    """A shared client must never replay one user's ``Set-Cookie`` to another user."""
    return CookieJar(policy=DefaultCookiePolicy(allowed_domains=[]))


def build_client(upstream: Upstream, proxy: ProxySettings) -> httpx.AsyncClient:
    limits = httpx.Limits(
        max_connections=proxy.max_connections,
        max_keepalive_connections=proxy.max_keepalive,
        keepalive_expiry=proxy.keepalive_expiry,
    )
    return httpx.AsyncClient(
        base_url=upstream.url,
        transport=AiohttpTransport(limits=limits),
        timeout=httpx.Timeout(
            connect=proxy.connect_timeout,
            read=proxy.read_timeout,
            write=proxy.read_timeout,
            pool=proxy.connect_timeout,
        ),
        cookies=httpx.Cookies(_jar_that_keeps_nothing()),
        follow_redirects=False,
        trust_env=False,
    )


class UpstreamClients:
    """Name -> client for every configured upstream."""

    def __init__(self, settings: Settings) -> None:
        self._clients = {u.name: build_client(u, settings.proxy) for u in settings.upstreams}

    def __getitem__(self, name: str) -> httpx.AsyncClient:
        return self._clients[name]

    async def aclose(self) -> None:
        for client in self._clients.values():
            await client.aclose()


def register(app: Sanic) -> None:
    @app.before_server_start
    async def open_clients(app: Sanic) -> None:
        app.ctx.upstreams = UpstreamClients(app.ctx.settings)

    @app.after_server_stop
    async def close_clients(app: Sanic) -> None:
        await app.ctx.upstreams.aclose()
