"""Admission control through one real load balancer with two workers: rate limits exact
across workers, bursts, the RateLimit fields, dry runs, trusted proxies, a flood of keys,
``max_requests`` against a slow upstream, ``LB_MAX_CLIENT_REQUESTS``.

Clients bind distinct loopback source addresses (``tests/support/flood.py``), so each is a
distinct client to the service. The tests share one load balancer and run in file order;
each uses its own client addresses or keys, so no test sees another's budget.
"""

from __future__ import annotations

import time
from bisect import bisect_right
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import pytest
from playwright.sync_api import sync_playwright

from tests.support import REPO, LoadBalancer, UpstreamServer, env_for, wait_for
from tests.support.tools import require
from tests.support.flood import Flood, client_from, flood, in_parallel, well_behaved

API_RATE, API_BURST = 20.0, 5  # per client, on /api
KEY_RATE, KEY_BURST = 2.0, 4  # per X-Api-Key, on /blog
LIMITS = f"""
[[routes]]
prefix = "/slow"
upstream = "user-service"

[[limits]]
name = "api"
rate = "{API_RATE:g}/s"
burst = {API_BURST}
routes = ["api-gateway"]

[[limits]]
name = "keys"
rate = "{KEY_RATE:g}/s"
burst = {KEY_BURST}
per = "header:X-Api-Key"
routes = ["blog-service"]

[[limits]]
name = "pages"
rate = "5/s"
burst = 2
routes = ["dashboard-ui"]
dry_run = true
"""
TABLE_KEYS = 128  # small, so that a few thousand keys fill it, even on a loaded machine


@pytest.fixture(scope="module")
def lb(upstreams: dict[str, UpstreamServer], tmp_path_factory) -> Iterator[LoadBalancer]:
    folder = tmp_path_factory.mktemp("limits")
    config = folder / "lb.toml"
    config.write_text((REPO / "config" / "defaults.toml").read_text() + LIMITS)
    balancer = LoadBalancer(
        env_for(
            upstreams,
            LB_CONFIG=str(config),
            LB_TRUSTED_PROXIES="127.0.0.1/32, 10.0.0.0/8",
            LB_LIMIT_KEYS=str(TABLE_KEYS),
            LB_MAX_CLIENT_REQUESTS="4",
            USER_SERVICE_MAX_REQUESTS="3",
        ),
        workers=2,
        log=folder / "lb.log",  # every line: the access log alone outgrows ``output``
    )
    balancer.log_path = folder / "lb.log"  # type: ignore[attr-defined]
    yield balancer
    balancer.stop()


def limits_of(lb: LoadBalancer) -> dict[str, Any]:
    with client_from(lb.url, "127.0.0.1") as client:  # a new connection: either worker
        return client.get("/stats").json()["load-balancer"]["limits"]


def admitted_at_the_rate(admitted: int, rate: float, burst: int, span: float) -> None:
    """GCRA admits the burst at once, then one request per interval: over ``span`` seconds
    of flood, ``burst + rate * span``, within 5 % of the rate's part (and one request)."""
    expected = burst + rate * span
    print(f"admitted {admitted} in {span:.2f} s, expected {expected:.1f}")
    assert abs(admitted - expected) <= max(1.5, 0.05 * rate * span), (admitted, expected)


def test_floods_are_admitted_at_the_rate_and_a_good_client_never_limited(
    lb: LoadBalancer,
) -> None:
    def at(source: str, multiple: float):
        return lambda: flood(
            lb.url, source, "/api/flood", rate=API_RATE * multiple, seconds=3.0, connections=4
        )

    def good_client() -> Flood:
        return well_behaved(lb.url, "127.0.0.4", "/api/good", rate=API_RATE / 2, seconds=3.0)

    twice, tenfold, good = in_parallel(at("127.0.0.2", 2), at("127.0.0.3", 10), good_client)
    assert good.count(200) == len(good.answers) > 0 and good.errors == 0
    for result, multiple in ((twice, 2), (tenfold, 10)):
        assert result.errors == 0
        assert set(s for _, s in result.answers) == {200, 429}
        assert result.rate > API_RATE * multiple * 0.6  # it really was a flood
        admitted_at_the_rate(result.count(200), API_RATE, API_BURST, result.span_s)
    entry = limits_of(lb)["rate"]["api"]
    assert entry["limited"] == twice.count(429) + tenfold.count(429)
    assert entry["admitted"] == twice.count(200) + tenfold.count(200) + good.count(200)
    limited = {k["key"] for k in entry["limited_keys"]}
    assert {"127.0.0.2", "127.0.0.3"} <= limited and "127.0.0.4" not in limited
    # the connections really landed on both workers, so one budget was shared by both
    with client_from(lb.url, "127.0.0.1") as client:
        by_worker = client.get("/stats").json()["load-balancer"]["requests_by_worker"]
    assert len(by_worker) == 2 and min(by_worker.values()) > 50


