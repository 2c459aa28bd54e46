"""Every answer gets its access line, the front door's own included (issue 22, item 10).

Malformed requests over raw sockets to real load balancers, in both log formats: the
``400``, ``405``, ``408`` and ``413`` made before a request is routed are each logged once,
with the peer as client, no route and the reason; with ``LB_ACCESS_LOG=false``, nothing.
(Sanic 25.12 answers an oversized head ``413``; it has no ``431`` of its own.)
"""

from __future__ import annotations

import json
import socket
import time
from collections.abc import Iterator

import pytest

from tests.support import LoadBalancer, UpstreamServer, env_for, raw_request, wait_for

MALFORMED = {
    "malformed header field": (
        400,
        b"GET /api/x HTTP/1.1\r\nHost: a\r\nBad Header: x\r\nConnection: close\r\n\r\n",
    ),
    "malformed request line": (
        400,
        b"GET  /api/x HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n",
    ),
    "Method TRACE not allowed for URL /api/x": (
        405,
        b"TRACE /api/x HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n",
    ),
    "Request header exceeds the size limit": (
        413,
        b"GET / HTTP/1.1\r\nHost: a\r\nX-Big: " + b"a" * 20_000 + b"\r\nConnection: close\r\n\r\n",
    ),
}
SLOW = "the request head was not received in time"


@pytest.fixture(scope="module", params=["text", "json"])
def lb(
    request: pytest.FixtureRequest, upstreams: dict[str, UpstreamServer]
) -> Iterator[LoadBalancer]:
    balancer = LoadBalancer(env_for(upstreams, LB_LOG_FORMAT=request.param, LB_HEADER_TIMEOUT="1"))
    balancer.log_format = request.param  # type: ignore[attr-defined]
    yield balancer
    balancer.stop()


def slow_head(port: int) -> tuple[bytes, float]:
    """Half a request head, then nothing: the answer, and how long it took."""
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(b"GET /api/slow HTTP/1.1\r\nHost: a\r\n")
        started = time.monotonic()
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    return data, time.monotonic() - started


def request_id_of(answer: bytes) -> str:
    for line in answer.split(b"\r\n\r\n", 1)[0].split(b"\r\n"):
        name, _, value = line.partition(b":")
        if name.lower() == b"x-request-id":
            return value.strip().decode()
    raise AssertionError(f"no X-Request-ID in {answer[:200]!r}")


def access_line(lb: LoadBalancer, request_id: str) -> str:
    def find() -> str | None:
        lines = [x for x in lb.output if "service.access" in x and request_id in x]
        return lines[0] if len(lines) == 1 else None

    return wait_for(find).value


def test_the_front_doors_own_answers_are_logged(lb: LoadBalancer) -> None:
    answers = {}
    for reason, (status, head) in MALFORMED.items():
        got, headers, _ = raw_request(lb.port, head)
        assert got == status, reason
        answers[reason] = (status, headers["x-request-id"])
    data, took = slow_head(lb.port)
    assert data.startswith(b"HTTP/1.1 408 ") and took < 3
    answers[SLOW] = (408, request_id_of(data))

    for reason, (status, request_id) in answers.items():
        line = access_line(lb, request_id)
        if lb.log_format == "json":  # type: ignore[attr-defined]
            entry = json.loads(line)
            assert entry["status"] == status and entry["reason"] == reason
            assert entry["client"] == "127.0.0.1" and entry["route"] == ""
            assert entry["target"] == "" and entry["logger"] == "service.access"
        else:
            assert f" status={status} " in line and line.rstrip().endswith(f'reason="{reason}"')
            assert "client=127.0.0.1 " in line and " route=- target=- " in line


def test_a_dropped_header_is_counted_in_either_format(lb: LoadBalancer) -> None:
    head = (
        b"GET /api/counted HTTP/1.1\r\nHost: a\r\nX_Real_IP: 6.6.6.6\r\n"
        b"X-Request-ID: counted-" + lb.log_format.encode() + b"\r\nConnection: close\r\n\r\n"  # type: ignore[attr-defined]
    )
    assert raw_request(lb.port, head)[0] == 200
    line = access_line(lb, f"counted-{lb.log_format}")  # type: ignore[attr-defined]
    if lb.log_format == "json":  # type: ignore[attr-defined]
        entry = json.loads(line)
        assert entry["dropped_headers"] == 1 and "reason" not in entry
        assert entry["route"] == "api-gateway" and entry["status"] == 200
    else:
        # the count follows the request id; a proxied request's trace comes last
        assert " dropped_headers=1 trace_id=" in line and "reason=" not in line


def test_nothing_is_logged_with_the_access_log_off(upstreams: dict[str, UpstreamServer]) -> None:
    balancer = LoadBalancer(env_for(upstreams, LB_ACCESS_LOG="false", LB_HEADER_TIMEOUT="1"))
    try:
        for status, head in MALFORMED.values():
            assert raw_request(balancer.port, head)[0] == status
        assert slow_head(balancer.port)[0].startswith(b"HTTP/1.1 408 ")
        time.sleep(0.6)  # two flush intervals: a line, had one been written, would be out
        assert not [line for line in balancer.output if "service.access" in line]
    finally:
        balancer.stop()
