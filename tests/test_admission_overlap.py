"""Admission control where several limits meet, through real load balancers (one process
each): a request under two limits at once (which one answers, what the RateLimit fields
say), a header-keyed limit for a request without the header, and
``LB_RATE_LIMIT_HEADERS=false``.

Clients bind distinct loopback source addresses, so each is a distinct client; the rates are
slow (one a second, one a minute) so that nothing refills while a test runs.
"""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest

from tests.support import REPO, LoadBalancer, UpstreamServer, env_for
from tests.support.flood import client_from

LIMITS = """
[[limits]]
name = "per-client"
rate = "1/s"
burst = 5
routes = ["api-gateway"]

[[limits]]
name = "writes"
rate = "1/min"
burst = 2
routes = ["api-gateway"]
methods = ["POST"]

[[limits]]
name = "per-key"
rate = "1/min"
burst = 3
per = "header:X-Api-Key"
routes = ["blog-service"]
"""


@pytest.fixture(scope="module")
def lb(upstreams: dict[str, UpstreamServer], tmp_path_factory) -> Iterator[LoadBalancer]:
    config = tmp_path_factory.mktemp("overlap") / "lb.toml"
    config.write_text((REPO / "config" / "defaults.toml").read_text() + LIMITS)
    balancer = LoadBalancer(env_for(upstreams, LB_CONFIG=str(config), LB_ACCESS_LOG="false"))
    yield balancer
    balancer.stop()


def fields(response: httpx.Response) -> tuple[str | None, str | None]:
    return response.headers.get("ratelimit-policy"), response.headers.get("ratelimit")


def test_a_request_under_two_limits_is_counted_by_both_and_refused_by_the_first_that_says_no(
    lb: LoadBalancer,
) -> None:
    with client_from(lb.url, "127.0.0.21") as client:
        posts = [client.post("/api/x", content=b"{}") for _ in range(3)]
        after = client.get("/api/x")
    # both limits in both fields, in the order they are configured
    assert [p.status_code for p in posts] == [200, 200, 429]
    assert fields(posts[0]) == (
        '"per-client";q=5;w=5, "writes";q=2;w=120',
        '"per-client";r=4;t=1, "writes";r=1;t=60',
    )
    assert fields(posts[1])[1] == '"per-client";r=3;t=1, "writes";r=0;t=60'
    # the third: "writes" says no, and only it is named
    refused = posts[2]
    assert refused.json()["limit"] == "writes"
    assert fields(refused) == ('"writes";q=2;w=120', '"writes";r=0;t=60')
    assert refused.headers["retry-after"] == "60"
    # a refused request consumes nothing, of either limit: "per-client" took two of five
    assert after.status_code == 200
    assert fields(after) == ('"per-client";q=5;w=5', '"per-client";r=2;t=1')

    # both would refuse: the first configured answers
    with client_from(lb.url, "127.0.0.22") as client:
        assert [client.post("/api/y").status_code for _ in range(2)] == [200, 200]
        assert [client.get("/api/y").status_code for _ in range(3)] == [200, 200, 200]
        both = client.post("/api/y")
    assert both.status_code == 429 and both.json()["limit"] == "per-client"
    assert fields(both)[1] == '"per-client";r=0;t=1'


def test_a_header_limit_without_the_header_counts_the_client(lb: LoadBalancer) -> None:
    def statuses(source: str, count: int, key: str | None = None) -> list[int]:
        headers = {"X-Api-Key": key} if key else {}
        with client_from(lb.url, source) as client:
            return [client.get("/blog/x", headers=headers).status_code for _ in range(count)]

    # without the header: each client its own budget of three, not one shared ""
    assert statuses("127.0.0.31", 4) == [200, 200, 200, 429]
    assert statuses("127.0.0.32", 4) == [200, 200, 200, 429]
    # and leaving it out is no way round: that client's key budget is a separate one
    assert statuses("127.0.0.31", 3, key="k-31") == [200, 200, 200]
    # with it: the key's budget, whichever client sends it
    assert statuses("127.0.0.33", 2, key="k-shared") == [200, 200]
    assert statuses("127.0.0.34", 2, key="k-shared") == [200, 429]
    with client_from(lb.url, "127.0.0.1") as client:
        listed = client.get("/stats").json()["load-balancer"]["limits"]["rate"]["per-key"]
    keys = {entry["key"] for entry in listed["limited_keys"]}
    assert {"client 127.0.0.31", "client 127.0.0.32", "k-shared"} <= keys, keys


def test_rate_limit_headers_false_sends_no_ratelimit_fields(
    upstreams: dict[str, UpstreamServer],
) -> None:
    balancer = LoadBalancer(
        env_for(upstreams, LB_RATE_LIMIT="1/min burst=2", LB_RATE_LIMIT_HEADERS="false")
    )
    try:
        with client_from(balancer.url, "127.0.0.41") as client:
            answers = [client.get("/api/x") for _ in range(3)]
        with client_from(balancer.url, "127.0.0.1") as client:
            limits = client.get("/stats").json()["load-balancer"]["limits"]
    finally:
        balancer.stop()
    assert [a.status_code for a in answers] == [200, 200, 429]
    for answer in answers:
        assert fields(answer) == (None, None), answer.headers
    assert answers[2].headers["retry-after"] == "60"  # still said, as every 429 does
    assert answers[2].json()["limit"] == "default"
    assert limits["headers"] is False
