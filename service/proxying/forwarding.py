"""The headers a request is sent upstream with, from what the connection knows: one
function for the proxy's exchanges and the WebSocket tunnel's handshake alike, so both
treat forwarding headers and underscored names the same way (``service.proxying.headers``
says how)."""

from __future__ import annotations

from sanic import Request

from service.proxying.headers import upstream_request_fields
from service.transport.seam import Triple


def upstream_fields(
    request: Request,
    host: bytes | None,
    traceparent: bytes | None = None,
    tracestate: bytes | None = None,
) -> list[Triple]:
    """``request``'s header fields for an upstream; ``host`` replaces its ``Host`` (None:
    kept); ``traceparent``/``tracestate``: the attempt's trace context (service.tracing)."""
    addresses = request.app.ctx.lb.client_addresses
    ctx = request.ctx
    return upstream_request_fields(
        request.head,
        peer=request.ip.encode(),
        client=addresses.of(request).encode(),
        trusted_peer=addresses.trusts_peer(request),
        scheme=b"https" if request.conn_info and request.conn_info.ssl else b"http",
        host=host,
        request_id=ctx.request_id.encode(),
        drop_underscored=getattr(ctx, "dropped_headers", 0) > 0,
        traceparent=traceparent,
        tracestate=tracestate,
    )
