"""Routes with ``match`` and weighted ``backends`` (``[[routes]]``): a canary split, matched
routes and their precedence, the split changed by a reload under traffic, and bad routes
refused at start-up and on reload.

One ``sanic service.app --workers 2`` serves the module, in front of real upstream servers
on 127.0.0.2-127.0.0.8; each upstream's echo names it, so a test sees where every request
went. Start-up refusals run ``python -m service`` (the container's command).
"""

from __future__ import annotations

import subprocess
import sys
import threading
from collections import Counter, deque
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.support import REPO, LoadBalancer, UpstreamServer, clean_env, free_port, wait_for
from tests.test_reload import Reloading

NAMES = ("ui", "stable", "canary", "testers", "writes", "debug", "both", "v2")


@pytest.fixture(scope="module")
def servers() -> Iterator[dict[str, UpstreamServer]]:
    started = {
        name: UpstreamServer(name).start(host=f"127.0.0.{i + 1}") for i, name in enumerate(NAMES)
    }
    yield started
    for server in started.values():
        server.stop()


def config(servers: dict[str, UpstreamServer], *, stable: int = 90, canary: int = 10) -> str:
    """The module's file: every upstream, and the routes under test. The split route comes
    first in the file: routes with a match are tried before it whatever the order."""
    lines = []
    for name in NAMES:
        lines += [
            "[[upstreams]]",
            f'name = "{name}"',
            f'url_env = "ROLL_{name.upper()}_URL"',
            f'url = "{servers[name].url}"',
        ]
    lines.append(f"""
[[routes]]
prefix = "/"
upstream = "ui"

[[routes]]
prefix = "/api"
backends = [
  {{ upstream = "stable", weight = {stable} }},
  {{ upstream = "canary", weight = {canary} }},
]

[[routes]]
prefix = "/api"
upstream = "canary"
match = {{ headers = {{ "X-Canary" = "always" }} }}

[[routes]]
prefix = "/api"
upstream = "testers"
match = {{ cookies = {{ tester = "yes" }} }}

[[routes]]
prefix = "/api"
upstream = "writes"
match = {{ methods = ["DELETE", "PUT"] }}

[[routes]]
prefix = "/api"
upstream = "debug"
match = {{ query = {{ debug = "1" }} }}

[[routes]]
prefix = "/api"
upstream = "both"
match = {{ headers = {{ "X-Canary" = "always" }}, cookies = {{ tester = "yes" }} }}

[[routes]]
prefix = "/api/v2"
upstream = "v2"
""")
    return "\n".join(lines) + "\n"


@pytest.fixture(scope="module")
def reloading(
    servers: dict[str, UpstreamServer], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Reloading]:
    path = tmp_path_factory.mktemp("routes") / "lb.toml"
    path.write_text(config(servers))
    lb = LoadBalancer(clean_env({"LB_CONFIG": str(path)}), workers=2)
    # every line kept: the access log is on, and the reload lines must not scroll away
    lb.output = deque(lb.output)
    yield Reloading(lb, path)
    lb.stop()


def upstream_of(response: httpx.Response) -> str:
    assert response.status_code == 200, response.text
    return str(response.json()["upstream"])


def spread(lb: LoadBalancer, count: int, path: str = "/api/split") -> Counter[str]:
    """``count`` GETs, 8 at a time over keep-alive connections: where each one went."""
    limits = httpx.Limits(max_connections=8, max_keepalive_connections=8)
    with httpx.Client(base_url=lb.url, trust_env=False, timeout=10, limits=limits) as client:
        with ThreadPoolExecutor(8) as pool:
            return Counter(pool.map(lambda _: upstream_of(client.get(path)), range(count)))


def route_entry(stats: dict[str, Any], prefix: str, match: Any = None) -> dict[str, Any]:
    found = [r for r in stats["routes"] if r["prefix"] == prefix and r["match"] == match]
    assert len(found) == 1, stats["routes"]
    return found[0]


def test_a_90_10_split_sends_10_percent_to_the_canary(
    reloading: Reloading, servers: dict[str, UpstreamServer]
) -> None:
    before = route_entry(reloading.stats(), "/api")
    went = spread(reloading.lb, 2000)
    assert set(went) == {"stable", "canary"}
    assert 0.075 <= went["canary"] / 2000 <= 0.125, went

    # /stats counts every request of the pair, whichever worker routed it
    after = route_entry(reloading.stats(), "/api")
    counted = {
        b["upstream"]: b["requests"] - old["requests"]
        for b, old in zip(after["backends"], before["backends"], strict=True)
    }
    assert counted == dict(went)
    assert [(b["upstream"], b["weight"]) for b in after["backends"]] == [
        ("stable", 90),
        ("canary", 10),
    ]
    assert after["match"] is None and after["requests"] - before["requests"] == 2000
    # the access log names the upstream picked
    wait_for(lambda: reloading.lines("path=/api/split route=canary "), timeout=5)


