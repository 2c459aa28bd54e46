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
from sanic.response import HTTPResponse

# "HTTP/1.1 200 OK\r\n": the status lines Sanic sends, reason phrases included
STATUS_LINES = tuple(format_http1_response(status, ())[:-2] for status in range(1000))


class PreformattedResponse(HTTPResponse):
    """A response whose subclass can format the whole head for a body sent at once."""

    __slots__ = ()

    def whole(self, size: int, keep_alive: bool) -> bytes | None:
        """The head for a body of ``size`` bytes sent at once (``Content-Length: size``,
        ``Connection`` as Sanic would set it), or None when Sanic must format it."""
        raise NotImplementedError
