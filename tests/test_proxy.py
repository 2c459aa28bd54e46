"""Proxying through a real load-balancer process: what arrives upstream and what comes back.

The upstream echoes what it received (method, path, query, headers, body size and sha256),
so each test compares what the client sent with what the upstream saw.
"""

from __future__ import annotations

import gzip
import hashlib
import json
from collections.abc import Iterator

import httpx
import pytest

from tests.support import LoadBalancer, UpstreamServer, env_for, raw_request


def seen_headers(echo: dict) -> list[tuple[str, str]]:
    return [(k.lower(), v) for k, v in echo["headers"]]


def header_values(echo: dict, name: str) -> list[str]:
    return [v for k, v in seen_headers(echo) if k == name.lower()]


def raw_echo(lb: LoadBalancer, head: bytes) -> dict:
    """What the upstream saw of ``head``, sent as raw bytes (the answer must be a 200)."""
    status, _, body = raw_request(lb.port, head)
    assert status == 200
    return json.loads(body)


# ------------------------------------------------------------------ methods / bodies


@pytest.mark.parametrize(
    ("method", "body"),
    [
        ("GET", b""),
        ("POST", bytes(range(256)) * 4000 + b"tail"),
        ("PUT", b'{"k": "v"}'),
        ("PATCH", b"\x00\x01\xff" * 1000),
        ("DELETE", b"delete-body"),
        ("OPTIONS", b"options-body"),
        ("POST", b""),
    ],
)
def test_method_path_query_body_unchanged(lb: LoadBalancer, method: str, body: bytes) -> None:
    target = "/api/items/42;v=1/x.json?b=2&a=1&a=%20x&empty="
    response = lb.client.request(
        method,
        target,
        content=body if method != "GET" else None,
        headers={"X-Custom": "kept", "Content-Type": "application/x-test"},
    )
    assert response.status_code == 200
    echo = response.json()
    assert echo["upstream"] == "api-gateway"
    assert echo["method"] == method
    assert echo["raw_path"] == target
    assert echo["query"] == "b=2&a=1&a=%20x&empty="
    assert echo["body_size"] == len(body)
    assert echo["body_sha256"] == hashlib.sha256(body).hexdigest()
    assert header_values(echo, "x-custom") == ["kept"]
    assert header_values(echo, "content-type") == ["application/x-test"]


def test_chunked_request_body(lb: LoadBalancer) -> None:
    parts = [b"a" * 1000, b"", b"b" * 70000, b"c"]

    def gen() -> Iterator[bytes]:
        yield from parts

    echo = lb.client.put("/blog/upload", content=gen()).json()
    whole = b"".join(parts)
    assert echo["upstream"] == "blog-service"
    assert (echo["body_size"], echo["body_sha256"]) == (
        len(whole),
        hashlib.sha256(whole).hexdigest(),
    )


def test_head(lb: LoadBalancer, upstreams: dict[str, UpstreamServer]) -> None:
    server = upstreams["dashboard-ui"]
    before = server.hits["/page"]
    head = lb.client.head("/page?via=head")
    assert head.status_code == 200
    assert head.content == b""
    # The upstream answered HEAD itself (its echo says so) and its Content-Length came back.
    assert json.loads(server.sent["/page?via=head"])["method"] == "HEAD"
    assert head.headers["content-length"] == str(len(server.sent["/page?via=head"]))
    assert head.headers["content-type"] == "application/json"
    # The connection is still usable afterwards: no stray body bytes were sent.
    assert lb.client.get("/page").json()["method"] == "GET"
    assert server.hits["/page"] == before + 2