@pytest.mark.parametrize(
    ("method", "path", "headers", "expected"),
    [
        ("GET", "/api/m", {"X-Canary": "always"}, "canary"),
        ("GET", "/api/m", {"x-canary": "always"}, "canary"),  # the name in any case
        ("GET", "/api/m", {"Cookie": "tester=yes"}, "testers"),
        ("GET", "/api/m", {"Cookie": "a=1; tester=yes"}, "testers"),
        ("DELETE", "/api/m", {}, "writes"),
        ("PUT", "/api/m", {}, "writes"),
        ("GET", "/api/m?debug=1", {}, "debug"),
        ("GET", "/api/m?x=2&debug=1", {}, "debug"),
        # more conditions first, whatever the file order
        ("GET", "/api/m", {"X-Canary": "always", "Cookie": "tester=yes"}, "both"),
        # as many conditions: the file's order (headers before cookies before methods...)
        ("GET", "/api/m?debug=1", {"X-Canary": "always"}, "canary"),
        ("DELETE", "/api/m", {"Cookie": "tester=yes"}, "testers"),
        ("PUT", "/api/m?debug=1", {}, "writes"),
        # the longest prefix first: /api/v2 has no match, and still wins over /api's
        ("GET", "/api/v2/m", {"X-Canary": "always", "Cookie": "tester=yes"}, "v2"),
        ("DELETE", "/api/v2/m?debug=1", {}, "v2"),
        # a match is on the route's prefix only
        ("GET", "/other", {"X-Canary": "always"}, "ui"),
    ],
)
def test_a_matched_route_takes_what_matches_in_precedence(
    reloading: Reloading, method: str, path: str, headers: dict[str, str], expected: str
) -> None:
    with httpx.Client(base_url=reloading.lb.url, trust_env=False, timeout=10) as client:
        for _ in range(4):  # new connections: either worker
            assert upstream_of(client.request(method, path, headers=headers)) == expected


@pytest.mark.parametrize(
    ("method", "path", "headers"),
    [
        ("GET", "/api/n", {"X-Canary": "sometimes"}),  # values are exact
        ("GET", "/api/n", {"X-Canary": "Always"}),
        ("GET", "/api/n", {"X-Canary-Not": "always"}),
        ("GET", "/api/n", {"Cookie": "tester=no; testerx=yes"}),
        ("GET", "/api/n", {"X-Tester": "yes"}),  # a header is not a cookie
        ("GET", "/api/n?debug=10", {}),
        ("GET", "/api/n?debug=", {}),
        ("GET", "/api/n?debugx=1", {}),
        ("POST", "/api/n", {}),
        ("PATCH", "/api/n", {}),
        ("GET", "/apix/n", {"X-Canary": "always", "Cookie": "tester=yes"}),  # not /api
    ],
)
def test_a_matched_route_takes_no_other_request(
    reloading: Reloading, method: str, path: str, headers: dict[str, str]
) -> None:
    matched_only = {"testers", "writes", "debug", "both", "v2"}
    with httpx.Client(base_url=reloading.lb.url, trust_env=False, timeout=10) as client:
        went = {upstream_of(client.request(method, path, headers=headers)) for _ in range(20)}
    assert not went & matched_only, went
    if path.startswith("/apix"):
        assert went == {"ui"}
    elif headers.get("X-Canary") != "always":
        assert went <= {"stable", "canary"}


def test_stats_show_each_route_with_its_match_and_backends(reloading: Reloading) -> None:
    routes = reloading.stats()["routes"]
    order = [(r["prefix"], r["match"], [b["upstream"] for b in r["backends"]]) for r in routes]
    assert order == [
        ("/api/v2", None, ["v2"]),
        ("/api", {"headers": {"x-canary": "always"}, "cookies": {"tester": "yes"}}, ["both"]),
        ("/api", {"headers": {"x-canary": "always"}}, ["canary"]),
        ("/api", {"cookies": {"tester": "yes"}}, ["testers"]),
        ("/api", {"methods": ["DELETE", "PUT"]}, ["writes"]),
        ("/api", {"query": {"debug": "1"}}, ["debug"]),
        ("/api", None, ["stable", "canary"]),
        ("/", None, ["ui"]),
    ]
    both = routes[1]
    assert both["requests"] == sum(b["requests"] for b in both["backends"]) > 0
    assert both["backends"] == [{"upstream": "both", "weight": 1, "requests": both["requests"]}]


