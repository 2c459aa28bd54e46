"""Figures exact across replicas: two real load balancers (``--workers 2`` each) share one
real Redis, and ``/stats`` on either shows the whole cluster; Redis failing never touches
the requests, and the figures come back when it does.

The tests of this module share one pair of replicas and run in file order: the heartbeat
test needs a cluster without traffic yet, the traffic test needs exact totals.
"""

from __future__ import annotations

import os
import signal
import threading
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from websockets.sync.client import connect

from tests.support import LoadBalancer, UpstreamServer, env_for, two_replicas, wait_for
from tests.support.redis import RedisServer

RETENTION_S = 2.0  # a killed replica is folded into the retired totals this soon


def _env(upstreams: dict[str, UpstreamServer], redis: RedisServer) -> dict[str, str]:
    return env_for(
        upstreams,
        LB_CLUSTER_REDIS_URL=redis.url,
        LB_CLUSTER_NAME="test-cluster",
        LB_CLUSTER_RETENTION=str(RETENTION_S),
        LB_STATS_CACHE_TTL="0",
    )


@pytest.fixture(scope="module")
def pair(
    upstreams: dict[str, UpstreamServer], redis: RedisServer
) -> Iterator[tuple[LoadBalancer, LoadBalancer]]:
    with two_replicas(_env(upstreams, redis)) as replicas:
        yield replicas


def _lb_stats(balancer: LoadBalancer) -> dict[str, Any]:
    # a new connection each time, so successive calls can land on either worker
    with httpx.Client(base_url=balancer.url, trust_env=False, timeout=10) as client:
        return client.get("/stats").json()["load-balancer"]


def _replicas_ok(balancer: LoadBalancer, replicas: int = 2) -> dict[str, Any] | None:
    entry = _lb_stats(balancer)
    cluster = entry["cluster"]
    return entry if cluster["status"] == "ok" and cluster["replicas"] == replicas else None


def test_a_heartbeat_on_one_replica_is_traffic_on_the_other(
    pair: tuple[LoadBalancer, LoadBalancer],
) -> None:
    a, b = pair
    wait_for(lambda: _replicas_ok(a) and _replicas_ok(b), timeout=10)
    assert _lb_stats(b)["has_real_traffic"] is False
    url_a = a.url.replace("http://", "ws://") + "/api/ws-heartbeat"
    url_b = b.url.replace("http://", "ws://") + "/api/ws-heartbeat"
    with connect(url_a, ping_interval=None, open_timeout=5) as socket_a:
        seen = wait_for(lambda: (e := _lb_stats(b))["has_real_traffic"] and e, timeout=5).value
        assert seen["ws_connections"] == 1
        assert seen["real_requests_in_window"] == 0  # the socket alone, not a request
        with connect(url_b, ping_interval=None, open_timeout=5) as socket_b:
            for balancer in (a, b):
                wait_for(lambda bal=balancer: _lb_stats(bal)["ws_connections"] == 2, timeout=5)
            socket_b.send("hb")
        socket_a.send("hb")
    for balancer in (a, b):
        wait_for(lambda bal=balancer: _lb_stats(bal)["ws_connections"] == 0, timeout=5)