def test_end_to_end_headers_pass_unchanged(lb: LoadBalancer) -> None:
    """Repeated headers, odd values, and nothing the client did not send (no auto headers)."""
    head = (
        b"GET /api/h HTTP/1.1\r\nHost: lb.test\r\nX-Multi: one\r\nX-Multi: two\r\n"
        b"Authorization: Bearer abc\r\nCookie: a=1; b=2\r\nX-Spaces: a  b\r\n"
        b"Connection: close\r\n\r\n"
    )
    echo = raw_echo(lb, head)
    assert header_values(echo, "x-multi") == ["one", "two"]
    assert header_values(echo, "authorization") == ["Bearer abc"]
    assert header_values(echo, "cookie") == ["a=1; b=2"]
    assert header_values(echo, "x-spaces") == ["a  b"]
    names = {k for k, _ in seen_headers(echo)}
    assert not names & {"user-agent", "accept", "accept-encoding", "content-type"}


# ------------------------------------------------------------------------- status


@pytest.mark.parametrize("status", [201, 404, 500, 503])
def test_status_and_body_pass_through(
    lb: LoadBalancer, upstreams: dict[str, UpstreamServer], status: int
) -> None:
    target = f"/api/missing?status={status}"
    response = lb.client.get(target)
    assert response.status_code == status
    assert response.content == upstreams["api-gateway"].sent[target]  # the upstream's body
    assert response.json()["upstream"] == "api-gateway"
    assert response.headers["server"].startswith("BaseHTTP")  # the upstream's headers too


def test_no_content_status(lb: LoadBalancer) -> None:
    response = lb.client.delete("/api/thing?status=204")
    assert response.status_code == 204
    assert response.content == b""


# ------------------------------------------------------------------ hop-by-hop


def test_hop_by_hop_request_headers_stripped(lb: LoadBalancer) -> None:
    head = (
        b"GET /api/hop HTTP/1.1\r\nHost: lb.test\r\n"
        b"Connection: close, X-Secret\r\nX-Secret: 1\r\nKeep-Alive: timeout=5\r\n"
        b"TE: trailers\r\nProxy-Authorization: Basic c2VjcmV0\r\nProxy-Connection: keep-alive\r\n"
        b"Trailer: X-T\r\nX-Visible: yes\r\n\r\n"
    )
    echo = raw_echo(lb, head)
    names = {k for k, _ in seen_headers(echo)}
    assert "x-visible" in names
    leaked = names & {
        "x-secret",
        "keep-alive",
        "te",
        "proxy-authorization",
        "proxy-connection",
        "trailer",
    }
    assert not leaked
    # What the proxy says about its own connection to the upstream is its own business, but
    # nothing the client put in Connection may reach the upstream.
    assert all("x-secret" not in v.lower() for v in header_values(echo, "connection"))


def test_hop_by_hop_response_headers_stripped(lb: LoadBalancer) -> None:
    response = lb.client.get("/api/x?hop=1")
    assert response.status_code == 200
    assert response.headers["x-end-to-end"] == "kept"
    for name in ("x-secret", "keep-alive", "proxy-authenticate", "upgrade"):
        assert name not in response.headers, name
    assert "x-secret" not in response.headers.get("connection", "").lower()
    assert response.json()["upstream"] == "api-gateway"


# ---------------------------------------------------------------- X-Forwarded-*


def test_forwarded_headers(lb: LoadBalancer) -> None:
    """From a peer that is not a trusted proxy (this module's balancer trusts none), the
    client's forwarding headers are replaced by the load balancer's own (issue 22, 8)."""
    head = (
        b"GET /api/fwd HTTP/1.1\r\nHost: shop.example:8443\r\n"
        b"X-Forwarded-For: 203.0.113.9\r\nX-Forwarded-For: 198.51.100.1\r\n"
        b"X-Forwarded-Proto: https\r\nX-Forwarded-Host: spoofed.example\r\n"
        b"Connection: close\r\n\r\n"
    )
    echo = raw_echo(lb, head)
    assert header_values(echo, "x-forwarded-for") == ["127.0.0.1"]
    assert header_values(echo, "x-real-ip") == ["127.0.0.1"]
    assert header_values(echo, "x-forwarded-proto") == ["http"]
    assert header_values(echo, "x-forwarded-host") == ["shop.example:8443"]
    assert header_values(echo, "host") == ["shop.example:8443"]  # kept by default


