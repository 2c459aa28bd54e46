"""The front door's protocol: strict HTTP/1.1 and WebSocket, and a per-worker connection cap.

``FrontDoorProtocol`` is Sanic's WebSocket-capable HTTP/1.1 protocol with ``StrictHttp``
as its connection handler and a cap on the connections one worker holds. The cap's
behaviour: the connection over it gets a ready-made ``503`` (``Retry-After: 1``, the JSON
shape of every error) and is closed at once, before a byte of it is read, so a flood costs
a write and a close instead of memory and a file descriptor for as long as the client
likes. WebSocket connections are ``StrictWebsocket`` (invalid UTF-8 closes with 1007).
``service.frontdoor.app.FrontDoorApp`` makes every server use it.
"""

from __future__ import annotations

from typing import Any

import orjson
from sanic.server.protocols.websocket_protocol import WebSocketProtocol

from service.errors import sanic_error_body
from service.frontdoor.strict_http import StrictHttp
from service.frontdoor.websocket import StrictWebsocket


def _overloaded_response() -> bytes:
    body = orjson.dumps(sanic_error_body(503, "too many connections to this worker"))
    head = (
        "HTTP/1.1 503 Service Unavailable\r\n"
        "content-type: application/json\r\n"
        f"content-length: {len(body)}\r\n"
        "retry-after: 1\r\n"
        "connection: close\r\n\r\n"
    )
    return head.encode("ascii") + body


OVERLOADED = _overloaded_response()


class FrontDoorProtocol(WebSocketProtocol):
    HTTP_CLASS = StrictHttp
    __slots__ = ("keep_alive_after_head",)  # Sanic's protocols have slots, no __dict__

    def connection_made(self, transport: Any) -> None:
        super().connection_made(transport)
        frontdoor = self.app.ctx.lb.settings.frontdoor
        # Until its first request head, a connection gets the head deadline, not Sanic's
        # keep-alive timeout: one that never sends a byte goes at LB_HEADER_TIMEOUT, as in
        # nginx. StrictHttp gives the keep-alive timeout back once a head has arrived.
        self.keep_alive_after_head = self.app.config.KEEP_ALIVE_TIMEOUT
        self.keep_alive_timeout = min(frontdoor.header_timeout, self.keep_alive_timeout)
        if len(self.connections) > frontdoor.max_client_connections:
            self._task.cancel()
            transport.write(OVERLOADED)
            transport.close()

    async def websocket_handshake(self, request: Any, subprotocols: Any = None) -> Any:
        websocket = await WebSocketProtocol.websocket_handshake(self, request, subprotocols)
        # Sanic builds the connection object here with no hook for its class; the subclass
        # adds no state, only the 1007 close (see service/frontdoor/websocket.py).
        websocket.__class__ = StrictWebsocket
        return websocket
