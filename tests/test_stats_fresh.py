"""``/stats`` tells the truth on the next call: an upstream that went down or came back shows
so at once (no answer reused by default), with two real workers; ``status`` keeps its
meaning and the operator's glance keys (``draining``, ``pools_without_live_target``) say
the rest. A DNS failure is named as such."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest
from sanic import Sanic
from sanic_testing.testing import SanicTestClient

from service.errors import UpstreamRefused, classify
from service.factory import create_app
from service.settings import load_settings
from tests.support import Knob, LoadBalancer, UpstreamServer, env_for


def fresh_call(balancer: LoadBalancer) -> dict:
    """One ``/stats`` on a new connection, so that calls spread over the workers."""
    response = httpx.get(balancer.url + "/stats", timeout=10, trust_env=False)
    assert response.status_code == 200
    return response.json()


@pytest.fixture
def auth_and_lb(upstreams: dict[str, UpstreamServer]) -> Iterator[tuple[Knob, LoadBalancer]]:
    auth = Knob("auth").start()
    # No LB_STATS_CACHE_TTL: the default is what is under test.
    balancer = LoadBalancer(env_for(upstreams, AUTH_SERVICE_URL=auth.url), workers=2)
    yield auth, balancer
    balancer.stop()
    auth.stop()


def test_offline_and_online_on_the_very_next_call_with_two_workers(
    auth_and_lb: tuple[Knob, LoadBalancer],
) -> None:
    auth, balancer = auth_and_lb
    port = auth.port
    for _ in range(6):  # both workers have asked auth, and may hold a pooled connection
        document = fresh_call(balancer)
        assert document["auth"]["service_status"] == "online"
        assert document["load-balancer"]["pools_without_live_target"] == 0
    for _cycle in range(2):
        auth.stop()  # like a kill: the port closes and pooled connections die
        for call in range(4):
            document = fresh_call(balancer)
            assert document["auth"]["service_status"] == "offline", (call, document["auth"])
            lb = document["load-balancer"]
            assert lb["status"] == "healthy"  # the process serves: the key keeps its meaning
            assert lb["pools_without_live_target"] == 1
            (target,) = lb["upstreams"]["auth-service"]["targets"]
            assert target["reachable"] is False
        auth = Knob("auth").start(port)
        for call in range(4):
            document = fresh_call(balancer)
            assert document["auth"]["service_status"] == "online", (call, document["auth"])
            assert document["load-balancer"]["pools_without_live_target"] == 0
    auth.stop()


def test_reuse_is_an_option(upstreams: dict[str, UpstreamServer]) -> None:
    """With LB_STATS_CACHE_TTL set, one worker answers from its last fan-out."""
    auth = Knob("auth").start()
    balancer = LoadBalancer(env_for(upstreams, AUTH_SERVICE_URL=auth.url, LB_STATS_CACHE_TTL="60"))
    try:
        assert balancer.client.get("/stats").json()["auth"]["service_status"] == "online"
        auth.stop()
        assert balancer.client.get("/stats").json()["auth"]["service_status"] == "online"
    finally:
        balancer.stop()
        auth.stop()


def _app_with(upstreams: dict[str, UpstreamServer], name: str) -> Sanic:
    env = {
        "API_GATEWAY_URL": upstreams["api-gateway"].url,
        "BLOG_SERVICE_URL": upstreams["blog-service"].url,
        "DASHBOARD_UI_URL": upstreams["dashboard-ui"].url,
        "AUTH_SERVICE_URL": upstreams["auth-service"].url,
        "USER_SERVICE_URL": upstreams["user-service"].url,
    }
    return create_app(load_settings(env=env), name=name)


def test_draining_shows_in_stats_while_status_stays_healthy(
    upstreams: dict[str, UpstreamServer],
) -> None:
    app = _app_with(upstreams, "draining-test")

    @app.before_server_start
    async def start_draining(app: Sanic) -> None:
        app.ctx.lb.draining = True  # what issue 9's graceful shutdown sets

    _, response = SanicTestClient(app, port=None).get("/stats")
    entry = response.json["load-balancer"]
    assert entry["draining"] is True
    assert entry["status"] == "healthy"


def test_not_draining_by_default(upstreams: dict[str, UpstreamServer]) -> None:
    _, response = SanicTestClient(_app_with(upstreams, "serving-test"), port=None).get("/stats")
    assert response.json["load-balancer"]["draining"] is False


def test_an_unresolvable_upstream_is_a_dns_failure(upstreams: dict[str, UpstreamServer]) -> None:
    balancer = LoadBalancer(env_for(upstreams, AUTH_SERVICE_URL="http://no-such-host.invalid:8002"))
    try:
        entry = balancer.client.get("/stats").json()["auth"]
        assert entry["service_status"] == "offline"
        assert entry["error"].startswith("dns: "), entry
    finally:
        balancer.stop()


def test_classify_names_dns_and_keeps_refused() -> None:
    import socket

    dns = httpx.ConnectError("[Errno -2] Name or service not known")
    dns.__cause__ = socket.gaierror(-2, "Name or service not known")
    assert isinstance(classify("auth", dns), UpstreamRefused)
    assert classify("auth", dns).reason.startswith("dns: ")
    assert classify("auth", socket.gaierror(-2, "x"), connected=False).reason.startswith("dns: ")
    refused = httpx.ConnectError("[Errno 111] Connection refused")
    refused.__cause__ = ConnectionRefusedError(111, "Connection refused")
    assert classify("auth", refused).reason.startswith("refused: ")