def test_a_burst_is_served_at_once_then_429_with_the_fields(lb: LoadBalancer) -> None:
    with client_from(lb.url, "127.0.0.5") as client:
        answers = [client.get("/blog/post", headers={"X-Api-Key": "burst-key"}) for _ in range(7)]
        other = client.get("/blog/post", headers={"X-Api-Key": "another-key"})
    statuses = [a.status_code for a in answers]
    assert statuses == [200] * KEY_BURST + [429] * (7 - KEY_BURST)
    first, refused = answers[0], answers[-1]
    assert first.headers["ratelimit-policy"] == f'"keys";q={KEY_BURST};w=2'
    assert first.headers["ratelimit"] == f'"keys";r={KEY_BURST - 1};t=1'
    assert answers[KEY_BURST - 1].headers["ratelimit"] == '"keys";r=0;t=1'
    assert refused.headers["retry-after"] == "1"
    assert refused.headers["ratelimit"] == '"keys";r=0;t=1'
    assert refused.headers["content-type"].startswith("application/json")
    body = refused.json()
    assert body["error"] == "rate_limited" and body["limit"] == "keys"
    assert other.status_code == 200  # another key has its own budget


def test_a_dry_run_counts_and_logs_but_never_refuses(lb: LoadBalancer) -> None:
    with client_from(lb.url, "127.0.0.6") as client:
        answers = [client.get(f"/dry/{n}") for n in range(12)]
    assert [a.status_code for a in answers] == [200] * 12
    assert not any("ratelimit" in a.headers for a in answers)  # clients see nothing
    entry = limits_of(lb)["rate"]["pages"]
    assert entry["dry_run"] is True and entry["limited"] >= 12 - 2 - 2
    wait_for(lambda: _lines(lb, "limit pages (dry run): client 127.0.0.6 would be limited"))


def test_trusted_proxies_name_the_client(lb: LoadBalancer) -> None:
    def forwarded(source: str, value: str | None, path: str = "/api/whoami") -> httpx.Response:
        headers = {"X-Forwarded-For": value} if value is not None else {}
        with client_from(lb.url, source) as client:
            return client.get(path, headers=headers)

    def client_seen(response: httpx.Response) -> str:
        """The client the load balancer resolved, as it tells the upstream (X-Real-IP)."""
        echoed = dict((k.lower(), v) for k, v in response.json()["headers"])
        return echoed["x-real-ip"]

    # chained through trusted proxies: the rightmost untrusted address
    chain = forwarded("127.0.0.1", "198.51.100.1, 203.0.113.9, 10.1.2.3", "/api/whoami-chain")
    assert client_seen(chain) == "203.0.113.9"
    # forged by a client that is not a trusted proxy: ignored
    assert client_seen(forwarded("127.0.0.7", "203.0.113.50")) == "127.0.0.7"
    # malformed from a trusted proxy: the peer, never an error
    for value in ("203.0.113.8, garbage", "not-an-ip", ",,", "203.0.113.8 203.0.113.9"):
        answer = forwarded("127.0.0.1", value)
        assert answer.status_code == 200 and client_seen(answer) == "127.0.0.1", value
    # limits key on the real client: one address behind the proxy is limited, another not
    with client_from(lb.url, "127.0.0.1") as proxy:
        behind = {"X-Forwarded-For": "203.0.113.77"}
        statuses = [proxy.get("/api/behind", headers=behind).status_code for _ in range(12)]
    assert statuses.count(429) >= 2
    assert forwarded("127.0.0.1", "203.0.113.78").status_code == 200
    # LB_ADMIN_ALLOW judges the real client too
    assert forwarded("127.0.0.1", None, "/metrics").status_code == 200
    assert forwarded("127.0.0.1", "203.0.113.7", "/metrics").status_code == 403
    # and the access log shows it
    wait_for(lambda: _lines(lb, "client=203.0.113.9 method=GET path=/api/whoami-chain"))


def test_many_keys_keep_memory_flat_and_the_heavy_hitter_limited(lb: LoadBalancer) -> None:
    rss_before = lb.rss_kib()
    untracked_before = limits_of(lb)["table"]["untracked_requests"]

    def heavy() -> Any:
        return flood(
            lb.url, "127.0.0.8", "/blog/heavy", rate=12, seconds=3.0, connections=2,
            headers={"X-Api-Key": "heavy"},
        )  # fmt: skip

    def keys() -> Any:
        return flood(
            lb.url, "127.0.0.9", "/blog/k", rate=1000, seconds=3.0, connections=4,
            headers=lambda n: {"X-Api-Key": f"key-{n}"},
        )  # fmt: skip

    hitter, many = in_parallel(heavy, keys)
    assert len(many.answers) > 4 * TABLE_KEYS  # far more keys than the table holds
    admitted_at_the_rate(hitter.count(200), KEY_RATE, KEY_BURST, hitter.span_s)
    assert hitter.count(429) > 0
    table = limits_of(lb)["table"]
    assert table["keys"] == TABLE_KEYS and table["in_use"] <= TABLE_KEYS
    # The table did fill up: a key is busy for 0.5 s after its one request (1 / KEY_RATE),
    # so with more than TABLE_KEYS requests sent within 0.5 s (about 500 at the flood's full
    # rate) some new keys found no slot and went to the limit's overflow bucket.
    sent = sorted(at for at, _ in many.answers)
    peak = max(bisect_right(sent, at + 1 / KEY_RATE) - n for n, at in enumerate(sent))
    assert peak > 1.2 * TABLE_KEYS, peak  # the flood itself was over what the table holds
    assert table["untracked_requests"] > untracked_before, table
    assert lb.rss_kib() - rss_before < 8 * 1024


