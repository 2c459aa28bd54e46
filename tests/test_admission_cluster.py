"""Rate limits for the whole cluster: two real load balancers (``--workers 2`` each) share
one limit through one real Redis; traffic split 50/50 and 90/10 is admitted at the limit's
rate; Redis killed, each replica falls back to its share and says so in ``/stats``.

Each phase floods from its own client address, so no phase sees another's budget. The tests
share one pair of replicas and run in file order (the last one kills Redis).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from tests.support import LoadBalancer, UpstreamServer, env_for, two_replicas, wait_for
from tests.support.flood import Flood, client_from, flood, in_parallel
from tests.support.redis import RedisServer

RATE, BURST = 20.0, 5
SECONDS = 4.0


@pytest.fixture(scope="module")
def pair(
    upstreams: dict[str, UpstreamServer], redis: RedisServer
) -> Iterator[tuple[LoadBalancer, LoadBalancer]]:
    env = env_for(
        upstreams,
        LB_CLUSTER_REDIS_URL=redis.url,
        LB_CLUSTER_NAME="limits-test",
        LB_RATE_LIMIT=f"{RATE:g}/s burst={BURST}",
        LB_ACCESS_LOG="false",
    )
    with two_replicas(env) as replicas:
        yield replicas


def limits_of(balancer: LoadBalancer) -> dict[str, Any]:
    # from an address of its own: /stats is under LB_RATE_LIMIT too
    with client_from(balancer.url, "127.0.0.1") as client:
        return client.get("/stats").json()["load-balancer"]["limits"]


def split_flood(
    pair: tuple[LoadBalancer, LoadBalancer], source: str, share_a: float
) -> tuple[Flood, Flood]:
    """One client at twice the rate, ``share_a`` of it to replica a, the rest to b."""
    a, b = pair
    total = 2 * RATE

    def to(balancer: LoadBalancer, share: float) -> Any:
        return lambda: flood(
            balancer.url, source, "/api/shared", rate=total * share, seconds=SECONDS,
            connections=2,
        )  # fmt: skip

    on_a, on_b = in_parallel(to(a, share_a), to(b, 1 - share_a))
    return on_a, on_b


def cluster_admitted_at_the_rate(on_a: Flood, on_b: Flood) -> None:
    """Within 10 % of the limit over the flood, whichever replica admitted them."""
    admitted = on_a.count(200) + on_b.count(200)
    span = max(on_a.span_s, on_b.span_s)
    expected = BURST + RATE * span
    print(
        f"cluster: admitted {admitted} of {len(on_a.answers) + len(on_b.answers)} in {span:.2f} s, "
        f"expected {expected:.1f} ({admitted / expected - 1:+.1%})"
    )
    assert abs(admitted - expected) <= 0.10 * RATE * span, (admitted, expected)
    assert on_a.errors == on_b.errors == 0


def test_both_replicas_share_limits(pair: tuple[LoadBalancer, LoadBalancer]) -> None:
    for balancer in pair:
        wait_for(lambda b=balancer: limits_of(b)["cluster"]["replicas"] == 2, timeout=10)
        cluster = limits_of(balancer)["cluster"]
        assert cluster["status"] == "ok" and cluster["mode"] == "shared" and cluster["share"] == 1


def test_traffic_split_50_50_is_admitted_at_the_cluster_limit(
    pair: tuple[LoadBalancer, LoadBalancer],
) -> None:
    on_a, on_b = split_flood(pair, "127.0.0.2", 0.5)
    assert on_a.count(200) > 0 and on_b.count(200) > 0
    cluster_admitted_at_the_rate(on_a, on_b)


def test_traffic_split_90_10_is_admitted_at_the_cluster_limit(
    pair: tuple[LoadBalancer, LoadBalancer],
) -> None:
    on_a, on_b = split_flood(pair, "127.0.0.3", 0.9)
    cluster_admitted_at_the_rate(on_a, on_b)
    assert on_b.count(200) > 0
    a, b = pair

    def others_on_a() -> int | None:
        """What a counts as admitted by the other replica, once b's flood is in it (a
        reads the others' counts from Redis every publish interval)."""
        entry = limits_of(a)["rate"]["default"]
        others = entry["cluster"]["admitted"] - entry["admitted"]
        return others if others >= on_b.count(200) else None

    others = wait_for(others_on_a, timeout=5, step=0.3).value
    assert others <= limits_of(b)["rate"]["default"]["admitted"]  # b's own count, no more


def test_stats_is_limited_too(pair: tuple[LoadBalancer, LoadBalancer]) -> None:
    """LB_RATE_LIMIT covers /stats: a burst of calls from one client, all at once."""
    statuses = [s for _, s in flood(
        pair[0].url, "127.0.0.4", "/stats", rate=1000, seconds=0.02, connections=4
    ).answers]  # fmt: skip
    assert statuses.count(200) >= BURST and 429 in statuses


def test_redis_down_each_replica_falls_back_to_its_share(
    pair: tuple[LoadBalancer, LoadBalancer], redis: RedisServer
) -> None:
    redis.stop()
    for balancer in pair:
        wait_for(lambda b=balancer: limits_of(b)["cluster"]["mode"] == "share", timeout=5)
        cluster = limits_of(balancer)["cluster"]
        assert cluster["status"] == "degraded" and cluster["share"] == 0.5
        assert cluster["reason"].startswith("redis")
        assert limits_of(balancer)["rate"]["default"]["effective_rate_per_s"] == RATE / 2
    a, _ = pair
    alone = flood(a.url, "127.0.0.5", "/api/share", rate=2 * RATE, seconds=2.0, connections=2)
    expected = BURST + RATE / 2 * alone.span_s  # half the rate on this replica
    print(f"share: admitted {alone.count(200)}, expected {expected:.1f}")
    assert abs(alone.count(200) - expected) <= max(2.0, 0.10 * RATE / 2 * alone.span_s)
    assert any("falls back" in line for line in a.output)