def test_forwarded_for_set_when_absent(lb: LoadBalancer) -> None:
    echo = lb.client.get("/other", headers={"Host": "front.example"}).json()
    assert header_values(echo, "x-forwarded-for") == ["127.0.0.1"]
    assert header_values(echo, "host") == ["front.example"]
    assert header_values(echo, "x-forwarded-host") == ["front.example"]


def test_forwarded_proto_is_http_for_an_upgrade_request(lb: LoadBalancer) -> None:
    """Sanic calls such a request's scheme "ws"; X-Forwarded-Proto only knows http/https.

    The upgrade is passed on (WebSocket pass-through); an upstream that does not upgrade
    answers as usual, and that answer reaches the client whole.
    """
    head = (
        b"GET /api/up HTTP/1.1\r\nHost: lb.test\r\nConnection: Upgrade\r\n"
        b"Upgrade: websocket\r\nSec-WebSocket-Version: 13\r\n"
        b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n"
    )
    echo = raw_echo(lb, head)
    assert header_values(echo, "x-forwarded-proto") == ["http"]
    assert header_values(echo, "upgrade") == ["websocket"]


def test_keep_host_false_sends_upstream_host(upstreams: dict[str, UpstreamServer]) -> None:
    balancer = LoadBalancer(env_for(upstreams, LB_KEEP_HOST="false"))
    try:
        echo = balancer.client.get("/api/h", headers={"Host": "front.example"}).json()
        upstream = upstreams["api-gateway"]
        assert header_values(echo, "host") == [f"127.0.0.1:{upstream.port}"]
        assert header_values(echo, "x-forwarded-host") == ["front.example"]
    finally:
        balancer.stop()


# ------------------------------------------------------------------------ cookies


def test_no_cookie_crosses_clients(lb: LoadBalancer) -> None:
    with httpx.Client(base_url=lb.url, trust_env=False) as alice:
        response = alice.get("/api/login?set_cookie=secret")
        assert response.headers["set-cookie"] == "session=secret; Path=/"
        # Alice's own client replays it, as a browser would.
        assert "session=secret" in header_values(alice.get("/api/me").json(), "cookie")
    for path in ("/api/me", "/api/login", "/", "/blog/x"):
        with httpx.Client(base_url=lb.url, trust_env=False) as bob:
            echo = bob.get(path).json()
        assert header_values(echo, "cookie") == [], path
        assert "secret" not in json.dumps(echo["headers"])


def test_repeated_response_headers_all_reach_the_client(lb: LoadBalancer) -> None:
    response = lb.client.get("/api/login?set_cookie=a&set_cookie=b")
    assert response.headers.get_list("set-cookie") == ["session=a; Path=/", "session=b; Path=/"]


# ---------------------------------------------------------------------- encodings


def test_gzip_body_byte_exact(lb: LoadBalancer, upstreams: dict[str, UpstreamServer]) -> None:
    target = "/api/zipped?gzip=1&tag=proxy-test"
    with lb.client.stream("GET", target, headers={"Accept-Encoding": "gzip"}) as response:
        raw = b"".join(response.iter_raw())
        assert response.status_code == 200
        assert response.headers["content-encoding"] == "gzip"
        assert int(response.headers["content-length"]) == len(raw)
    sent = upstreams["api-gateway"].sent[target]
    assert raw == sent
    echo = json.loads(gzip.decompress(raw))
    assert header_values(echo, "accept-encoding") == ["gzip"]


def test_gzip_not_decoded_for_a_client_that_did_not_ask(
    lb: LoadBalancer, upstreams: dict[str, UpstreamServer]
) -> None:
    """The proxy never decompresses, whatever the client accepts; raw bytes over a socket."""
    target = "/blog/zipped?gzip=1&tag=raw"
    status, headers, body = raw_request(
        lb.port, f"GET {target} HTTP/1.1\r\nHost: lb.test\r\nConnection: close\r\n\r\n".encode()
    )
    assert status == 200
    assert headers["content-encoding"] == "gzip"
    assert body == upstreams["blog-service"].sent[target]
