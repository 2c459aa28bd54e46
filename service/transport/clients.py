"""The upstream clients: one ``httpx.AsyncClient`` per upstream per worker.

Under each client is ``service.transport.h1.H1Transport``, chosen by measurement over
httpx's own pool (httpcore) and aiohttp's (``bench/aiohttp_transport.py``, retired;
figures in bench/README.md): per proxied request on one worker it costs the least CPU of
the three (figures and the command in bench/README.md). ``build_client(..., transport=...)`` takes
another one, for the benchmarks.
"""

from __future__ import annotations

import ssl
from collections.abc import Callable, ItemsView
from http.cookiejar import Cookie, CookieJar
from typing import Any

import httpx
from service.settings import ProxySettings, Settings, Upstream
from service.tls.contexts import upstream_context
from service.transport.h1 import H1Transport
from service.transport.retiring import Retiring


class _JarThatKeepsNothing(CookieJar):
    def set_cookie(self, cookie: Cookie) -> None:
        pass

    def extract_cookies(self, response: object, request: object) -> None:
        pass


class _NoCookies(httpx.Cookies):
    """Cookies that are never stored, so a shared client never replays one user's
    ``Set-Cookie`` to another user. ``extract_cookies`` does nothing at all: httpx would
    otherwise build urllib/email objects from every response only to throw them away."""

    def __init__(self) -> None:
        super().__init__(_JarThatKeepsNothing())

    def extract_cookies(self, response: httpx.Response) -> None:
        pass


class _ProxyClient(httpx.AsyncClient):
    """An ``httpx.AsyncClient`` that never stores cookies and sends on a short path.

    Cookies: passing ``cookies=`` to ``httpx.AsyncClient`` would not do; httpx copies an
    ``httpx.Cookies`` into a fresh default ``CookieJar``, dropping its policy, so that jar
    would keep (and ``client.get``/``client.stream`` would re-send) every upstream cookie.

    ``send``: this client has no auth, no redirects, no event hooks, no mounts, no cookies
    (``build_client`` makes it so), which leaves httpx's auth/redirect/cookie/hook layers
    around the transport call with nothing to do but cost ~13 µs per request (see
    bench/README.md). ``send`` calls the transport directly unless a caller asks for auth or
    redirects, when httpx's own path runs.
    """

    def __init__(self, *, transport: httpx.AsyncBaseTransport, **kwargs: Any) -> None:
        super().__init__(transport=transport, **kwargs)
        self._upstream_transport = transport

    @property  # type: ignore[override]
    def cookies(self) -> httpx.Cookies:
        return _NO_COOKIES

    @cookies.setter
    def cookies(self, cookies: object) -> None:
        pass  # httpx's __init__ sets its own store; this client keeps none

    async def send(
        self,
        request: httpx.Request,
        *,
        stream: bool = False,
        auth: Any = httpx.USE_CLIENT_DEFAULT,
        follow_redirects: Any = httpx.USE_CLIENT_DEFAULT,
    ) -> httpx.Response:
        if (
            auth is not httpx.USE_CLIENT_DEFAULT
            or follow_redirects is not httpx.USE_CLIENT_DEFAULT
            or self.is_closed
        ):
            return await super().send(
                request, stream=stream, auth=auth, follow_redirects=follow_redirects
            )
        if "timeout" not in request.extensions:
            request.extensions["timeout"] = self.timeout.as_dict()
        try:
            response = await self._upstream_transport.handle_async_request(request)
        except httpx.RequestError as exc:
            try:
                exc.request  # noqa: B018 - raises when the transport did not attach it
            except RuntimeError:
                exc.request = request
            raise
        response.request = request
        if not stream:
            try:
                await response.aread()
            except BaseException:
                await response.aclose()
                raise
        return response


_NO_COOKIES = _NoCookies()


def limits_of(proxy: ProxySettings) -> httpx.Limits:
    return httpx.Limits(
        max_connections=proxy.max_connections,
        max_keepalive_connections=proxy.max_keepalive,
        keepalive_expiry=proxy.keepalive_expiry,
    )


def build_client(
    upstream: Upstream,
    proxy: ProxySettings,
    *,
    transport: httpx.AsyncBaseTransport | None = None,
    ssl_context: ssl.SSLContext | None = None,
) -> httpx.AsyncClient:
    """The proxy's client for ``upstream``; ``transport`` replaces the default (benchmarks);
    ``ssl_context`` is how its ``https://`` targets are verified (``service.tls.contexts``)."""
    return _ProxyClient(
        base_url=upstream.url,
        transport=transport or H1Transport(limits=limits_of(proxy), ssl_context=ssl_context),
        timeout=httpx.Timeout(**proxy.timeouts),
        follow_redirects=False,
        trust_env=False,
    )


class UpstreamClients:
    """Name -> client for every configured upstream."""

    def __init__(self, settings: Settings, *, previous: UpstreamClients | None = None) -> None:
        """``previous``: the clients before a reload; each is kept, with its pooled
        connections, while the connection limits and the TLS context it was made with hold."""
        # One TLS context for every https target of this worker (made only if there is one:
        # loading the system CAs costs a few ms), shared with the WebSocket tunnel.
        https = any(t.url.startswith("https:") for u in settings.upstreams for t in u.targets)
        self.limits = limits_of(settings.proxy)
        kept = previous
        if kept is None or kept.limits != self.limits or (https and kept.ssl_context is None):
            kept = None
        if kept is not None and kept.ssl_context is not None:
            self.ssl_context: ssl.SSLContext | None = kept.ssl_context
        else:
            self.ssl_context = upstream_context(settings.tls) if https else None
        # clients replaced by earlier reloads, still finishing their exchanges
        self._retiring = previous._retiring if previous is not None else Retiring()
        reuse = kept._clients if kept is not None else {}
        self._clients = {
            u.name: reuse.get(u.name)
            or build_client(u, settings.proxy, ssl_context=self.ssl_context)
            for u in settings.upstreams
        }

    def __getitem__(self, name: str) -> httpx.AsyncClient:
        return self._clients[name]

    def __contains__(self, name: object) -> bool:
        return name in self._clients

    def items(self) -> ItemsView[str, httpx.AsyncClient]:
        return self._clients.items()

    def forget(self, name: str, urls: list[str]) -> None:
        """Targets ``urls`` left pool ``name``: close their idle pooled connections (the
        busy ones close as their exchanges end; see ``H1Transport.retire``)."""
        transport = getattr(self._clients[name], "_upstream_transport", None)
        if isinstance(transport, H1Transport):
            for url in urls:
                transport.retire(url)

    def retire(self, previous: UpstreamClients, urls_of: Callable[[str], list[str]]) -> None:
        """After a reload: every client of ``previous`` that these do not keep has the idle
        connections of its targets (``urls_of(name)``) closed now, and is closed once its
        last exchange has ended."""
        for name, client in previous.items():
            if self._clients.get(name) is not client:
                previous.forget(name, urls_of(name))
                self._retiring.close_when_idle(client)

    async def aclose(self) -> None:
        """At the worker's stop: these clients, and the retired ones still waiting."""
        await self._retiring.aclose()
        for client in self._clients.values():
            await client.aclose()
