"""Talking to upstreams: the HTTP/1.1 transport under httpx (``h1``), one client per
upstream per worker (``clients``), and the clients a reload replaced, closed once idle
(``retiring``).

``startup(app)`` builds the clients before the worker serves, so every request of a worker
reuses the same connection pools, and closes them after it stops.
"""

from __future__ import annotations

from sanic import Sanic

from service.transport.clients import UpstreamClients, build_client, limits_of
from service.transport.h1 import H1Transport, arrived_whole

__all__ = [
    "H1Transport",
    "UpstreamClients",
    "arrived_whole",
    "build_client",
    "limits_of",
    "startup",
]


def startup(app: Sanic) -> None:
    @app.before_server_start
    async def open_clients(app: Sanic) -> None:
        app.ctx.lb.clients = UpstreamClients(app.ctx.lb.settings)

    @app.after_server_stop
    async def close_clients(app: Sanic) -> None:
        await app.ctx.lb.clients.aclose()
