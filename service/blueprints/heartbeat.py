"""``/api/ws-heartbeat``: the dashboard's heartbeat socket, answered locally.

Opening the socket, every message and every pong count as heartbeat activity. The server
pings every ``heartbeat.ping_interval`` seconds itself (Sanic's own keep-alive ping is off,
because its pongs are invisible to us) and closes a socket that has shown no activity for
``heartbeat.idle_timeout`` seconds. A socket holds nothing but its two tasks, and its
count in the shared store goes down when it closes, however it closes.
"""

from __future__ import annotations

import asyncio
import time

from sanic import Blueprint, Request
from sanic.server.websockets.impl import WebsocketImplProtocol
from sanic.exceptions import ServerError, WebsocketClosed
from websockets.exceptions import ConnectionClosed

from service.metrics import MetricsStore

bp = Blueprint("heartbeat")

IDLE_CLOSE_CODE = 1001  # "going away": the server gives up on a silent client


class Activity:
    """The last moment this socket showed life, recorded locally and in the shared store."""

    def __init__(self, store: MetricsStore) -> None:
        self._store = store
        self.last = time.monotonic()

    def seen(self) -> None:
        self.last = time.monotonic()
        self._store.heartbeat()

    def silent_for(self) -> float:
        return time.monotonic() - self.last


@bp.websocket("/api/ws-heartbeat")
async def ws_heartbeat(request: Request, ws: WebsocketImplProtocol) -> None:
    store: MetricsStore = request.app.ctx.lb.metrics
    settings = request.app.ctx.lb.settings.heartbeat
    activity = Activity(store)
    store.socket_opened()
    pinger = asyncio.create_task(_ping(ws, activity, settings.ping_interval))
    try:
        await _receive(ws, activity, settings.idle_timeout)
    finally:
        pinger.cancel()
        store.socket_closed()


async def _receive(ws: WebsocketImplProtocol, activity: Activity, idle_timeout: float) -> None:
    while True:
        remaining = idle_timeout - activity.silent_for()
        if remaining <= 0:
            await ws.close(IDLE_CLOSE_CODE, "idle timeout")
            return
        try:
            message = await ws.recv(timeout=remaining)
        except ConnectionClosed:
            return
        if message is not None:
            activity.seen()
        elif ws.ws_proto.state.name in ("CLOSING", "CLOSED"):
            return


async def _ping(ws: WebsocketImplProtocol, activity: Activity, interval: float) -> None:
    """Ping every ``interval``; each pong that comes back is activity."""
    while True:
        await asyncio.sleep(interval)
        try:
            pong = await ws.ping()
        except (WebsocketClosed, ConnectionClosed, ServerError):
            return  # the socket is closing; the receiver ends the handler
        pong.add_done_callback(lambda fut: fut.cancelled() or fut.exception() or activity.seen())
