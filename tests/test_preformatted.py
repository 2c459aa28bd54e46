"""A proxied answer sent whole (``PreformattedResponse.whole``) has the head Sanic's own
formatting gives it, byte for byte: the fast path changes the number of writes, not what
the client reads."""

from __future__ import annotations

import httpx
import pytest
from sanic.headers import format_http1_response
from sanic.response import HTTPResponse

from service.preformatted import PreformattedResponse, add_field
from service.proxying.relay import ProxiedResponse
from service.transport import seam

UPSTREAM = [
    (b"Server", b"server", b"nginx"),
    (b"Content-Type", b"content-type", b"application/json"),
    (b"Connection", b"connection", b"keep-alive, X-Hop"),
    (b"X-Hop", b"x-hop", b"dropped"),
    (b"Content-Length", b"content-length", b"11"),
    (b"Set-Cookie", b"set-cookie", b"a=1"),
    (b"Set-Cookie", b"set-cookie", b"b=2"),
]


def proxied(status: int, fields: list[seam.Triple]) -> ProxiedResponse:
    request = httpx.Request("GET", "http://127.0.0.1:1/")
    upstream = seam.response_of(status, seam.headers_of(fields), httpx.ByteStream(b""), request, {})
    response = ProxiedResponse(upstream)
    response.fields += [(b"RateLimit", b"limit=10"), (b"X-Request-ID", b"abc-1")]
    return response


def test_a_local_answer_sent_whole_has_sanics_head_too() -> None:
    """The load balancer's own answer (``/lb-health``) as a ``PreformattedResponse``: the
    same head as Sanic formats, and its field added the way a Sanic response takes one."""
    fields = [(b"content-type", b"application/json")]
    fast = PreformattedResponse(200, fields[:], body=b"{}")
    add_field(fast, "X-Request-ID", "abc-1")
    slow = PreformattedResponse(200, fields[:], body=b"{}")
    add_field(slow, "X-Request-ID", "abc-1")
    assert fast.whole(2, True) == sanic_head(slow, 2, True)
    plain = HTTPResponse(b"{}", content_type="application/json")
    add_field(plain, "X-Request-ID", "abc-1")
    assert plain.headers["X-Request-ID"] == "abc-1"


def sanic_head(response: PreformattedResponse, size: int, keep_alive: bool) -> bytes:
    """What ``Http.http1_response_header`` formats for a body sent in one block."""
    response.headers["content-length"] = size
    response.headers["connection"] = "keep-alive" if keep_alive else "close"
    return format_http1_response(response.status, response.processed_headers)


@pytest.mark.parametrize("keep_alive", [True, False])
@pytest.mark.parametrize("status", [200, 404, 503])
def test_whole_head_is_sanics_head(status: int, keep_alive: bool) -> None:
    fast = proxied(status, UPSTREAM).whole(11, keep_alive)
    assert fast is not None
    assert fast == sanic_head(proxied(status, UPSTREAM), 11, keep_alive)
    assert b"X-Hop" not in fast and fast.count(b"content-length") == 1
    assert fast.index(b"Set-Cookie: b=2") < fast.index(b"RateLimit") < fast.index(b"X-Request-ID")
    assert fast.startswith(b"HTTP/1.1 %d " % status) and fast.endswith(b"\r\n\r\n")


def test_once_sanic_manages_the_headers_sanic_formats_the_head() -> None:
    response = proxied(200, UPSTREAM)
    response.headers["X-Extra"] = "1"  # a field set the way Sanic's responses take them
    assert response.whole(11, True) is None


@pytest.mark.parametrize("status", [204, 304])
def test_a_status_without_a_body_is_left_to_sanic(status: int) -> None:
    assert proxied(status, UPSTREAM[:2]).whole(0, True) is None
    assert proxied(status, UPSTREAM[:2]).headers.get("content-length") is None
