"""Rollouts, per pool (issue 24): slow start, retries with backoff, consistent hashing with
bounded loads, sticky cookies; and their settings refused when wrong.

The behaviours run through real processes (``sanic service.app --workers 2``) and real
targets on 127.0.0.x; the ring's stability, the backoff's bounds and the retry budget's
floor are checked on the pieces alone.
"""

from __future__ import annotations

import os
import random
import signal
import socket
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any

import httpx
import pytest

from service.pools.affinity import sticky_id
from service.pools.hashring import HashRing, key_hash
from service.pools.retries import BACKOFF_CAP, RetryBudget, backoff
from service.settings import SettingsError, load_settings
from tests.support import (
    REPO,
    Knob,
    LoadBalancer,
    clean_env,
    knob_maker,
    sanic_until_exit,
    wait_for,
)

POOL = "api-gateway"
WORKERS = 2


# ------------------------------------------------------------------------ the pieces alone


def test_a_target_that_leaves_the_ring_moves_only_its_keys_and_gets_them_back() -> None:
    urls = [f"http://10.0.0.{i}:8080" for i in range(10)]
    keys = [f"user-{n}" for n in range(20_000)]

    def owners(ring_urls: list[str]) -> list[str]:
        ring = HashRing([(url, 1) for url in ring_urls])
        return [ring_urls[next(ring.walk(key_hash(key)))] for key in keys]

    before = owners(urls)
    after = owners([u for u in urls if u != urls[3]])
    moved = [k for k, (a, b) in enumerate(zip(before, after, strict=True)) if a != b]
    assert all(before[k] == urls[3] for k in moved)  # only the leaver's keys moved
    assert len(moved) == before.count(urls[3])  # and all of them
    assert 0.06 < len(moved) / len(keys) < 0.14  # about 1/N
    assert owners(urls) == before  # back: the same keys return
    assert max(Counter(before).values()) / (len(keys) / 10) < 1.35  # spread evenly enough


def test_the_ring_is_the_same_in_every_process() -> None:
    """No salted ``hash()``: another interpreter, with another hash seed, agrees."""
    urls = [f"http://10.0.0.{i}:80" for i in range(5)]
    code = (
        "from service.pools.hashring import HashRing, key_hash\n"
        f"r = HashRing([(u, 1) for u in {urls!r}])\n"
        "print([next(r.walk(key_hash(f'k{n}'))) for n in range(50)])\n"
    )
    env = {**os.environ, "PYTHONHASHSEED": "12345"}
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, env=env, capture_output=True, text=True, check=True
    ).stdout
    ring = HashRing([(u, 1) for u in urls])
    assert out.strip() == str([next(ring.walk(key_hash(f"k{n}"))) for n in range(50)])


def test_backoff_is_full_jitter_within_its_bounds() -> None:
    rng = random.Random(7)
    base = 0.025
    for retry in range(1, 9):
        cap = base * min(2 ** (retry - 1), BACKOFF_CAP)
        draws = [backoff(retry, base, rng) for _ in range(2000)]
        assert 0 <= min(draws) < 0.05 * cap  # from (near) zero...
        assert 0.95 * cap < max(draws) <= cap  # ...up to the cap, never above
        assert max(draws) <= 10 * base
    assert backoff(3, 0.0, rng) == 0.0


def test_the_budget_always_allows_three_retries_in_flight() -> None:
    budget = RetryBudget(ratio=0.0)  # RETRY_BUDGET=0: only the floor
    assert [budget.try_spend(1.0) for _ in range(4)] == [True, True, True, False]
    budget.ended()
    assert budget.try_spend(1.0) and not budget.try_spend(1.0)