def test_150_and_50_requests_show_200_and_20_per_second_on_either(
    pair: tuple[LoadBalancer, LoadBalancer],
) -> None:
    a, b = pair
    statuses = [a.client.get(f"/api/a/{i}").status_code for i in range(150)]
    statuses += [b.client.get(f"/api/b/{i}").status_code for i in range(50)]
    assert statuses == [200] * 200

    def both_see_200() -> list[dict[str, Any]] | None:
        entries = [_lb_stats(a), _lb_stats(b)]
        return entries if all(e["total_requests"] == 200 for e in entries) else None

    # at most one publishing interval late (0.25 s); the deadline only allows a loaded machine
    entries = wait_for(both_see_200, timeout=5).value
    for _ in range(3):  # several calls, so both workers of each replica answer
        entries += [_lb_stats(a), _lb_stats(b)]
    assert {e["total_requests"] for e in entries} == {200}
    assert {e["requests_per_second"] for e in entries} == {20.0}
    assert {e["real_requests_total"] for e in entries} == {200}
    assert {e["success_rate"] for e in entries} == {100.0}
    assert {e["workers"] for e in entries} == {4}
    assert {(e["p50_ms"], e["p95_ms"], e["p99_ms"]) for e in entries} == {
        (entries[0]["p50_ms"], entries[0]["p95_ms"], entries[0]["p99_ms"])
    }
    assert entries[0]["p50_ms"] > 0
    assert {e["avg_response_time_ms_lifetime"] for e in entries} == {
        entries[0]["avg_response_time_ms_lifetime"]
    }
    # the per-replica breakdown: 150 and 50, and each replica names itself
    cluster_a, cluster_b = entries[0]["cluster"], entries[1]["cluster"]
    assert cluster_a["replicas"] == cluster_b["replicas"] == 2
    assert cluster_a["replica"] != cluster_b["replica"]
    by_id = {m["id"]: m["total_requests"] for m in cluster_a["members"]}
    assert by_id == {cluster_a["replica"]: 150, cluster_b["replica"]: 50}
    # per target: the figures of both replicas added up (its state stays each host's own)
    for entry in entries[:2]:
        (gateway,) = entry["cluster"]["targets"]["api-gateway"].values()
        assert gateway["requests"] == 200 and gateway["failures"] == 0
        assert gateway["window_requests"] == 200 and gateway["window_avg_ms"] > 0
        (own,) = entry["upstreams"]["api-gateway"]["targets"]
        assert own["requests"] in (150, 50)  # this host's view
    # /metrics reads the same report
    metrics = b.client.get("/metrics").text
    assert 'lb_requests_total{code="2xx",route="api-gateway"} 200.0' in metrics


def _log(balancer: LoadBalancer) -> str:
    return "".join(balancer.output)


class _Load:
    """Proxied requests to both replicas from two threads until stopped; every status kept."""

    def __init__(self, *balancers: LoadBalancer, limit: int = 2000) -> None:
        self.statuses: list[int] = []
        self.errors: list[str] = []
        self._stop = threading.Event()
        self._threads = [
            threading.Thread(target=self._run, args=(b.url, limit), daemon=True) for b in balancers
        ]
        for thread in self._threads:
            thread.start()

    def _run(self, url: str, limit: int) -> None:
        with httpx.Client(base_url=url, trust_env=False, timeout=10) as client:
            for i in range(limit):
                if self._stop.is_set():
                    return
                try:
                    self.statuses.append(client.get(f"/api/load/{i}").status_code)
                except httpx.HTTPError as exc:
                    self.errors.append(repr(exc))

    def stop(self) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(30)


def _history_requests(balancer: LoadBalancer) -> int:
    history = balancer.client.get("/lb-status/data").json()["history"]
    return sum(bucket["requests"] for bucket in history["buckets"])


def test_the_status_pages_history_holds_both_replicas_traffic(
    pair: tuple[LoadBalancer, LoadBalancer],
) -> None:
    """The 200 requests of the test above, in 5 s buckets, on either replica's status page
    (a bucket counts once it is complete, and each replica publishes its history once per
    bucket, so this takes up to about two buckets)."""
    a, b = pair
    for balancer in (a, b):
        wait_for(lambda balancer=balancer: _history_requests(balancer) == 200, timeout=25)


def test_redis_killed_under_load_then_back_empty(
    pair: tuple[LoadBalancer, LoadBalancer], redis: RedisServer
) -> None:
    a, b = pair
    before = _lb_stats(a)["total_requests"]
    load = _Load(a, b)
    try:
        wait_for(lambda: len(load.statuses) >= 100, timeout=20)
        redis.stop()
        degraded = wait_for(
            lambda: (e := _lb_stats(b))["cluster"]["status"] == "degraded" and e, timeout=5
        ).value
        assert degraded["cluster"]["reason"].startswith("redis:")
        assert degraded["cluster"]["replicas"] == 1
        assert degraded["total_requests"] < before + len(load.statuses)  # this host's only
        during = len(load.statuses)
        wait_for(lambda: len(load.statuses) >= during + 100, timeout=20)  # still served
        # down long enough for both hosts' publishers to have tried (and said so)
        wait_for(lambda: all("cannot publish to Redis" in _log(x) for x in (a, b)), timeout=5)
        wait_for(lambda: _lb_stats(a)["cluster"]["status"] == "degraded", timeout=5)
        redis.start()  # same port, no data
        wait_for(lambda: _replicas_ok(a) and _replicas_ok(b), timeout=10)
    finally:
        load.stop()
    assert load.errors == []
    assert load.statuses and set(load.statuses) == {200}
    expected = before + len(load.statuses)
    for balancer in (a, b):
        wait_for(lambda bal=balancer: _lb_stats(bal)["total_requests"] == expected, timeout=5)
    # the state changes were logged once per host (by its publisher), not once per attempt
    for balancer in (a, b):
        log = _log(balancer)
        assert log.count("cannot publish to Redis") == 1, log[-2000:]
        assert log.count("Redis is back") == 1

    # flushed: each replica's next publication restores its cumulative figures
    assert redis.command("FLUSHALL") == "+OK"
    wait_for(lambda: redis.command("HLEN", "test-cluster:replicas") == ":2", timeout=5)
    for balancer in (a, b):  # as above: what /stats reads may trail the publications a little
        assert wait_for(
            lambda bal=balancer: _lb_stats(bal)["total_requests"] == expected, timeout=5
        )


