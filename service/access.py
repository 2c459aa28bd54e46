"""Who may see the operator's pages: ``/metrics`` and ``/lb-status`` answer only clients in
``LB_ADMIN_ALLOW`` (``service.settings.model.AdminSettings`` says why the default is
loopback only); ``/stats`` stays public, because the dashboard reads it from the browser.

The client is the TCP peer (``request.ip``), never a forwarded header: the load balancer is
the front door, so any ``X-Forwarded-For`` it receives was written by the client itself;
unless the peer is one of ``LB_TRUSTED_PROXIES``, whose ``X-Forwarded-For`` names the client
(``service.frontdoor.client``), and never as a loopback, unspecified or link-local address:
a trusted network's host cannot pass the loopback default by claiming ``127.0.0.1``.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable
from functools import wraps
from ipaddress import IPv4Network, IPv6Network, ip_address
from typing import Any

from sanic import Request
from sanic.response import HTTPResponse

from service.frontdoor.client import client_address
from service.errors import Forbidden, error_response

Handler = Callable[..., Awaitable[HTTPResponse]]


def allowed(client_ip: str, networks: Iterable[IPv4Network | IPv6Network]) -> bool:
    """True if ``client_ip`` is in one of ``networks``; an unparsable address never is.
    An IPv4 client seen on an IPv6 socket (``::ffff:127.0.0.1``) is judged as IPv4."""
    try:
        address = ip_address(client_ip.strip("[]").split("%", 1)[0])
    except ValueError:
        return False
    if address.version == 6 and address.ipv4_mapped is not None:  # type: ignore[union-attr]
        address = address.ipv4_mapped  # type: ignore[union-attr]
    return any(address in network for network in networks)


def admin_only(handler: Handler) -> Handler:
    """The handler, answering 403 (the one JSON shape) to clients outside LB_ADMIN_ALLOW."""

    @wraps(handler)
    async def guarded(request: Request, *args: Any, **kwargs: Any) -> HTTPResponse:
        if not allowed(client_address(request), request.app.ctx.lb.settings.admin.allow):
            return error_response(Forbidden(f"{request.path} is for operators; see LB_ADMIN_ALLOW"))
        return await handler(request, *args, **kwargs)

    return guarded
