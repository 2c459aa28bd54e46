"""The front door: what stands between the internet and the proxy.

- ``client``: who the client is: the TCP peer, or behind ``LB_TRUSTED_PROXIES`` the
  rightmost untrusted ``X-Forwarded-For`` address, never a loopback, unspecified or
  link-local one (the access log, ``X-Real-IP``, rate limits and ``LB_ADMIN_ALLOW`` all ask
  it; rate limits key an IPv6 client by its network).
- ``head``: the strict grammar of a request head and a chunk-size line (RFC 9110/9112).
- ``strict_http``: Sanic's ``Http`` with that check run first, a deadline on the head, and
  header names holding ``_`` counted (``LB_UNDERSCORES_IN_HEADERS``).
- ``protocol``: the server protocol using it, with a per-worker connection cap; ``app``:
  ``FrontDoorApp``, the ``Sanic`` class whose servers all use that protocol.
- ``proxy_header`` and ``proxy_protocol``: ``LB_PROXY_PROTOCOL``, the client's address from
  a TCP balancer's PROXY protocol header (v1, v2), read before HTTP and before TLS.
- ``liveness``: each worker's stamp in the shared block, and the watch for stalled ones.
- ``supervision``: dead and stalled workers replaced; one graceful stop on SIGTERM or
  SIGINT, to the main process or to the whole process group, during start-up too.
- ``sync_manager``: Sanic's sync manager (the workers' states) served by threads of the
  main process, not by a process of its own.

``startup(app)`` reserves the stamp in every worker row and registers the listeners:
supervision in the main process, and in every worker the stamps, the stop on the first
signal, and the drain (``draining`` set at the start of a graceful shutdown, so the
readiness probe ``/lb-health?ready=1`` answers 503, then ``LB_DRAIN_DELAY`` seconds of
serving before the listening socket closes and in-flight requests finish).
"""

from __future__ import annotations

import asyncio

from sanic import Sanic

from service.features import CheckLines, RestartOnly
from service.frontdoor import liveness
from service.frontdoor.client import ClientAddresses, client_address
from service.frontdoor.app import FrontDoorApp
from service.frontdoor.protocol import FrontDoorProtocol
from service.frontdoor.proxy_protocol import RefusalLog
from service.frontdoor.supervision import stop_once_on_signal, supervise
from service.settings import Settings
from service.sharedmem import SharedBlock

__all__ = [
    "ClientAddresses",
    "FrontDoorApp",
    "FrontDoorProtocol",
    "check_lines",
    "client_address",
    "startup",
]


# the main process's watch over the workers, set up as they start; the listening protocol
# (and with TLS, whether Sanic or the front door starts the handshake), chosen at start-up
RESTART_ONLY = RestartOnly(
    fields=(("frontdoor", "worker_stall_timeout"), ("frontdoor", "proxy_protocol"))
)


def check_lines(settings: Settings) -> CheckLines:
    """``--check``'s line for the front door, when the PROXY protocol is on."""
    if not settings.frontdoor.proxy_protocol:
        return CheckLines()
    trusted = ", ".join(map(str, settings.admission.trusted_proxies))
    line = f"PROXY protocol (v1, v2) required from {trusted}; the header's source is the client"
    return CheckLines(listen=(line,))


def startup(app: Sanic) -> None:
    stamp_region = liveness.reserve(app.ctx.lb.plan)
    if app.ctx.lb.settings.frontdoor.proxy_protocol:
        app.ctx.lb.proxy_protocol_refusals = RefusalLog()

    @app.main_process_ready
    async def supervise_workers(app: Sanic) -> None:
        lb = app.ctx.lb
        stamps = liveness.Liveness(SharedBlock(app.shared_ctx.block, lb.plan), stamp_region)
        stalls = liveness.StallWatch(stamps, lb.settings.frontdoor.worker_stall_timeout)
        supervise(app.manager, app.config.GRACEFUL_SHUTDOWN_TIMEOUT, stalls)

    @app.before_server_start
    async def stamp_liveness(app: Sanic) -> None:
        row = app.ctx.lb.row
        liveness.Liveness(row.block, stamp_region).start_stamping(row)

    @app.after_server_start
    async def stop_once(app: Sanic) -> None:
        stop_once_on_signal(app)

    # before_server_stop listeners run in reverse order: registered last, this runs first
    @app.before_server_stop
    async def drain(app: Sanic) -> None:
        lb = app.ctx.lb
        lb.draining = True
        if lb.settings.frontdoor.drain_delay > 0:
            await asyncio.sleep(lb.settings.frontdoor.drain_delay)
