"""``StrictWebsocket``: Sanic's WebSocket connection, failing invalid UTF-8 with 1007.

Sanic decodes a text message in its frame assembler, inside a task that the connection's
``data_received`` starts and nobody awaits: invalid UTF-8 raises ``UnicodeDecodeError``
there ("Task exception was never retrieved") and the socket stays open until its idle
timeout. RFC 6455 §8.1 says an endpoint that receives invalid UTF-8 in a text message
MUST fail the connection, and §7.4.1 gives the code, 1007. Protocol errors (1002) and
oversized messages (1009) are already failed by the ``websockets`` protocol object.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sanic.server.websockets.impl import WebsocketImplProtocol

INVALID_PAYLOAD = 1007  # RFC 6455 §7.4.1: data inconsistent with the message type


class StrictWebsocket(WebsocketImplProtocol):
    async def process_events(self, events: Sequence[Any]) -> None:
        try:
            await WebsocketImplProtocol.process_events(self, events)
        except UnicodeDecodeError:
            self.fail_connection(INVALID_PAYLOAD, "invalid UTF-8 in a text message")