def test_bad_settings_are_refused_naming_them() -> None:
    base = {"API_GATEWAY_URL": "http://127.0.0.1:1,http://127.0.0.1:2"}
    for extra, named in (
        ({"API_GATEWAY_HASH_ON": "header:X-User"}, "API_GATEWAY_HASH_ON"),
        ({"API_GATEWAY_HASH_BALANCE_FACTOR": "125"}, "API_GATEWAY_HASH_BALANCE_FACTOR"),
        ({"API_GATEWAY_STICKY_COOKIE": "a;b"}, "API_GATEWAY_STICKY_COOKIE"),
        ({"API_GATEWAY_RETRIES": "-1"}, "API_GATEWAY_RETRIES"),
        ({"API_GATEWAY_SLOW_START": "-3"}, "API_GATEWAY_SLOW_START"),
        ({"API_GATEWAY_RETRY_BACKOFF": "x"}, "API_GATEWAY_RETRY_BACKOFF"),
        ({"API_GATEWAY_BALANCE": "hash", "API_GATEWAY_HASH_ON": "query:x"}, "HASH_ON"),
        ({"API_GATEWAY_BALANCE": "hash", "API_GATEWAY_HASH_BALANCE_FACTOR": "90"}, "FACTOR"),
    ):
        with pytest.raises(SettingsError, match=named):
            load_settings({**base, **extra})
    settings = load_settings({**base, "API_GATEWAY_BALANCE": "hash"})
    upstream = settings.upstream(POOL)
    assert (upstream.retries, upstream.retry_backoff, upstream.retry_budget) == (1, 0.025, 20)
    assert (upstream.hash_on, upstream.slow_start, upstream.sticky_cookie) == ("client", 0.0, "")


def test_a_bad_setting_stops_start_up_with_one_line() -> None:
    env = clean_env({"API_GATEWAY_URL": "http://127.0.0.1:1", "API_GATEWAY_HASH_ON": "client"})
    result = sanic_until_exit(env)
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    lines = [line for line in result.stderr.splitlines() if "API_GATEWAY_HASH_ON" in line]
    assert len(lines) == 1 and "BALANCE=hash" in lines[0], result.stderr


def test_a_bad_setting_is_refused_on_reload(tmp_path: Path) -> None:
    a, b = Knob("a").start(), Knob("b").start()
    path = tmp_path / "lb.toml"
    good = _toml([a.url, b.url], 'balance = "hash"\nhash_on = "header:X-User"\n')
    path.write_text(good)
    lb = LoadBalancer(clean_env({"LB_CONFIG": str(path), "LB_ACCESS_LOG": "false"}), workers=None)
    try:
        path.write_text(_toml([a.url, b.url], 'sticky_cookie = "bad cookie"\n'))
        # Known and not yet understood: under load, a SIGHUP sent within moments of a
        # --single-process service first answering was lost (1 run in 5 with both cores
        # busy; never with this pause, 10 of 10). Left for a later session to find; this
        # test is about the refusal, not the start-up race.
        time.sleep(1.0)
        os.kill(lb.process.pid, signal.SIGHUP)
        wait_for(lambda: _lines(lb, "failed, nothing changed"), timeout=15)
        (line,) = _lines(lb, "failed, nothing changed")
        assert "sticky_cookie" in line and "bad cookie" in line
        path.write_text(_toml([a.url, b.url], 'hash_on = "client"\n'))  # without hash
        os.kill(lb.process.pid, signal.SIGHUP)
        wait_for(lambda: len(_lines(lb, "failed, nothing changed")) == 2, timeout=15)
        assert "hash_on" in _lines(lb, "failed, nothing changed")[1]
        assert lb.client.get("/api/x").status_code == 200  # still serving the good file
    finally:
        lb.stop()
        a.stop()
        b.stop()


def _toml(urls: list[str], api_extra: str) -> str:
    return (
        f'[[upstreams]]\nname = "{POOL}"\nurl_env = "ROLL_API_URL"\nurl = "{",".join(urls)}"\n'
        f"{api_extra}\n"
        '[[routes]]\nprefix = "/"\nupstream = "api-gateway"\n'
    )


def _lines(lb: LoadBalancer, needle: str) -> list[str]:
    return [line for line in list(lb.output) if needle in line]


# ------------------------------------------------------------------------ real processes


@pytest.fixture
def knobs() -> Iterator[Callable[..., Knob]]:
    """``knobs(name, host=..., port=..., **switches)``: a started Knob on 127.0.0.x."""
    with knob_maker() as make:
        yield make


@contextmanager
def balancer(targets: list[str], **extra: str) -> Iterator[LoadBalancer]:
    env = clean_env(
        {"API_GATEWAY_URL": ",".join(targets), "LB_ACCESS_LOG": "false", **extra}
    )  # the other upstreams keep their defaults: only /api is proxied here
    lb = LoadBalancer(env, workers=WORKERS)
    try:
        yield lb
    finally:
        lb.stop()


def fresh_get(lb: LoadBalancer, path: str, **kwargs: Any) -> httpx.Response:
    """A GET on a new connection (``Connection: close``), so that either worker may answer
    (a new ``httpx.Client`` each time would cost this busy machine 0.2 s a request)."""
    headers = {"Connection": "close", **kwargs.pop("headers", {})}
    cookies = kwargs.pop("cookies", None)
    if cookies:
        headers["Cookie"] = "; ".join(f"{k}={v}" for k, v in cookies.items())
    lb.client.cookies.clear()  # only what the test sends: no jar of Set-Cookie answers
    return lb.client.get(path, headers=headers, **kwargs)