def test_a_reload_to_50_50_applies_in_every_worker_with_nothing_dropped(
    reloading: Reloading, servers: dict[str, UpstreamServer]
) -> None:
    failures: list[str] = []
    sent = Counter[str]()
    stop = threading.Event()

    def traffic() -> None:
        with httpx.Client(base_url=reloading.lb.url, trust_env=False, timeout=10) as client:
            while not stop.is_set():
                try:
                    response = client.get("/api/during")
                    sent[upstream_of(response)] += 1
                except (httpx.HTTPError, AssertionError) as exc:
                    failures.append(repr(exc))

    lanes = [threading.Thread(target=traffic) for _ in range(4)]
    for lane in lanes:
        lane.start()
    try:
        wait_for(lambda: sum(sent.values()) > 100, timeout=10)
        took = reloading.sighup(config(servers, stable=50, canary=50))
        assert took < 2.5  # within 1 s when the machine is not loaded (it polls every 0.1 s)
        wait_for(lambda: sum(sent.values()) > 300, timeout=10)
    finally:
        stop.set()
        for lane in lanes:
            lane.join()
    assert not failures, failures[:3]
    assert reloading.runs_everywhere(reloading.generation())

    went = spread(reloading.lb, 1000)
    # a worker left on 90/10 would pull the canary's share down to about 30 %
    assert 0.43 <= went["canary"] / 1000 <= 0.57, went
    entry = route_entry(reloading.stats(), "/api")
    assert [(b["upstream"], b["weight"]) for b in entry["backends"]] == [
        ("stable", 50),
        ("canary", 50),
    ]
    # then the canary drained (weight 0), and at 100 %
    reloading.sighup(config(servers, stable=0, canary=100))
    assert spread(reloading.lb, 200) == Counter({"canary": 200})
    reloading.sighup(config(servers, stable=100, canary=0))
    assert spread(reloading.lb, 200) == Counter({"stable": 200})


BAD_ROUTES = [
    pytest.param(
        '[[routes]]\nprefix = "/api"\nupstream = "canary"\nmatch = { header = { a = "b" } }',
        ["[[routes]] #2 (/api)", "unknown key 'header'"],
        id="unknown-match-key",
    ),
    pytest.param(
        '[[routes]]\nprefix = "/api"\n'
        'backends = [ { upstream = "stable", weight = 90 }, { upstream = "canary", weight = -5 } ]',
        ["[[routes]] #2 (/api)", "weight -5 of 'canary'"],
        id="negative-weight",
    ),
    pytest.param(
        '[[routes]]\nprefix = "/api"\n'
        'backends = [ { upstream = "stable", weight = 0 }, { upstream = "canary", weight = 0 } ]',
        ["[[routes]] #2 (/api)", "every weight is 0"],
        id="all-weights-zero",
    ),
    pytest.param(
        '[[routes]]\nprefix = "/api"\nupstream = "stable"\n'
        'backends = [ { upstream = "canary", weight = 1 } ]',
        ["[[routes]] #2 (/api)", "both upstream and backends"],
        id="upstream-and-backends",
    ),
    pytest.param(
        '[[routes]]\nprefix = "/api"\nbackends = [ { upstream = "nowhere", weight = 1 } ]',
        ["[[routes]] #2 (/api)", "unknown upstream 'nowhere'"],
        id="unknown-upstream",
    ),
    pytest.param(
        '[[routes]]\nprefix = "/api"\nupstream = "writes"\nmatch = { methods = ["FETCH"] }',
        ["[[routes]] #2 (/api)", "unknown method 'FETCH'"],
        id="bad-method",
    ),
]


def bad_file(servers: dict[str, UpstreamServer], route: str) -> str:
    """The module's upstreams, the catch-all route, then ``route`` (#2)."""
    good = config(servers)
    catch_all = '[[routes]]\nprefix = "/"\nupstream = "ui"\n\n'
    return good[: good.index("[[routes]]")] + catch_all + route


@pytest.mark.parametrize(("route", "named"), BAD_ROUTES)
def test_a_bad_route_is_refused_on_reload_naming_it(
    reloading: Reloading, servers: dict[str, UpstreamServer], route: str, named: list[str]
) -> None:
    generation = reloading.generation()
    failed = reloading.stats()["config"]["reloads"]["failed"]
    reloading.write(bad_file(servers, route))
    reloading.lb.process.send_signal(1)  # SIGHUP
    wait_for(lambda: reloading.stats()["config"]["reloads"]["failed"] == failed + 1, timeout=10)
    error = reloading.stats()["config"]["last_error"]
    assert all(part in error for part in named), error
    assert "\n" not in error
    assert reloading.generation() == generation  # nothing changed: still routed as before
    with httpx.Client(base_url=reloading.lb.url, trust_env=False, timeout=10) as client:
        assert upstream_of(client.get("/api/v2/x")) == "v2"
    reloading.write(reloading.running)


@pytest.mark.parametrize(("route", "named"), BAD_ROUTES)
def test_a_bad_route_stops_start_up_in_one_line(
    servers: dict[str, UpstreamServer], tmp_path: Path, route: str, named: list[str]
) -> None:
    path = tmp_path / "bad.toml"
    path.write_text(bad_file(servers, route))
    result = subprocess.run(
        [sys.executable, "-m", "service"],
        cwd=REPO,
        env=clean_env({"LB_CONFIG": str(path), "LB_PORT": str(free_port())}),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2
    (line,) = result.stderr.strip().splitlines()
    assert all(part in line for part in named), line
