"""The status page in a real browser: Debian's chromium, headless, driven by Playwright.

One load balancer with two workers (the figures must be everyone's), an api-gateway pool of
two targets with active health checks, one browser and one page for the whole module.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import pytest
from playwright.sync_api import Page, sync_playwright

from service.demo.upstreams import dashboard_ui
from tests.support import Knob, LoadBalancer, UpstreamServer, env_for, wait_for
from tests.support.tools import require

CHROMIUM_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
    "--disable-component-update", "--disable-sync", "--no-first-run",
]  # fmt: skip
POOL = "api-gateway"


class Browsed:
    """The page and everything it did: every request it made, console errors, page errors."""

    def __init__(self, page: Page) -> None:
        self.page = page
        self.requests: list[str] = []
        self.console_errors: list[str] = []
        self.page_errors: list[str] = []
        page.on("request", lambda request: self.requests.append(request.url))
        page.on(
            "console",
            lambda message: message.type == "error" and self.console_errors.append(message.text),
        )
        page.on("pageerror", lambda error: self.page_errors.append(str(error)))

    def polls(self) -> int:
        return int(self.page.get_attribute("body", "data-polls") or 0)

    def figure(self, key: str) -> str:
        return self.page.inner_text(f'#figures [data-figure="{key}"]')

    def target_cell(self, url: str, field: str) -> str:
        return self.page.inner_text(f'tr[data-target="{url}"] td[data-field="{field}"]')

    def chart_points(self, chart: str) -> int:
        return int(self.page.get_attribute(f'svg[data-chart="{chart}"]', "data-points") or 0)

    def next_poll(self) -> None:
        """Wait until a poll that started after this call has been drawn."""
        seen = self.polls()
        wait_for(lambda: self.polls() >= seen + 2, timeout=10)


@pytest.fixture(scope="module")
def targets() -> Iterator[list[Knob]]:
    servers = [Knob(f"status-{i}").start() for i in range(2)]
    yield servers
    for server in servers:
        server.stop()


@pytest.fixture(scope="module")
def lb(upstreams: dict[str, UpstreamServer], targets: list[Knob]) -> Iterator[LoadBalancer]:
    env = env_for(
        upstreams,
        API_GATEWAY_URL=", ".join(t.url for t in targets),
        API_GATEWAY_HEALTH_PATH="/health",
        API_GATEWAY_HEALTH_INTERVAL="0.3",
        API_GATEWAY_HEALTH_TIMEOUT="0.5",
        API_GATEWAY_HEALTH_UNHEALTHY_THRESHOLD="1",
        API_GATEWAY_HEALTH_HEALTHY_THRESHOLD="1",
    )
    balancer = LoadBalancer(env, workers=2)
    yield balancer
    balancer.stop()


@pytest.fixture(scope="module")
def browsed(lb: LoadBalancer) -> Iterator[Browsed]:
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=require("chromium"), args=CHROMIUM_ARGS
        )
        try:
            page = browser.new_page()
            browsed = Browsed(page)
            page.goto(f"{lb.url}/lb-status")
            wait_for(browsed.polls, timeout=10)
            yield browsed
        finally:
            browser.close()


def _batch(url: str, count: int, prefix: str) -> None:
    # a fresh client per batch: new connections, so the kernel spreads them over both workers
    with httpx.Client(base_url=url, trust_env=False, timeout=10) as client:
        for i in range(count):
            status = 404 if i % 5 == 4 else 200
            assert client.get(f"{prefix}/{i}?status={status}").status_code == status


def _traffic(lb: LoadBalancer, count: int, prefix: str = "/api/status") -> None:
    """``count`` requests (one in five a 404) in batches of 5 on parallel connections."""
    with ThreadPoolExecutor(max_workers=8) as pool:
        list(pool.map(_batch, [lb.url] * (count // 5), [5] * (count // 5), [prefix] * 99))


def shows(text: str, value: object) -> bool:
    """The page shows ``value`` (JavaScript prints 90.0 as "90": numbers compare as numbers)."""
    if isinstance(value, int | float) and not isinstance(value, bool):
        return float(text) == value
    return text == str(value)


def _stats(lb: LoadBalancer) -> dict[str, Any]:
    return lb.client.get("/stats").json()["load-balancer"]


def test_numbers_on_the_page_match_stats(lb: LoadBalancer, browsed: Browsed) -> None:
    _traffic(lb, 60)
    browsed.next_poll()
    stats = _stats(lb)
    assert stats["total_requests"] == 60
    for key in ("total_requests", "real_requests_total", "success_rate",
                "avg_response_time_ms_lifetime", "workers"):  # fmt: skip
        assert shows(browsed.figure(key), stats[key]), key
    for status_class in ("2xx", "4xx", "5xx"):
        key = f"responses_by_class.{status_class}"
        assert shows(browsed.figure(key), stats["responses_by_class"][status_class]), key
    assert shows(browsed.figure("proxy_errors.502"), stats["proxy_errors"]["502"])
    pool = stats["upstreams"][POOL]
    assert sum(t["requests"] for t in pool["targets"]) == 60
    for target in pool["targets"]:
        for field in ("requests", "failures", "state", "ejections", "weight"):
            assert shows(browsed.target_cell(target["url"], field), target[field]), field
        # the window's per-target percentiles are there and are numbers
        assert float(browsed.target_cell(target["url"], "window_p50_ms")) > 0
        assert browsed.target_cell(target["url"], "health_check").startswith("up")


def test_the_charts_gain_points(lb: LoadBalancer, browsed: Browsed) -> None:
    before = browsed.chart_points("rps")
    _traffic(lb, 10, "/api/later")
    # the 5 s bucket holding this traffic completes, then the next poll draws it
    wait_for(lambda: browsed.chart_points("rps") > before, timeout=15, step=0.2)
    for chart in ("rps", "latency", "errors"):
        svg = f'svg[data-chart="{chart}"]'
        assert browsed.chart_points(chart) > before
        assert browsed.page.locator(f"{svg} path.series").count() >= 2, chart

    def charted() -> int:
        history = lb.client.get("/lb-status/data").json()["history"]
        return sum(b["requests"] for b in history["buckets"])

    # once every bucket of this module's traffic is complete, the history holds all of it,
    # whichever worker served it
    wait_for(lambda: charted() == 70, timeout=12, step=0.2)
    by_worker = _stats(lb)["requests_by_worker"]
    assert len(by_worker) == 2 and min(by_worker.values()) > 0


def test_a_killed_target_shows_as_down_within_one_poll(
    lb: LoadBalancer, browsed: Browsed, targets: list[Knob]
) -> None:
    victim = targets[1]
    assert browsed.target_cell(victim.url, "state") == "up"
    victim.stop()

    def stats_says_down() -> bool:
        pool = _stats(lb)["upstreams"][POOL]
        return {t["url"]: t["state"] for t in pool["targets"]}[victim.url] == "down"

    wait_for(stats_says_down, timeout=10, step=0.05)
    polls_when_down = browsed.polls()
    started = time.monotonic()
    # the poll in flight may have read before the change; the one after it must show it
    wait_for(lambda: browsed.target_cell(victim.url, "state") == "down", timeout=10)
    assert browsed.polls() <= polls_when_down + 2, time.monotonic() - started
    assert "down" in browsed.target_cell(victim.url, "health_check")


def test_no_console_errors_and_no_request_leaves_the_host(
    lb: LoadBalancer, browsed: Browsed
) -> None:
    assert browsed.polls() >= 3
    assert browsed.console_errors == []
    assert browsed.page_errors == []
    assert browsed.requests, "the page made no request at all"
    outside = [url for url in browsed.requests if not url.startswith(f"{lb.url}/")]
    assert outside == []
    assert {url.removeprefix(lb.url) for url in browsed.requests} >= {
        "/lb-status", "/lb-status/status.js", "/lb-status/status.css", "/lb-status/data",
    }  # fmt: skip


def test_the_demo_dashboard_links_to_the_status_page(lb: LoadBalancer) -> None:
    status, content_type, body = dashboard_ui()("GET", "/", "", 0)
    assert status == 200 and content_type.startswith("text/html")
    assert b'href="/lb-status"' in body
    # and the link, followed on the load balancer the dashboard is served through, is the page
    page = lb.client.get("/lb-status")
    assert page.status_code == 200 and b'id="chart-rps"' in page.content
    assert "default-src 'self'" in page.headers["content-security-policy"]
    slash = lb.client.get("/lb-status/")
    assert slash.status_code == 308 and slash.headers["location"] == "/lb-status"


def test_the_page_shows_the_configuration_generation(lb: LoadBalancer, browsed: Browsed) -> None:
    browsed.next_poll()
    config = lb.client.get("/lb-status/data").json()["load-balancer"]["config"]
    shown = browsed.page.inner_text('#config [data-config="summary"]')
    assert f"generation {config['generation']}," in shown
    assert config["sha256"][:12] in shown
    assert browsed.page.is_hidden('#config [data-config="error"]')  # no failed reload


def test_every_table_fits_its_card_at_1280_px(browsed: Browsed) -> None:
    """The pool tables (15 columns, a health check's sentence) spilled out of their cards at
    1280 px wide: headings now wrap, and no table is wider than the card it is drawn in."""
    page = browsed.page
    page.set_viewport_size({"width": 1280, "height": 800})
    browsed.next_poll()
    widths = page.evaluate(
        """() => [...document.querySelectorAll("table")].map((table) => {
            const card = table.closest(".pool");
            const style = getComputedStyle(card);
            const inside = card.clientWidth - parseFloat(style.paddingLeft)
                - parseFloat(style.paddingRight);
            return [card.id || card.dataset.pool, table.getBoundingClientRect().width, inside];
        })"""
    )
    assert len(widths) >= 2, widths  # the routes table and the pools'
    too_wide = [(card, table, inside) for card, table, inside in widths if table > inside + 0.5]
    assert too_wide == []
    assert page.evaluate("document.documentElement.scrollWidth") <= 1280


def test_the_page_shows_routes_and_a_readable_uptime(lb: LoadBalancer, browsed: Browsed) -> None:
    browsed.next_poll()
    routes = _stats(lb)["routes"]
    shown = browsed.page.locator("#routes tbody tr").count()
    assert shown == sum(len(route["backends"]) for route in routes)
    api = browsed.page.inner_text('#routes tr[data-backend="api-gateway"] td[data-field="prefix"]')
    assert api == "/api"
    uptime = browsed.figure("uptime_s")
    assert re.fullmatch(r"\d+ s|\d+ min \d+ s", uptime), uptime  # not "17.088"
