"""``PreformattedResponse``: a response that formats its own head, sent whole in one write.

Sanic sends a response's head by asking ``processed_headers`` for ``(name, value)`` pairs
(a generator, one ``str.encode`` and one ``%`` format per field) inside
``Http.http1_response_header``. A proxied answer already holds its header fields as the
bytes that came from the upstream, so ``StrictHttp`` lets such a response write its head
itself when its whole body is in hand: the head and the body leave in one ``write``,
framed by ``Content-Length``. Everything else (a streamed body, a HEAD answer, a status
without a body, ``Expect: 100-continue``, Sanic's own access log) goes Sanic's way.
"""

from __future__ import annotations

from sanic.headers import format_http1_response
from sanic.helpers import has_message_body
from sanic.response import HTTPResponse


class PreformattedResponse(HTTPResponse):
    """Subclasses say which fields come first, as bytes (``leading_fields``); the fields
    in ``headers`` (Sanic's framing, the load balancer's own) follow, as Sanic orders them."""

    __slots__ = ()

    def leading_fields(self) -> list[tuple[bytes, bytes]]:
        raise NotImplementedError

    def whole(self, size: int, keep_alive: bool) -> bytes | None:
        """The head for a body of ``size`` bytes sent at once, or None when Sanic must
        format it (a status that has no body)."""
        if not has_message_body(self.status):
            return None
        headers = self.headers
        headers["content-length"] = size  # what Sanic sets for a body sent in one block
        headers["connection"] = "keep-alive" if keep_alive else "close"
        fields = self.leading_fields()
        fields += [(name.encode("ascii"), f"{value}".encode()) for name, value in headers.items()]
        return format_http1_response(self.status, fields)