def pool_targets(lb: LoadBalancer) -> dict[str, dict[str, Any]]:
    stats = fresh_get(lb, "/stats").json()["load-balancer"]["upstreams"][POOL]
    return {t["url"]: t for t in stats["targets"]}


def served_by(response: httpx.Response) -> str:
    assert response.status_code == 200, response.text
    return str(response.json()["upstream"])


def test_a_target_back_from_ejection_slow_starts(knobs: Callable[..., Knob]) -> None:
    a, b = knobs("a", host="127.0.0.2"), knobs("b", host="127.0.0.3")
    window = 3.0
    env = {"API_GATEWAY_SLOW_START": str(window), "API_GATEWAY_FAIL_TIMEOUT": "1"}
    with balancer([a.url, b.url], **env) as lb:
        with httpx.Client(base_url=lb.url, trust_env=False, timeout=10) as client:
            start = Counter(served_by(client.get(f"/api/s{i}")) for i in range(60))
            assert start["b"] >= 15, start  # in rotation from start-up: not ramped
            b.stop()
            wait_for(lambda: client.get("/api/probe") and b.url in _ejected(lb), timeout=10)
            knobs("b", host="127.0.0.3", port=b.port)  # back, while still ejected
            back_in = pool_targets(lb)[b.url]["ejected_for_s"]
            time.sleep(max(back_in, 0.0))  # the ramp starts when the ejection ends
            early: Counter[str] = Counter()
            until = time.monotonic() + window / 5
            while time.monotonic() < until:
                early[served_by(client.get("/api/early"))] += 1
            time.sleep(window)  # the window is over
            late = Counter(served_by(client.get(f"/api/late{i}")) for i in range(200))
    share = early["b"] / sum(early.values())
    assert sum(early.values()) >= 20, early
    assert share < 0.3, early  # 10 % to 28 % of its weight: 9 % to 22 % of the requests
    assert 0.35 < late["b"] / 200 < 0.65, late  # its equal share


def _ejected(lb: LoadBalancer) -> set[str]:
    return {url for url, t in pool_targets(lb).items() if t["state"] == "ejected"}


class Accepting:
    """Accepts a connection, reads the request head, and closes without a byte of answer:
    a target that fails after it took the request. ``arrivals``: (monotonic time, method)."""

    def __init__(self, host: str) -> None:
        self._sock = socket.create_server((host, 0))
        self.url = f"http://{host}:{self._sock.getsockname()[1]}"
        self.arrivals: list[tuple[float, str]] = []
        self._sock.settimeout(0.1)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self._sock.accept()
            except OSError:
                continue
            with conn, suppress(OSError):
                conn.settimeout(2)
                head = conn.recv(65536)
                if head:
                    self.arrivals.append((time.monotonic(), head.split(b" ", 1)[0].decode()))

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()
        self._sock.close()


def test_three_retries_on_four_targets_spaced_by_the_backoff() -> None:
    targets = [Accepting(f"127.0.0.{i}") for i in range(2, 6)]
    base = 0.1
    env = {
        "API_GATEWAY_RETRIES": "3",
        "API_GATEWAY_RETRY_BACKOFF": str(base),
        "API_GATEWAY_MAX_FAILS": "1000",
    }
    try:
        with balancer([t.url for t in targets], **env) as lb:
            assert fresh_get(lb, "/api/get").status_code == 502
            arrivals = sorted((when, i) for i, t in enumerate(targets) for when, _ in t.arrivals)
            assert len(arrivals) == 4 and {i for _, i in arrivals} == {0, 1, 2, 3}, arrivals
            gaps = [b[0] - a[0] for a, b in zip(arrivals, arrivals[1:], strict=False)]
            for n, gap in enumerate(gaps, 1):
                assert gap <= base * 2 ** (n - 1) + 0.25, gaps  # at most its cap (+ slack)
            assert sum(gaps) > 0.02, gaps  # waited (all three near 0: p < 2e-4)
            for target in targets:
                target.arrivals.clear()
            with httpx.Client(base_url=lb.url, trust_env=False, timeout=10) as client:
                assert client.post("/api/post", content=b"x").status_code == 502
            assert sum(len(t.arrivals) for t in targets) == 1  # a POST is not retried
    finally:
        for target in targets:
            target.stop()


