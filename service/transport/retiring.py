"""Clients a reload replaced, each closed once its last exchange has ended.

A stream or a WebSocket tunnel on a client the new configuration does not keep goes on to
its end: the client's idle connections are closed at once (``UpstreamClients.retire``), its
busy ones as their exchanges end, and the client itself once none is busy. At the worker's
stop, whatever is still waiting is closed then.
"""

from __future__ import annotations

import asyncio

import httpx

from service.background import Background
from service.transport.h1 import H1Transport

CLOSE_POLL_S = 0.5  # how often a retired client is asked whether its last exchange ended


def connections_in_use(client: httpx.AsyncClient) -> int:
    """Connections of ``client`` busy with an exchange now (0 on another transport)."""
    transport = getattr(client, "_upstream_transport", None)
    return transport.connections_in_use() if isinstance(transport, H1Transport) else 0


class Retiring:
    def __init__(self) -> None:
        self._closing: dict[httpx.AsyncClient, Background] = {}

    def close_when_idle(self, client: httpx.AsyncClient) -> None:
        async def close() -> None:
            while connections_in_use(client):
                await asyncio.sleep(CLOSE_POLL_S)
            del self._closing[client]
            await client.aclose()

        self._closing[client] = Background(close)
        self._closing[client].start()

    async def aclose(self) -> None:
        """Every client still waiting, closed now, whatever it was waiting for."""
        while self._closing:
            client, closing = self._closing.popitem()
            await closing.stop()
            await client.aclose()
