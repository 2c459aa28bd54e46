"""Routing: segment-aware prefixes, the /blog redirect, and no path trick reaching elsewhere.

Unit tests of ``canonical_path``/``Router`` on the real routing table, then the same table
through a real load-balancer process in front of real upstreams. Requests whose spelling
matters (dot segments, encoded dots, double slashes, absolute-form request lines) go over a
raw socket, because httpx would normalise them before sending.
"""

from __future__ import annotations

import json

import pytest
from sanic_testing.testing import SanicTestClient

from service.factory import create_app
from service.errors import BadPath
from service.proxying.routing import Forward, Redirect, Router, canonical_path
from service.settings import Route, load_settings
from tests.support import LoadBalancer, UpstreamServer, raw_request

# --------------------------------------------------------------------------- unit


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("/", "/"),
        ("/api", "/api"),
        ("/api/", "/api/"),
        ("/api/x", "/api/x"),
        ("/api/../stats", "/stats"),
        ("/api/%2e%2e/lb-health", "/lb-health"),
        ("/api/%2E%2E/lb-health", "/lb-health"),
        ("//api/x", "/api/x"),
        ("/api//x", "/api/x"),
        ("/a/./b", "/a/b"),
        ("/a/b/.", "/a/b/"),
        ("/a/b/..", "/a/"),
        ("/..", "/"),
        ("/../../etc/passwd", "/etc/passwd"),
        ("/%61pi/x", "/api/x"),
        ("/a%20b", "/a b"),
    ],
)
def test_canonical_path(raw: str, expected: str) -> None:
    assert canonical_path(raw) == expected


@pytest.mark.parametrize(
    "raw",
    ["/blog/..%2fapi", "/blog/..%2Fapi", "/a%5cb", "/a\\b", "api/x", "/a%00b", ""],
)
def test_canonical_path_refuses(raw: str) -> None:
    with pytest.raises(BadPath):
        canonical_path(raw)


@pytest.fixture(scope="module")
def router() -> Router:
    return Router(load_settings(env={}).routes)


@pytest.mark.parametrize(
    ("path", "upstream"),
    [
        ("/", "dashboard-ui"),
        ("/other", "dashboard-ui"),
        ("/apix", "dashboard-ui"),
        ("/apix/y", "dashboard-ui"),
        ("/ap", "dashboard-ui"),
        ("/api", "api-gateway"),
        ("/api/", "api-gateway"),
        ("/api/x", "api-gateway"),
        ("/api/x/y/z", "api-gateway"),
        ("/blog/", "blog-service"),
        ("/blog/x", "blog-service"),
        ("/blogx", "dashboard-ui"),
        ("/x/api", "dashboard-ui"),
        ("/api/a%2Bb", "api-gateway"),  # escapes of reserved characters are kept
        ("/api/a%20b", "api-gateway"),
        ("/api/%C3%A9", "api-gateway"),
        ("/api/%zz", "api-gateway"),
    ],
)
def test_router_forward(router: Router, path: str, upstream: str) -> None:
    decision = router.resolve(path)
    assert isinstance(decision, Forward)
    assert decision.route.upstream == upstream


@pytest.mark.parametrize(
    ("path", "query", "location"),
    [
        ("/blog", "", "/blog/"),
        ("/blog", "x=1", "/blog/?x=1"),
        ("/api/../stats", "", "/stats"),
        ("/api/%2e%2e/lb-health", "", "/lb-health"),
        ("//api/x", "q=1", "/api/x?q=1"),
        ("/a/./b", "", "/a/b"),
        ("/api/../a%3Fb", "", "/a%3Fb"),  # still encoded, so the '?' stays in the path
        ("/x/..//evil.example/", "", "/evil.example/"),  # never a scheme-relative Location
        # Escaped unreserved characters are another spelling of the same path (RFC 3986
        # 6.2.2.2): decoded, so a local endpoint is answered locally and prefixes match.
        ("/%6cb-health", "", "/lb-health"),
        ("/%61pi/x", "a=%61", "/api/x?a=%61"),
        ("/api/%7Euser", "", "/api/~user"),
        # ...while escapes of reserved and non-ASCII characters are the client's to keep.
        ("/x/../a%2Bb", "", "/a%2Bb"),
        ("/api/../%c3%a9/%3F", "", "/%c3%a9/%3F"),
    ],
)
def test_router_redirect(router: Router, path: str, query: str, location: str) -> None:
    decision = router.resolve(path, query)
    assert decision == Redirect(location)


def test_router_longest_prefix_wins_whatever_the_order() -> None:
    routes = (
        Route(prefix="/", upstream="root"),
        Route(prefix="/a", upstream="a"),
        Route(prefix="/a/b", upstream="ab"),
    )
    router = Router(routes)
    assert router.match("/a/b/c").upstream == "ab"
    assert router.match("/a/bc").upstream == "a"
    assert router.match("/ab").upstream == "root"


def test_router_bad_utf8_is_bad_path(router: Router) -> None:
    with pytest.raises(BadPath):
        router.resolve("/api/%ff")


# ----------------------------------------------------------------- sanic-testing


