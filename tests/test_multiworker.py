"""Figures are for the whole service, whichever worker process answers ``/stats``."""

from __future__ import annotations

from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

from tests.support import LoadBalancer, UpstreamServer, env_for


@pytest.fixture(scope="module")
def two_workers(upstreams: dict[str, UpstreamServer]) -> Iterator[LoadBalancer]:
    balancer = LoadBalancer(env_for(upstreams, LB_STATS_CACHE_TTL="0"), workers=2)
    yield balancer
    balancer.stop()


def _send_batch(url: str, count: int) -> list[int]:
    # A fresh client per batch: new connections, so the kernel spreads them over both workers.
    with httpx.Client(base_url=url, trust_env=False, timeout=10) as client:
        return [client.get(f"/api/item/{i}").status_code for i in range(count)]


def test_every_stats_call_sees_both_workers_traffic(two_workers: LoadBalancer) -> None:
    with ThreadPoolExecutor(max_workers=20) as pool:
        statuses = [
            s for batch in pool.map(_send_batch, [two_workers.url] * 20, [10] * 20) for s in batch
        ]
    assert statuses == [200] * 200

    reports = []
    for _ in range(10):
        # a new connection each time, so successive calls can land on either worker
        with httpx.Client(base_url=two_workers.url, trust_env=False) as client:
            reports.append(client.get("/stats").json()["load-balancer"])
    assert {r["workers"] for r in reports} == {2}
    assert {r["total_requests"] for r in reports} == {200}
    assert {r["requests_per_second"] for r in reports} == {20.0}
    assert {r["success_rate"] for r in reports} == {100.0}
    # the traffic really was split, so a worker reading only its own row would be wrong
    by_worker = reports[-1]["requests_by_worker"]
    assert len(by_worker) == 2 and min(by_worker.values()) > 0
    assert sum(by_worker.values()) == 200


def test_the_real_command_serves_with_two_worker_processes(two_workers: LoadBalancer) -> None:
    assert two_workers.client.get("/lb-health").status_code == 200
    # the main process plus two workers (and Sanic's own helpers): at least 3 processes
    assert two_workers.process.poll() is None
    answered = two_workers.client.get("/api/ping?x=1")
    assert answered.status_code == 200
    assert answered.json()["raw_path"] == "/api/ping?x=1"