def test_a_killed_replicas_totals_stay_counted(
    pair: tuple[LoadBalancer, LoadBalancer], upstreams: dict[str, UpstreamServer],
    redis: RedisServer,
) -> None:  # fmt: skip
    a, _ = pair
    wait_for(lambda: _replicas_ok(a), timeout=10)
    before = _lb_stats(a)["total_requests"]
    c = LoadBalancer(_env(upstreams, redis), workers=2, name="replica-c")
    try:
        assert [c.client.get(f"/api/c/{i}").status_code for i in range(30)] == [200] * 30
        wait_for(
            lambda: (e := _replicas_ok(a, 3)) and e["total_requests"] == before + 30, timeout=5
        )
    finally:
        os.killpg(c.process.pid, signal.SIGKILL)  # main process and workers, no goodbye
        c.stop()
    # it drops out of the live replicas, its 30 requests stay counted...
    wait_for(lambda: _replicas_ok(a, 2), timeout=5)
    assert _lb_stats(a)["total_requests"] == before + 30
    # ...and once it has been silent for the retention, its key is folded into the retired
    # totals and deleted, with the total unchanged
    folded = wait_for(
        lambda: (e := _lb_stats(a))["cluster"]["retired_requests"] == 30 and e, timeout=15
    ).value
    assert folded["total_requests"] == before + 30
    assert len(folded["cluster"]["members"]) == 2
    assert redis.command("HLEN", "test-cluster:replicas") == ":2"


def test_an_unreachable_redis_does_not_stop_start_up(
    upstreams: dict[str, UpstreamServer],
) -> None:
    from tests.support import closed_port_url

    url = closed_port_url().replace("http://", "redis://")
    balancer = LoadBalancer(env_for(upstreams, LB_CLUSTER_REDIS_URL=url, LB_STATS_CACHE_TTL="0"))
    try:
        assert balancer.client.get("/api/x").status_code == 200
        entry = balancer.client.get("/stats").json()["load-balancer"]
        assert entry["total_requests"] == 1
        assert entry["cluster"]["status"] == "degraded"
        assert entry["cluster"]["reason"].startswith("redis:")
    finally:
        balancer.stop()


def test_a_slow_redis_delays_neither_requests_nor_stats(
    pair: tuple[LoadBalancer, LoadBalancer], redis: RedisServer
) -> None:
    """Redis asleep for 5 s: the requests and /stats are all answered while it still sleeps.

    Had each request waited on Redis even for the cluster deadline (0.5 s), the thirty of them
    would take 15 s, three times the whole sleep; had /stats waited for Redis, it would end
    with it. (The sleep was 8 s: 5 s is still far past what the requests take, 3 s sooner.)
    """
    a, b = pair
    wait_for(lambda: _replicas_ok(a) and _replicas_ok(b), timeout=10)
    before = _lb_stats(a)["total_requests"]
    sleeper = threading.Thread(
        target=redis.command, args=("DEBUG", "SLEEP", "5"), kwargs={"timeout": 15}
    )
    sleeper.start()
    try:
        wait_for(lambda: redis.command("PING", timeout=1.0) == "", timeout=3)  # it is asleep
        with httpx.Client(base_url=b.url, trust_env=False, timeout=10) as client:
            for i in range(30):
                response = client.get(f"/api/slow-redis/{i}")
                assert response.status_code == 200
            stats = client.get("/stats")
        assert sleeper.is_alive(), "the requests and /stats were answered only as Redis woke"
        entry = stats.json()["load-balancer"]
        assert entry["cluster"] == {
            **entry["cluster"],
            "status": "degraded",
            "reason": "redis: timeout",
        }
    finally:
        sleeper.join(20)
    wait_for(lambda: _replicas_ok(a) and _replicas_ok(b), timeout=10)
    wait_for(lambda: _lb_stats(a)["total_requests"] == before + 30, timeout=5)