def test_hash_on_a_header_keeps_keys_and_moves_only_a_leavers(knobs: Callable[..., Knob]) -> None:
    servers = [knobs(f"t{i}", host=f"127.0.0.{i + 2}") for i in range(4)]
    env = {
        "API_GATEWAY_BALANCE": "hash",
        "API_GATEWAY_HASH_ON": "header:X-User",
        "API_GATEWAY_FAIL_TIMEOUT": "1",
    }
    keys = [f"user-{n}" for n in range(40)]
    with balancer([s.url for s in servers], **env) as lb:

        def homes() -> dict[str, str]:
            found = {}
            for key in keys:
                seen = {served_by(fresh_get(lb, "/api/h", headers={"X-User": key}))}
                seen.add(served_by(fresh_get(lb, "/api/h", headers={"X-User": key})))
                assert len(seen) == 1, (key, seen)  # one key, one target, in either worker
                found[key] = seen.pop()
            return found

        before = homes()
        assert len(set(before.values())) == 4, Counter(before.values())
        victim = servers[1]
        victim.stop()
        during = homes()  # the first request to it fails over (a retry), then it is ejected
        moved = {k for k in keys if during[k] != before[k]}
        assert moved == {k for k in keys if before[k] == "t1"}, (moved, before)
        knobs("t1", host=victim.host, port=victim.port)
        wait_for(lambda: not _ejected(lb), timeout=10)
        assert homes() == before  # its keys came back
        without = Counter(served_by(fresh_get(lb, "/api/h")) for _ in range(20))
        assert len(without) >= 2, without  # no key: least_request


def test_bounded_loads_spread_a_hot_key(knobs: Callable[..., Knob]) -> None:
    servers = [knobs(f"t{i}", host=f"127.0.0.{i + 2}", delay=0.4) for i in range(4)]
    env = {
        "API_GATEWAY_BALANCE": "hash",
        "API_GATEWAY_HASH_ON": "header:X-User",
        "API_GATEWAY_HASH_BALANCE_FACTOR": "125",
    }
    with balancer([s.url for s in servers], **env) as lb:
        home = served_by(fresh_get(lb, "/api/one", headers={"X-User": "hot"}))
        barrier = threading.Barrier(16)

        def one(_: int) -> str:
            barrier.wait()
            return served_by(fresh_get(lb, "/api/hot", headers={"X-User": "hot"}))

        with ThreadPoolExecutor(max_workers=16) as pool:
            spread = Counter(pool.map(one, range(16)))
    # unbounded, all 16 would go to the key's target; bounded, no target takes much more
    # than 1.25 x its share of what is in flight (per worker) and the rest overflows
    assert len(spread) >= 3, spread
    assert spread[home] <= 8, (home, spread)


def test_a_sticky_cookie_keeps_a_client_on_one_target(knobs: Callable[..., Knob]) -> None:
    servers = [knobs(f"t{i}", host=f"127.0.0.{i + 2}") for i in range(3)]
    with balancer([s.url for s in servers], API_GATEWAY_STICKY_COOKIE="lb_sticky") as lb:
        first = fresh_get(lb, "/api/first")
        cookie = first.headers["set-cookie"]
        value = cookie.split(";", 1)[0].split("=", 1)[1]
        assert cookie == f"lb_sticky={value}; Path=/; HttpOnly; SameSite=Lax"
        home = served_by(first)
        (home_server,) = [s for s in servers if s.name == home]
        assert value == sticky_id(POOL, home_server.url)  # the same in every process
        assert "127.0.0" not in value and str(home_server.port) not in value
        for _ in range(30):  # new connections: both workers answer some
            again = fresh_get(lb, "/api/again", cookies={"lb_sticky": value})
            assert served_by(again) == home and "set-cookie" not in again.headers
        tampered = fresh_get(lb, "/api/t", cookies={"lb_sticky": value[:-1] + "x"})
        assert tampered.status_code == 200 and "set-cookie" in tampered.headers

        home_server.stop()  # leaves rotation: served by another, and a new cookie
        moved = fresh_get(lb, "/api/moved", cookies={"lb_sticky": value})
        assert served_by(moved) != home
        new_value = moved.headers["set-cookie"].split(";", 1)[0].split("=", 1)[1]
        assert new_value != value
        for _ in range(10):
            assert served_by(fresh_get(lb, "/api/n", cookies={"lb_sticky": new_value})) == (
                served_by(moved)
            )
