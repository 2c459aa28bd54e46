"""DNS discovery (``url;resolve``) against a real DNS server and real upstreams.

One dnsmasq (tests/support/dns.py) answers ``svc.test`` from a hosts file each test rewrites;
the targets are ``Knob`` servers on one port at 127.0.0.2, .3, .4, .5 and .9 (all of
127.0.0.0/8 is this host), so one name stands for several real servers. One load balancer
with two workers serves the whole module (``API_GATEWAY_URL=http://svc.test:<port>;resolve``,
answers used for 1 s at most), so each test starts by setting the name to what it needs.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests.support import (
    REPO,
    Knob,
    LoadBalancer,
    UpstreamServer,
    env_for,
    knobs_on_one_port,
    wait_for,
)
from tests.support.dns import DnsServer
from tests.test_metrics_promtool import promtool

NAME = "svc.test"
POOL = "api-gateway"
HOSTS = ("127.0.0.2", "127.0.0.3", "127.0.0.4", "127.0.0.5", "127.0.0.9")


@pytest.fixture(scope="module")
def dns_server() -> Iterator[DnsServer]:
    server = DnsServer({}, ttl=1)
    yield server
    server.close()


@pytest.fixture(scope="module")
def knobs() -> Iterator[dict[str, Knob]]:
    """One Knob per address of ``HOSTS``, all on the same port (retried until one is free on
    every address)."""
    started = knobs_on_one_port(HOSTS)
    yield started
    for knob in started.values():
        knob.stop()


@pytest.fixture(scope="module")
def lb(
    upstreams: dict[str, UpstreamServer], knobs: dict[str, Knob], dns_server: DnsServer
) -> Iterator[LoadBalancer]:
    port = knobs[HOSTS[0]].port
    env = env_for(
        upstreams,
        API_GATEWAY_URL=f"http://{NAME}:{port};resolve",
        LB_RESOLVER=dns_server.address,
        LB_RESOLVER_VALID="1",
        LB_RESOLVER_TIMEOUT="0.5",
        LB_STATS_CACHE_TTL="0",
        LB_ACCESS_LOG="false",
        API_GATEWAY_FAIL_STATUSES="502",  # a 502 answer ejects (the ejection test's failure)
    )
    balancer = LoadBalancer(env, workers=2)
    yield balancer
    balancer.stop()


# ------------------------------------------------------------------------ helpers


def pool_entry(lb: LoadBalancer) -> dict[str, Any]:
    """The pool as the answering worker sees it (a new connection: either worker)."""
    with httpx.Client(base_url=lb.url, trust_env=False, timeout=10) as client:
        return client.get("/stats").json()["load-balancer"]["upstreams"][POOL]


def addresses(lb: LoadBalancer) -> list[str]:
    (entry,) = pool_entry(lb)["discovery"]
    return sorted(entry["addresses"])


def resolve_to(dns_server: DnsServer, lb: LoadBalancer, hosts: list[str]) -> float:
    """Point the name at ``hosts`` and wait until the workers use them; seconds it took."""
    told = dns_server.set({NAME: hosts} if hosts else {})
    wait_for(lambda: addresses(lb) == sorted(hosts), timeout=5)
    # the worker that answered has it; every worker follows within 0.2 s
    time.sleep(0.25)
    assert all(addresses(lb) == sorted(hosts) for _ in range(6))
    return time.monotonic() - told


def arrivals(knobs: dict[str, Knob]) -> dict[str, int]:
    return {host: knob.total() for host, knob in knobs.items()}


def send(lb: LoadBalancer, count: int, path: str = "/api/x") -> list[int]:
    return [lb.client.get(path).status_code for _ in range(count)]


def logged(lb: LoadBalancer, text: str) -> list[str]:
    return [line for line in list(lb.output) if text in line]


# ------------------------------------------------------------------------ the tests


def test_requests_spread_over_every_address_and_reach_an_added_one(
    lb: LoadBalancer, knobs: dict[str, Knob], dns_server: DnsServer
) -> None:
    resolve_to(dns_server, lb, ["127.0.0.2", "127.0.0.3", "127.0.0.4"])
    before = arrivals(knobs)
    assert send(lb, 90) == [200] * 90
    got = {h: n - before[h] for h, n in arrivals(knobs).items()}
    assert all(got[h] >= 10 for h in ("127.0.0.2", "127.0.0.3", "127.0.0.4")), got
    assert got["127.0.0.5"] == got["127.0.0.9"] == 0

    pool = pool_entry(lb)
    (entry,) = pool["discovery"]
    assert entry["name"] == NAME and entry["error"] is None and entry["ttl_s"] == 1
    assert 0 <= entry["refreshed_s_ago"] <= 2.5
    port = knobs["127.0.0.2"].port
    assert {(t["url"], t["name"]) for t in pool["targets"]} == {
        (f"http://127.0.0.{i}:{port}", NAME) for i in (2, 3, 4)
    }

    # a fourth address: requests reach it within one refresh
    told = dns_server.set({NAME: ["127.0.0.2", "127.0.0.3", "127.0.0.4", "127.0.0.5"]})
    start = knobs["127.0.0.5"].total()
    reached = wait_for(lambda: send(lb, 4) and knobs["127.0.0.5"].total() > start, timeout=5)
    assert time.monotonic() - told < 3.0, reached.elapsed

    metrics = lb.client.get("/metrics").text
    assert f'lb_discovery_targets{{upstream="{POOL}"}} 4.0' in metrics
    assert f'lb_discovery_lookups_total{{result="ok",upstream="{POOL}"}}' in metrics
    checked = subprocess.run(
        [promtool(), "check", "metrics"], input=metrics, capture_output=True, text=True
    )
    assert checked.returncode == 0, checked.stdout + checked.stderr


def test_a_removed_address_finishes_its_request_and_gets_no_new_one(
    lb: LoadBalancer, knobs: dict[str, Knob], dns_server: DnsServer
) -> None:
    leaving = knobs["127.0.0.3"]
    resolve_to(dns_server, lb, ["127.0.0.3"])
    retired_before = pool_entry(lb)["retired"]
    leaving.delay = 2.5
    slow: list[httpx.Response] = []
    started = leaving.total()
    request = threading.Thread(
        target=lambda: slow.append(httpx.get(f"{lb.url}/api/slow", timeout=10, trust_env=False))
    )
    request.start()
    try:
        wait_for(lambda: pool_entry(lb)["targets"][0]["outstanding"] == 1, timeout=3)
        resolve_to(dns_server, lb, ["127.0.0.2"])  # .3 is gone while its request runs
        assert send(lb, 20) == [200] * 20
    finally:
        request.join(10)
        leaving.delay = 0.0
    assert slow and slow[0].status_code == 200 and slow[0].json()["path"] == "/api/slow"
    assert leaving.total() == started + 1  # the slow one only: nothing new reached it
    # its connection was closed once its request was over, and its counts stay the pool's
    wait_for(lambda: not leaving._connections, timeout=3)

    def retired() -> dict[str, int] | None:
        now = pool_entry(lb)["retired"]
        return now if now["targets"] > retired_before["targets"] else None

    assert wait_for(retired).value["requests"] >= retired_before["requests"] + 1


def test_when_dns_stops_answering_the_last_set_stays_in_use(
    lb: LoadBalancer, knobs: dict[str, Knob], dns_server: DnsServer
) -> None:
    resolve_to(dns_server, lb, ["127.0.0.2", "127.0.0.4"])
    dns_server.stop()
    try:
        wait_for(lambda: pool_entry(lb)["discovery"][0]["error"] == "timeout", timeout=5)
        before = arrivals(knobs)
        assert send(lb, 40) == [200] * 40
        after = arrivals(knobs)
        assert after["127.0.0.2"] > before["127.0.0.2"] and after["127.0.0.4"] > before["127.0.0.4"]
        assert addresses(lb) == ["127.0.0.2", "127.0.0.4"]
        time.sleep(1.5)  # more failed lookups: still logged once
        assert len(logged(lb, f"lookup of {NAME} failed")) == 1
    finally:
        dns_server.start()
    wait_for(lambda: pool_entry(lb)["discovery"][0]["error"] is None, timeout=5)
    assert len(logged(lb, f"lookup of {NAME} recovered")) == 1


def test_a_name_without_address_answers_503_at_once_and_comes_back(
    lb: LoadBalancer, knobs: dict[str, Knob], dns_server: DnsServer
) -> None:
    resolve_to(dns_server, lb, [])  # NXDOMAIN: a headless Service with no ready pod
    started = time.monotonic()
    response = lb.client.get("/api/x")
    assert time.monotonic() - started < 0.5
    assert response.status_code == 503
    assert response.headers["retry-after"] == "1"
    body = response.json()
    assert len(body.pop("trace_id")) == 32  # the request's trace (service.tracing)
    assert body == {
        "error": "no_targets",
        "upstream": POOL,
        "detail": f"upstream '{POOL}' has no target: its names resolve to no address",
    }
    pool = pool_entry(lb)
    assert pool["targets"] == [] and pool["discovery"][0]["error"] == "nxdomain"
    stats = lb.client.get("/stats").json()
    assert stats["api-gateway"] == {"service_status": "offline", "error": "no_targets"}
    assert stats["load-balancer"]["pools_without_live_target"] >= 1

    resolve_to(dns_server, lb, ["127.0.0.4"])
    assert send(lb, 5) == [200] * 5


def test_an_address_that_stays_keeps_its_ejection(
    lb: LoadBalancer, knobs: dict[str, Knob], dns_server: DnsServer
) -> None:
    failing = knobs["127.0.0.9"]
    failing.get_status = 502
    try:
        resolve_to(dns_server, lb, ["127.0.0.2", "127.0.0.9"])

        def ejected() -> dict[str, Any] | None:
            send(lb, 4)  # 502s from .9 are retried on .2; one of them ejects .9
            target = next(t for t in pool_entry(lb)["targets"] if "127.0.0.9" in t["url"])
            return target if target["state"] == "ejected" else None

        before = wait_for(ejected, timeout=5).value
        resolve_to(dns_server, lb, ["127.0.0.2", "127.0.0.5", "127.0.0.9"])
        after = next(t for t in pool_entry(lb)["targets"] if "127.0.0.9" in t["url"])
        assert after["state"] == "ejected"
        assert after["ejections"] == before["ejections"] >= 1
        assert after["requests"] >= before["requests"]
    finally:
        failing.get_status = None


def test_check_prints_what_each_name_resolves_to(
    knobs: dict[str, Knob], dns_server: DnsServer
) -> None:
    dns_server.set({NAME: ["127.0.0.2", "127.0.0.3"]})
    port = knobs["127.0.0.2"].port

    def check(**env: str) -> subprocess.CompletedProcess[str]:
        environ = {k: v for k, v in os.environ.items() if not k.startswith("LB_")}
        return subprocess.run(
            [sys.executable, "-m", "service", "--check"],
            cwd=REPO, env={**environ, **env}, capture_output=True, text=True, timeout=30,
        )  # fmt: skip

    url = f"http://{NAME}:{port};resolve, http://gone.test:80;resolve"
    result = check(API_GATEWAY_URL=url, LB_RESOLVER=dns_server.address)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert f"  {POOL}: http://{NAME}:{port};resolve -> http://127.0.0.2:{port}, " \
        f"http://127.0.0.3:{port}; ttl 1 s" in lines  # fmt: skip
    assert any("warning" in l and "gone.test has no address (NXDOMAIN)" in l for l in lines)

    dns_server.stop()
    try:
        result = check(API_GATEWAY_URL=url, LB_RESOLVER=dns_server.address,
                       LB_RESOLVER_TIMEOUT="0.3")  # fmt: skip
    finally:
        dns_server.start()
    assert result.returncode == 0
    assert "lookup failed (timeout: no answer within 0.3 s)" in result.stdout


def test_start_up_does_not_wait_for_dns(
    upstreams: dict[str, UpstreamServer], knobs: dict[str, Knob]
) -> None:
    """A DNS server that never answers: the load balancer serves while the first lookup is
    still waiting for its answer, with the pool empty until there is one."""
    silent = DnsServer({}, ttl=1)
    silent.stop()  # its port now answers nothing
    env = env_for(
        upstreams,
        API_GATEWAY_URL=f"http://{NAME}:{knobs['127.0.0.2'].port};resolve",
        LB_RESOLVER=silent.address,
        LB_RESOLVER_TIMEOUT="8",
    )
    balancer = LoadBalancer(env, workers=None)
    try:
        response = balancer.client.get("/api/x")
        assert response.status_code == 503 and response.json()["error"] == "no_targets"
        (entry,) = pool_entry(balancer)["discovery"]
        assert entry["refreshed_s_ago"] is None and sum(entry["lookups"].values()) == 0
    finally:
        balancer.stop()
        silent.close()