def test_max_requests_answers_503_at_once_against_a_slow_upstream(lb: LoadBalancer) -> None:
    def slow(n: int) -> tuple[int, float, httpx.Response]:
        started = time.monotonic()
        with client_from(lb.url, f"127.0.1.{n + 1}") as client:
            answer = client.get("/slow/x?delay=1.0")
        return answer.status_code, time.monotonic() - started, answer

    with ThreadPoolExecutor(6) as pool:
        results = list(pool.map(slow, range(6)))
    served = [r for r in results if r[0] == 200]
    refused = [r for r in results if r[0] == 503]
    assert len(served) == 3 and len(refused) == 3  # exactly, across both workers
    for _, took, answer in refused:
        assert took < 0.8  # at once, not queued behind the slow ones
        assert answer.headers["retry-after"] == "1"
        body = answer.json()
        assert body["error"] == "overloaded" and body["upstream"] == "user-service"
    pool_entry = limits_of(lb)["pools"]["user-service"]
    assert pool_entry == {"max_requests": 3, "in_flight": 0, "overloaded": 3}
    metrics = lb.client.get("/metrics").text
    assert 'lb_overloaded_requests_total{upstream="user-service"} 3.0' in metrics
    assert 'lb_limited_requests_total{limit="api"}' in metrics


def test_max_client_requests_caps_one_client_in_flight(lb: LoadBalancer) -> None:
    def slow(_: int) -> httpx.Response:
        with client_from(lb.url, "127.0.0.11") as client:
            return client.get("/page?delay=0.8")

    with ThreadPoolExecutor(6) as pool:
        answers = list(pool.map(slow, range(6)))
    statuses = sorted(a.status_code for a in answers)
    assert statuses == [200] * 4 + [429] * 2
    refused = next(a for a in answers if a.status_code == 429)
    assert refused.json()["limit"] == "max_client_requests"
    with client_from(lb.url, "127.0.0.12") as other:  # another client is not affected
        assert other.get("/page").status_code == 200
    assert limits_of(lb)["max_client_requests"]["limited"] == 2


def test_the_status_page_shows_the_limits_and_charts_refusals(lb: LoadBalancer) -> None:
    data = lb.client.get("/lb-status/data").json()
    assert set(data["load-balancer"]["limits"]["rate"]) == {"api", "keys", "pages"}
    assert sum(p["limited_per_s"] for p in data["limits_history"]) > 0  # the floods, charted
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=require("chromium"), args=["--headless", "--no-sandbox"]
        )
        try:
            page = browser.new_page()
            errors: list[str] = []
            page.on("pageerror", lambda error: errors.append(str(error)))
            page.goto(f"{lb.url}/lb-status")
            page.wait_for_selector('#limits tr[data-limit="api"]', timeout=10_000)
            cell = page.inner_text('tr[data-limit="api"] td[data-field="limited"]')
            assert int(cell) >= data["load-balancer"]["limits"]["rate"]["api"]["limited"]
            assert page.inner_text('tr[data-limit="pages"] td[data-field="dry_run"]') == "dry run"
            points = page.get_attribute('svg[data-chart="limited"]', "data-points")
            assert int(points or 0) > 0
            assert page.locator('svg[data-chart="limited"] path.series').count() == 3
            assert errors == []
        finally:
            browser.close()


def test_one_line_when_a_key_starts_being_limited_and_one_when_it_stops(
    lb: LoadBalancer,
) -> None:
    for key in ("client 127.0.0.2", "client 127.0.0.3"):
        wait_for(lambda key=key: _lines(lb, f"limit api: {key} no longer limited"), timeout=8)
        assert len(_lines(lb, f"limit api: {key} is being limited")) == 1
        assert len(_lines(lb, f"limit api: {key} no longer limited")) == 1
    assert not _lines(lb, "127.0.0.4 is being limited")


def _lines(lb: LoadBalancer, text: str) -> list[str]:
    """The process's lines (all of them, from its log file) that contain ``text``."""
    return [line for line in lb.log_path.read_text().splitlines() if text in line]
