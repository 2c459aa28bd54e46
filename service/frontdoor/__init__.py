"""The front door: what stands between the internet and the proxy.

- ``head``: the strict grammar of a request head and a chunk-size line (RFC 9110/9112).
- ``strict_http``: Sanic's ``Http`` with that check run first and a deadline on the head.
- ``protocol``: the server protocol using it, with a per-worker connection cap, and
  ``FrontDoorApp``, the ``Sanic`` class whose servers all use that protocol.
- ``supervision``: dead workers replaced; SIGTERM honoured during start-up.

``startup(app)`` registers the listeners: supervision in the main process, and in every
worker the drain (``draining`` set at the start of a graceful shutdown, so the readiness
probe ``/lb-health?ready=1`` answers 503, then ``LB_DRAIN_DELAY`` seconds of serving
before the listening socket closes and in-flight requests finish).
"""

from __future__ import annotations

import asyncio

from sanic import Sanic

from service.frontdoor.protocol import FrontDoorApp, FrontDoorProtocol
from service.frontdoor.supervision import supervise

__all__ = ["FrontDoorApp", "FrontDoorProtocol", "startup"]


def startup(app: Sanic) -> None:
    @app.main_process_ready
    async def supervise_workers(app: Sanic) -> None:
        supervise(app.manager, app.config.GRACEFUL_SHUTDOWN_TIMEOUT)

    # before_server_stop listeners run in reverse order: registered last, this runs first
    @app.before_server_stop
    async def drain(app: Sanic) -> None:
        lb = app.ctx.lb
        lb.draining = True
        if lb.settings.frontdoor.drain_delay > 0:
            await asyncio.sleep(lb.settings.frontdoor.drain_delay)
