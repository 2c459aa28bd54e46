"""The proxy's machinery: where a request goes (``routing``), the headers at the boundary
(``headers``, and ``forwarding``: what a request's upstream is told of it), one exchange
with one target (``exchange``) and the WebSocket pass-through (``websocket_tunnel``). The
HTTP surface that drives them is ``service.blueprints.proxy``.
"""

from __future__ import annotations

from service.proxying.routing import Router
from service.settings import ProxySettings

__all__ = ["Router", "response_timeout"]


def response_timeout(proxy: ProxySettings) -> float:
    """Sanic's ``RESPONSE_TIMEOUT`` over a proxy whose upstreams have ``read_timeout`` to
    answer each read: theirs, and room for the rest of the exchange (start-up and reload)."""
    return proxy.read_timeout + 30
