"""``PreformattedResponse``: a response that formats its own head, sent whole in one write.

Sanic sends a response's head by asking ``processed_headers`` for ``(name, value)`` pairs:
a generator that runs ``str.translate`` over every name and value (to strip CR, LF and NUL)
and encodes each, inside ``Http.http1_response_header``; for ``/lb-health`` that was a tenth
of the request's CPU. A response whose fields are bytes already known to be clean (a
proxied answer's fields as llhttp accepted them; the load balancer's own) formats its head
itself when its whole body is in hand: ``StrictHttp`` sends head and body in one ``write``,
framed by ``Content-Length``. Everything else (a streamed body, a HEAD answer, a status
without a body, ``Expect: 100-continue``, Sanic's own access log, a response whose
``headers`` someone set the way Sanic's responses take them) goes Sanic's way.
"""

from __future__ import annotations

from sanic.compat import Header
from sanic.headers import format_http1_response
from sanic.response import HTTPResponse

# "HTTP/1.1 200 OK\r\n": the status lines Sanic sends, reason phrases included
STATUS_LINES = tuple(format_http1_response(status, ())[:-2] for status in range(1000))
_NO_BODY = frozenset({204, 304, *range(100, 200)})
_LINE = b"%b: %b\r\n"


class PreformattedResponse(HTTPResponse):
    """``fields``: the head's fields as bytes, in order, before the framing. ``headers``
    (Sanic's) is made only when Sanic formats the head, holding the framing it chooses
    (``declared_length``, the body's declared size, to start with)."""

    __slots__ = ("_headers", "declared_length", "fields")

    def __init__(
        self,
        status: int,
        fields: list[tuple[bytes, bytes]],
        body: bytes | None = None,
        declared_length: bytes | None = None,
    ) -> None:
        # HTTPResponse.__init__ is not called: it would build the Header object that a
        # body sent whole never needs
        self.asgi = False
        self.body = body
        self.content_type = None
        self.stream = None
        self._cookies = None
        self._headers: Header | None = None
        self.status = status
        self.fields = fields
        self.declared_length = declared_length

    @property
    def headers(self) -> Header:  # type: ignore[override]
        """What Sanic manages, when it formats the head itself."""
        if self._headers is None:
            self._headers = Header()
            if self.declared_length is not None:
                self._headers["content-length"] = self.declared_length.decode("latin-1")
        return self._headers

    @headers.setter
    def headers(self, value: Header) -> None:
        self._headers = value

    def whole(self, size: int, keep_alive: bool) -> bytes | None:
        """The head for a body of ``size`` bytes sent at once (``Content-Length: size``,
        ``Connection`` as Sanic would set it), or None when Sanic must format it."""
        if self._headers is not None or self.status in _NO_BODY:
            return None  # something asked for Sanic's headers: Sanic formats the head
        fields = b"".join([_LINE % field for field in self.fields])
        framing = b"content-length: %d\r\nconnection: %b\r\n\r\n" % (
            size,
            b"keep-alive" if keep_alive else b"close",
        )
        return STATUS_LINES[self.status] + fields + framing

    @property
    def processed_headers(self) -> list[tuple[bytes, bytes]]:  # type: ignore[override]
        """Sanic's way: ``fields`` first, then what Sanic set (never an invented
        ``content-type: None``)."""
        return self.fields + [
            (name.encode("ascii"), f"{value}".encode(errors="surrogateescape"))
            for name, value in self.headers.items()
        ]


def add_field(response: HTTPResponse, name: str, value: str) -> None:
    """A field of the load balancer's own (a name of ours, a value it made or checked) on
    any response: with the preformatted fields, or in Sanic's headers."""
    if isinstance(response, PreformattedResponse):
        response.fields.append((name.encode("ascii"), value.encode("latin-1")))
    else:
        response.headers[name] = value
