"""Header names holding ``_`` (issue 22, item 7): ``LB_UNDERSCORES_IN_HEADERS``.

Upstreams that map ``-`` and ``_`` to one name (CGI's and WSGI's ``HTTP_X_FORWARDED_FOR``)
would read ``X_Forwarded_For`` or ``Transfer_Encoding`` as the header they imitate. Real load
balancers, one per mode, in front of real upstreams that echo what they received.
"""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest

from tests.support import LoadBalancer, UpstreamServer, env_for, raw_request, wait_for

HEAD = (
    b"GET /api/u?n=%d HTTP/1.1\r\nHost: shop.example\r\nX_Forwarded_For: 6.6.6.6\r\n"
    b"Transfer_Encoding: chunked\r\nX-Plain: kept\r\nCookie: _ga=1; a_b=2\r\n"
    b"Connection: close\r\n\r\n"
)


@pytest.fixture(scope="module", params=["drop", "pass", "reject"])
def lb(
    request: pytest.FixtureRequest, upstreams: dict[str, UpstreamServer]
) -> Iterator[LoadBalancer]:
    balancer = LoadBalancer(env_for(upstreams, LB_UNDERSCORES_IN_HEADERS=request.param))
    balancer.mode = request.param  # type: ignore[attr-defined]
    yield balancer
    balancer.stop()


def names_received(body: bytes) -> list[str]:
    return [name.lower() for name, _ in json.loads(body)["headers"]]


def test_underscored_names_by_mode(lb: LoadBalancer) -> None:
    mode = lb.mode  # type: ignore[attr-defined]
    status, _, body = raw_request(lb.port, HEAD % 1)
    if mode == "reject":
        assert status == 400
        assert json.loads(body) == {
            "error": "bad request",
            "detail": "a header name holds '_' (see LB_UNDERSCORES_IN_HEADERS)",
        }
        return
    assert status == 200
    names = names_received(body)
    assert "x-plain" in names and "cookie" in names  # the rest, and "_" in values, untouched
    underscored = {"x_forwarded_for", "transfer_encoding"}
    if mode == "drop":
        assert not underscored & set(names)
        wait_for(lambda: any("path=/api/u route=api-gateway" in line
                             and " dropped_headers=2 trace_id=" in line
                             for line in lb.output))  # fmt: skip
    else:
        assert underscored <= set(names)


def test_a_request_without_underscored_names_is_logged_as_before(lb: LoadBalancer) -> None:
    head = b"GET /api/plain_path?a_b=1 HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n"
    status, _, _ = raw_request(lb.port, head)
    assert status == 200

    def line() -> str | None:
        return next((x for x in lb.output if "path=/api/plain_path" in x), None)

    found = wait_for(line).value
    assert "dropped_headers" not in found and "reason=" not in found
    # the line as before: request_id, then only the trace (service.tracing) after it
    *_, request_id, trace_id, span_id = found.rstrip().split(" ")
    assert request_id.startswith("request_id=") and trace_id.startswith("trace_id=")
    assert span_id.startswith("span_id=")