def test_sanic_testing_health_and_blog_redirect(upstreams: dict[str, UpstreamServer]) -> None:
    """The app built by ``create_app`` from explicit settings, driven by sanic-testing."""
    env = {
        "API_GATEWAY_URL": upstreams["api-gateway"].url,
        "BLOG_SERVICE_URL": upstreams["blog-service"].url,
        "DASHBOARD_UI_URL": upstreams["dashboard-ui"].url,
    }
    app = create_app(load_settings(env=env), name="routing-test")
    client = SanicTestClient(app, port=None)
    _, health = client.get("/lb-health")
    assert health.status == 200
    assert health.json == {"status": "healthy"}
    before = sum(upstreams["blog-service"].hits.values())
    _, blog = client.get("/blog?x=1", allow_redirects=False)
    assert blog.status == 308
    assert blog.headers["location"] == "/blog/?x=1"
    assert sum(upstreams["blog-service"].hits.values()) == before  # answered locally
    _, proxied = client.get("/blog/post?id=7")
    assert proxied.status == 200
    assert proxied.json["upstream"] == "blog-service"
    assert proxied.json["raw_path"] == "/blog/post?id=7"


# ------------------------------------------------------------- real process


def get(lb: LoadBalancer, target: str, host: str = "lb.test") -> tuple[int, dict[str, str], bytes]:
    return raw_request(
        lb.port, f"GET {target} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n".encode()
    )


def total_hits(upstreams: dict[str, UpstreamServer]) -> dict[str, int]:
    return {name: sum(server.hits.values()) for name, server in upstreams.items()}


@pytest.mark.parametrize(
    ("target", "upstream"),
    [
        ("/apix", "dashboard-ui"),
        ("/api", "api-gateway"),
        ("/api/x?a=1&b=%20c&a=2", "api-gateway"),
        ("/api/x/y.json", "api-gateway"),
        ("/blog/x?p=q", "blog-service"),
        ("/", "dashboard-ui"),
        ("/other", "dashboard-ui"),
        ("/other/deep/path?z", "dashboard-ui"),
    ],
)
def test_routing_table_through_the_process(
    lb: LoadBalancer, upstreams: dict[str, UpstreamServer], target: str, upstream: str
) -> None:
    before = total_hits(upstreams)
    response = lb.client.get(target)
    assert response.status_code == 200
    echo = response.json()
    assert echo["upstream"] == upstream
    assert echo["raw_path"] == target  # path and query unchanged, byte for byte
    after = total_hits(upstreams)
    assert {n: after[n] - before[n] for n in after} == {n: int(n == upstream) for n in after}


@pytest.mark.parametrize(("target", "location"), [("/blog", "/blog/"), ("/blog?x=1", "/blog/?x=1")])
def test_blog_redirect(
    lb: LoadBalancer, upstreams: dict[str, UpstreamServer], target: str, location: str
) -> None:
    before = total_hits(upstreams)
    for method in ("GET", "POST"):
        response = lb.client.request(method, target, content=b"body" if method == "POST" else None)
        assert response.status_code == 308
        assert response.headers["location"] == location
    assert total_hits(upstreams) == before


@pytest.mark.parametrize(
    ("target", "status", "location"),
    [
        ("/api/../stats", 308, "/stats"),
        ("/api/%2e%2e/lb-health", 308, "/lb-health"),
        ("/api/%2E%2E/%2E%2E/lb-health", 308, "/lb-health"),
        ("//api/x", 308, "/api/x"),
        ("/blog/../api/x?q=1", 308, "/api/x?q=1"),
        ("/api/.%2e/stats", 308, "/stats"),
        ("/blog/%2e%2e/api/x", 308, "/api/x"),
        ("/blog/./../lb-health?x=1", 308, "/lb-health?x=1"),
        ("/blog/..%2fapi", 400, None),
        ("/api/%2e%2e%2fstats", 400, None),
        ("/%6cb-health", 308, "/lb-health"),
        ("/%73tats", 308, "/stats"),
        ("/%61pi/x", 308, "/api/x"),
        ("/blog/..%2Fapi/x", 400, None),
        ("/api/..%5cstats", 400, None),
    ],
)
def test_dotted_and_encoded_paths_never_reach_elsewhere(
    lb: LoadBalancer,
    upstreams: dict[str, UpstreamServer],
    target: str,
    status: int,
    location: str | None,
) -> None:
    before = total_hits(upstreams)
    got, headers, body = get(lb, target)
    assert got == status
    if location is None:
        assert json.loads(body)["error"] == "bad request"
        assert "location" not in headers
    else:
        assert headers["location"] == location
    # Nothing was proxied anywhere: the canonical spelling must be asked for explicitly.
    assert total_hits(upstreams) == before


@pytest.mark.parametrize(
    ("target", "upstream", "path"),
    [
        ("http://evil.example/", "dashboard-ui", "/"),
        ("http://evil.example/api/q?z=1", "api-gateway", "/api/q"),
        ("http://127.0.0.1:1/blog/x", "blog-service", "/blog/x"),
    ],
)
def test_absolute_form_is_routed_by_path(
    lb: LoadBalancer,
    upstreams: dict[str, UpstreamServer],
    target: str,
    upstream: str,
    path: str,
) -> None:
    before = total_hits(upstreams)
    status, _, body = get(lb, target, host="evil.example")
    assert status == 200
    echo = json.loads(body)
    assert echo["upstream"] == upstream
    assert echo["path"] == path
    after = total_hits(upstreams)
    assert {n: after[n] - before[n] for n in after} == {n: int(n == upstream) for n in after}
    assert upstreams[upstream].hits[path] >= 1


def test_absolute_form_cannot_reach_local_endpoints_by_authority(
    lb: LoadBalancer, upstreams: dict[str, UpstreamServer]
) -> None:
    """The authority of an absolute-form target is never a destination; only the path counts."""
    other = UpstreamServer("bystander").start()
    try:
        status, _, body = get(lb, f"{other.url}/api/x")
        assert status == 200
        assert json.loads(body)["upstream"] == "api-gateway"
        assert sum(other.hits.values()) == 0
    finally:
        other.stop()
