"""The gate in front of a local endpoint: ``/stats`` is covered by ``LB_RATE_LIMIT`` and by
limits whose ``routes`` name ``stats``, with the same 429 and fields as a proxied route."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from functools import wraps
from typing import TYPE_CHECKING, Any

from sanic import Request
from sanic.response import HTTPResponse

from service.errors import LoadBalancerError, error_response
from service.settings.model import STATS_ROUTE

if TYPE_CHECKING:
    from service.admission.gate import Gate

Handler = Callable[..., Awaitable[HTTPResponse]]


def admitted(handler: Handler) -> Handler:
    """A local endpoint's handler behind the gate (``/stats``: its route is ``stats``)."""

    @wraps(handler)
    async def guarded(request: Request, *args: Any, **kwargs: Any) -> HTTPResponse:
        gate: Gate | None = request.app.ctx.lb.gate
        if gate is None:
            return await handler(request, *args, **kwargs)
        try:
            admission = gate.admit(request, STATS_ROUTE)
        except LoadBalancerError as error:
            return error_response(error)
        if admission is None:
            return await handler(request, *args, **kwargs)
        try:
            response = await handler(request, *args, **kwargs)
        finally:
            admission.release()
        response.headers.update(admission.fields)
        return response

    return guarded
