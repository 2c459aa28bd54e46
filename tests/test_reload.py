"""Configuration reload (``service.reload``): a new ``LB_CONFIG`` file taken while serving, on
SIGHUP or by the watch, all or nothing, with nothing in flight dropped.

One ``sanic service.app --workers 2`` serves most tests here, in order, each writing the whole
file it wants and waiting for every worker to log that it runs the new generation.
"""

from __future__ import annotations

import os
import re
import signal
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest
from websockets.sync.client import connect

from tests.support import (
    LoadBalancer,
    UpstreamServer,
    clean_env,
    closed_port_url,
    open_fds,
    python_m_service,
    rss_kib,
    wait_for,
)
from tests.test_ws_passthrough import EchoServer

RUNS = re.compile(r"worker (\d+) runs configuration generation (\d+) ")


@pytest.fixture(scope="module")
def servers() -> Iterator[dict[str, Any]]:
    started: dict[str, Any] = {
        name: UpstreamServer(name).start() for name in ("api", "blog", "ui", "streams")
    }
    started["chat"] = EchoServer()
    yield started
    for server in started.values():
        server.stop()


def config(
    servers: dict[str, Any],
    *,
    routes: tuple[tuple[str, str], ...] = (),
    api: str = "",
    api_extra: str = "",
    streams: bool = True,
    extra: str = "",
) -> str:
    """A whole TOML file: the api/blog/ui pools (and streams/chat unless ``streams`` is
    false), their routes, then ``routes`` (prefix, pool) and ``extra``."""
    pools = [
        ("api-gateway", api or f'"{servers["api"].url}"', "api-gateway"),
        ("blog-service", f'"{servers["blog"].url}"', "blog_service"),
        ("dashboard-ui", f'"{servers["ui"].url}"', None),
    ]
    table = [("/api", "api-gateway"), ("/blog", "blog-service"), ("/", "dashboard-ui")]
    if streams:
        pools += [
            ("streams", f'"{servers["streams"].url}"', None),
            ("chat", f'"{servers["chat"].url}"', None),
        ]
        table += [("/stream", "streams"), ("/chat", "chat")]
    lines = [extra]
    for name, url, key in pools:
        variable = f"RELOAD_{name.upper().replace('-', '_')}_URL"
        lines += ["[[upstreams]]", f'name = "{name}"', f'url_env = "{variable}"']
        lines.append(f"url = {url}")
        if key:
            lines.append(f'stats_key = "{key}"')
        if name == "api-gateway":
            lines.append(api_extra)
    for prefix, pool in (*table, *routes):
        lines += ["[[routes]]", f'prefix = "{prefix}"', f'upstream = "{pool}"']
    return "\n".join(lines) + "\n"


class Reloading:
    """The module's load balancer, its file, and ways to reload it and see it done."""

    def __init__(self, lb: LoadBalancer, path: Path) -> None:
        self.lb = lb
        self.path = path
        self.running = path.read_text()  # the text the workers run

    def generation(self) -> int:
        runs = [int(m.group(2)) for line in list(self.lb.output) if (m := RUNS.search(line))]
        return max(runs, default=1)

    def pids_running(self, generation: int) -> set[str]:
        """The workers that ever logged that they run ``generation``."""
        found = (RUNS.search(line) for line in list(self.lb.output))
        return {m.group(1) for m in found if m and m.group(2) == str(generation)}

    def runs_everywhere(self, generation: int) -> bool:
        return len(self.pids_running(generation)) >= (self.lb.workers or 1)

    def write(self, text: str) -> None:
        temporary = self.path.with_suffix(".new")
        temporary.write_text(text)
        temporary.replace(self.path)

    def sighup(self, text: str, timeout: float = 5.0) -> float:
        """Write ``text``, SIGHUP the main process, wait until every worker runs it (or the
        leader found it unchanged); the seconds that took."""
        self.write(text)
        if text == self.running:
            unchanged = len(self.lines("the file is unchanged")) + 1
            os.kill(self.lb.process.pid, signal.SIGHUP)
            done = lambda: len(self.lines("the file is unchanged")) == unchanged  # noqa: E731
            return wait_for(done, timeout=timeout, step=0.01).elapsed
        target = self.generation() + 1
        os.kill(self.lb.process.pid, signal.SIGHUP)
        took = wait_for(lambda: self.runs_everywhere(target), timeout=timeout, step=0.01).elapsed
        self.running = text
        return took

    def stats(self) -> dict[str, Any]:
        with httpx.Client(base_url=self.lb.url, trust_env=False, timeout=10) as client:
            return client.get("/stats").json()["load-balancer"]

    def lines(self, needle: str) -> list[str]:
        return [line for line in list(self.lb.output) if needle in line]


@pytest.fixture(scope="module")
def reloading(
    servers: dict[str, Any], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Reloading]:
    path = tmp_path_factory.mktemp("reload") / "lb.toml"
    path.write_text(config(servers))
    env = clean_env({"LB_CONFIG": str(path), "LB_ACCESS_LOG": "false"})
    lb = LoadBalancer(env, workers=2)
    yield Reloading(lb, path)
    lb.stop()


def get(lb: LoadBalancer, path: str) -> httpx.Response:
    # a new connection each time, so that either worker may answer
    with httpx.Client(base_url=lb.url, trust_env=False, timeout=10) as client:
        return client.get(path)


def test_a_route_added_and_removed_by_sighup(reloading: Reloading, servers: dict[str, Any]) -> None:
    assert get(reloading.lb, "/extra/x").json()["upstream"] == "ui"
    assert reloading.stats()["config"]["generation"] == 1

    took = reloading.sighup(config(servers, routes=(("/extra", "blog-service"),)))
    assert took < 2.5  # within 1 s when the machine is not loaded
    for _ in range(6):
        assert get(reloading.lb, "/extra/x").json()["upstream"] == "blog"
    config_entry = reloading.stats()["config"]
    assert config_entry["generation"] == 2
    assert config_entry["last_error"] is None
    assert config_entry["reloads"]["applied"] == 1
    assert len(config_entry["sha256"]) == 64

    reloading.sighup(config(servers))
    for _ in range(6):
        assert get(reloading.lb, "/extra/x").json()["upstream"] == "ui"
    assert len(reloading.lines("configuration reloaded (SIGHUP)")) == 2


def test_an_invalid_file_changes_nothing_and_is_reported(
    reloading: Reloading, servers: dict[str, Any]
) -> None:
    before = reloading.stats()["config"]
    bad_url = '"http://127.0.0.1:notaport"'
    broken = config(servers, api=bad_url, routes=(("/extra", "blog-service"),))
    reloading.write(broken)
    os.kill(reloading.lb.process.pid, signal.SIGHUP)
    wait_for(lambda: reloading.lines("failed, nothing changed"), timeout=5)
    (line,) = reloading.lines("failed, nothing changed")
    assert "configuration error: RELOAD_API_GATEWAY_URL='http://127.0.0.1:notaport'" in line
    after = reloading.stats()["config"]
    assert after["generation"] == before["generation"]
    assert after["sha256"] == before["sha256"]
    assert "notaport" in after["last_error"] and after["reloads"]["failed"] == 1
    assert get(reloading.lb, "/extra/x").json()["upstream"] == "ui"  # the route did not come
    assert get(reloading.lb, "/api/x").json()["upstream"] == "api"
    metrics = get(reloading.lb, "/metrics").text
    assert 'lb_config_reloads_total{result="failed"} 1.0' in metrics
    assert "lb_config_last_reload_successful 0.0" in metrics

    # what needs a restart is named and otherwise ignored; the rest applies
    reloading.sighup(config(servers, extra="[server]\nport = 1\nworkers = 7\n"))
    (line,) = reloading.lines("needs a restart")
    assert line.rstrip().endswith("needs a restart (kept as running): LB_PORT, LB_WORKERS")
    after = reloading.stats()["config"]
    assert after["last_error"] is None and after["pending_restart"] == ["LB_PORT", "LB_WORKERS"]
    assert "lb_config_last_reload_successful 1.0" in get(reloading.lb, "/metrics").text


def test_a_stream_and_a_tunnel_survive_a_reload_that_removes_their_pool(
    reloading: Reloading, servers: dict[str, Any]
) -> None:
    reloading.sighup(config(servers))
    streams: UpstreamServer = servers["streams"]
    assert get(reloading.lb, "/stream/warm").json()["upstream"] == "streams"
    events: list[str] = []

    def stream() -> None:
        with httpx.Client(base_url=reloading.lb.url, trust_env=False, timeout=10) as client:
            with client.stream("GET", "/stream/live?sse=12&interval=0.1") as response:
                events.extend(line for line in response.iter_lines() if line.startswith("data:"))

    reader = threading.Thread(target=stream)
    with connect(f"ws://127.0.0.1:{reloading.lb.port}/chat/room") as ws:
        ws.send("before")
        assert ws.recv(timeout=5) == "before"
        reader.start()
        wait_for(lambda: events, timeout=5, step=0.01)
        reloading.sighup(config(servers, streams=False))
        # new requests no longer reach the removed pool...
        assert get(reloading.lb, "/stream/x").json()["upstream"] == "ui"
        assert len(events) < 12
        # ...while the stream and the tunnel that started on it go on
        ws.send("after")
        assert ws.recv(timeout=5) == "after"
        reader.join(10)
    assert len(events) == 12
    assert "streams" not in reloading.stats()["upstreams"]
    # the removed target's pooled connections are closed once their exchange ended
    wait_for(lambda: _connections_to(streams.port) == 0, timeout=5)


def test_a_target_that_stays_keeps_its_ejection(
    reloading: Reloading, servers: dict[str, Any]
) -> None:
    dead = closed_port_url()
    two = f'"{dead}, {servers["api"].url}"'
    passive = "fail_timeout = 60.0\nmax_fails = 1"
    reloading.sighup(config(servers, api=two, api_extra=passive))
    for _ in range(20):
        assert get(reloading.lb, "/api/eject").status_code == 200  # the dead one is retried
    before = _target(reloading.stats(), "api-gateway", dead)
    assert before["state"] == "ejected" and before["ejections"] == 1

    three = f'"{dead}, {servers["api"].url}, {servers["blog"].url};weight=2"'
    reloading.sighup(config(servers, api=three, api_extra=passive + '\nbalance = "round_robin"'))
    stats = reloading.stats()
    after = _target(stats, "api-gateway", dead)
    assert stats["upstreams"]["api-gateway"]["balance"] == "round_robin"
    assert len(stats["upstreams"]["api-gateway"]["targets"]) == 3
    assert after["state"] == "ejected" and after["ejections"] == 1
    assert after["requests"] == before["requests"] and after["failures"] == before["failures"]
    assert after["window_requests"] == before["window_requests"]
    live = _target(stats, "api-gateway", servers["api"].url)
    assert live["requests"] >= 20  # its lifetime count went on


def test_health_checks_follow_a_reload(reloading: Reloading, servers: dict[str, Any]) -> None:
    api: UpstreamServer = servers["api"]
    checks = "health = { path = '/health', interval = 0.2, timeout = 1.0 }"
    reloading.sighup(config(servers, api_extra=checks))
    wait_for(lambda: api.hits["/health"] >= 3, timeout=5)
    target = _target(reloading.stats(), "api-gateway", api.url)
    assert target["health_check"]["verdict"] == "up"

    reloading.sighup(config(servers))
    assert _target(reloading.stats(), "api-gateway", api.url)["health_check"] is None
    time.sleep(0.3)  # a check already on its way may still land
    seen = api.hits["/health"]
    time.sleep(0.6)
    assert api.hits["/health"] == seen  # the checks stopped with the path


def test_a_replacement_worker_starts_on_the_published_configuration(
    reloading: Reloading, servers: dict[str, Any]
) -> None:
    reloading.sighup(config(servers, routes=(("/extra", "blog-service"),)))
    generation = reloading.generation()
    reloading.write("this = is not [ what the host started with")  # a replacement must not read it
    victim = sorted(reloading.pids_running(generation))[0]
    os.kill(int(victim), signal.SIGKILL)
    wait_for(lambda: reloading.lines("died"), timeout=5)
    # the replacement (a third pid) applied the published generation before serving
    wait_for(lambda: len(reloading.pids_running(generation)) == 3, timeout=10)
    for _ in range(6):
        assert get(reloading.lb, "/extra/x").json()["upstream"] == "blog"
    assert reloading.stats()["workers"] == 2


def test_many_reloads_under_load_lose_no_request_and_leak_nothing(
    reloading: Reloading, servers: dict[str, Any]
) -> None:
    files = [
        config(servers, routes=(("/extra", "blog-service"),)),
        config(servers, api=f'"{servers["api"].url}, {servers["blog"].url}"', streams=False),
    ]
    statuses: list[int] = []
    stop = threading.Event()

    def load() -> None:
        with httpx.Client(base_url=reloading.lb.url, trust_env=False, timeout=10) as client:
            while not stop.is_set():
                statuses.append(client.get("/api/load").status_code)

    def measure() -> tuple[int, int]:
        pids = reloading.lb.pids()
        return sum(open_fds(p) for p in pids), sum(rss_kib(p) for p in pids)

    with ThreadPoolExecutor(4) as pool:
        for _ in range(4):
            pool.submit(load)
        try:
            for i in range(10):  # warm up: every object kind made once
                reloading.sighup(files[i % 2])
            fds_before, rss_before = measure()
            for i in range(50):
                reloading.sighup(files[i % 2])
            time.sleep(1.0)  # retired clients close once idle (polled every 0.5 s)
            fds_after, rss_after = measure()
        finally:
            stop.set()
    assert len(statuses) > 200 and set(statuses) == {200}
    assert fds_after <= fds_before + 4, (fds_before, fds_after)
    assert rss_after - rss_before < 4096, (rss_before, rss_after)  # KiB, three processes


def test_mistyped_files_are_refused_with_their_reason_and_reload_goes_on(
    reloading: Reloading, servers: dict[str, Any]
) -> None:
    """A TOML value of the wrong type is a refused file like any other: its reason in
    ``last_error``, and SIGHUP after SIGHUP the leader (whichever worker it is by then)
    goes on, and every worker applies the next good file."""
    reloading.sighup(config(servers))
    generation = reloading.generation()
    mistyped = {
        "upstreams = 5\n": "[[upstreams]]",
        "proxy = 5\n" + config(servers): "[proxy]",
        "routes = [5]\n": "[[routes]] #1",
        config(servers, api_extra="health = 5"): "'api-gateway' health",
        'server = "port"\n' + config(servers): "[server]",
    }
    for text, names in mistyped.items():
        failed = reloading.stats()["config"]["reloads"]["failed"]
        reloading.write(text)
        os.kill(reloading.lb.process.pid, signal.SIGHUP)
        wait_for(lambda: reloading.stats()["config"]["reloads"]["failed"] == failed + 1, 5)  # noqa: B023
        error = reloading.stats()["config"]["last_error"]
        assert names in error and "must be" in error, error
        assert reloading.stats()["config"]["generation"] == generation
    assert not reloading.lines("Traceback")

    reloading.sighup(config(servers, routes=(("/extra", "blog-service"),)))
    assert reloading.generation() == generation + 1
    for _ in range(6):
        assert get(reloading.lb, "/extra/x").json()["upstream"] == "blog"
    assert reloading.stats()["config"]["last_error"] is None


def test_sighup_and_a_configmap_swap_with_a_single_process(
    servers: dict[str, Any], tmp_path: Path
) -> None:
    """A ConfigMap volume: ``lb.toml`` -> ``..data/lb.toml``, ``..data`` -> a timestamped
    directory; an update writes a new directory and renames a new ``..data`` link over the
    old one, atomically."""
    mount = tmp_path / "config"
    mount.mkdir()

    def publish(version: str, text: str) -> None:
        (mount / version).mkdir()
        (mount / version / "lb.toml").write_text(text)
        (mount / "..data_tmp").symlink_to(version)
        (mount / "..data_tmp").replace(mount / "..data")

    publish("..2026_01", config(servers, streams=False))
    (mount / "lb.toml").symlink_to("..data/lb.toml")
    env = clean_env({"LB_CONFIG": str(mount / "lb.toml"), "LB_CONFIG_WATCH": "true"})
    lb = LoadBalancer(env)
    try:
        assert get(lb, "/extra/x").json()["upstream"] == "ui"
        started = time.monotonic()
        publish("..2026_02", config(servers, streams=False, routes=(("/extra", "blog-service"),)))
        wait_for(lambda: get(lb, "/extra/x").json()["upstream"] == "blog", timeout=6, step=0.05)
        assert time.monotonic() - started < 4  # within 2 s on a quiet machine
        assert lb.client.get("/stats").json()["load-balancer"]["config"]["watch"] is True

        (mount / "..2026_02" / "lb.toml").write_text(config(servers, streams=False))  # no swap
        os.kill(lb.process.pid, signal.SIGHUP)
        wait_for(lambda: get(lb, "/extra/x").json()["upstream"] == "ui", timeout=5, step=0.05)
    finally:
        lb.stop()


def test_a_replacement_worker_starts_from_a_start_up_file_over_64_kib(
    servers: dict[str, Any], tmp_path: Path
) -> None:
    """The start-up text reaches every worker whatever its size (here over the 64 KiB a
    reload takes and the 128 KiB an environment variable holds): a replacement started after
    the file changed on disk (no reload asked) runs what the host started with."""
    padding = "".join(f"# {'comment ' * 12}{line}\n" for line in range(2000))
    path = tmp_path / "lb.toml"
    path.write_text(padding + config(servers, streams=False))
    assert path.stat().st_size > 160 * 1024
    lb = LoadBalancer(clean_env({"LB_CONFIG": str(path), "LB_ACCESS_LOG": "false"}), workers=2)
    try:
        pids = _worker_pids(lb)
        handover = _handover_dir(pids[1])
        assert handover.is_dir() and (handover.stat().st_mode & 0o777) == 0o700
        assert get(lb, "/extra/x").json()["upstream"] == "ui"
        changed = config(servers, streams=False, routes=(("/extra", "blog-service"),))
        path.write_text(padding + changed)  # on disk only: no SIGHUP, no watch
        os.kill(pids[0], signal.SIGKILL)
        wait_for(lambda: lb.workers_ready >= 3, timeout=15)
        assert pids[0] not in _worker_pids(lb)
        for _ in range(12):  # new connections: either worker, the replacement included
            assert get(lb, "/extra/x").json()["upstream"] == "ui"
        stats = get(lb, "/stats").json()["load-balancer"]
        assert stats["config"]["last_error"] is None and stats["config"]["generation"] == 1
        refused = [line for line in list(lb.output) if "not appl" in line]
        assert not refused, refused
    finally:
        lb.stop()
    assert not handover.exists()  # removed when the host stopped


def _handover_dir(pid: int) -> Path:
    """The private directory a worker was handed (``service.handover``), from its environment."""
    environ = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    (entry,) = [e for e in environ if e.startswith(b"LB_HANDOVER_DIR=")]
    return Path(entry.split(b"=", 1)[1].decode())


def _worker_pids(lb: LoadBalancer) -> list[int]:
    """The two workers' pids, from ``/stats`` once each has answered a request."""

    def both() -> list[int] | None:
        get(lb, "/lb-health")
        seen = get(lb, "/stats").json()["load-balancer"]["requests_by_worker"]
        return [int(pid) for pid in seen] if len(seen) == 2 else None

    return wait_for(both, timeout=15, step=0.05).value


def test_python_m_service_reloads_on_sighup(servers: dict[str, Any], tmp_path: Path) -> None:
    path = tmp_path / "lb.toml"
    path.write_text(config(servers, streams=False))
    env = clean_env({"LB_CONFIG": str(path)})
    with python_m_service(env) as (process, url):
        assert httpx.get(f"{url}/extra/x", trust_env=False).json()["upstream"] == "ui"
        path.write_text(config(servers, streams=False, routes=(("/extra", "blog-service"),)))
        os.kill(process.pid, signal.SIGHUP)
        wait_for(
            lambda: httpx.get(f"{url}/extra/x", trust_env=False).json()["upstream"] == "blog",
            timeout=5, step=0.05,
        )  # fmt: skip
        assert process.poll() is None
        process.send_signal(signal.SIGTERM)
        assert process.wait(20) == 0


def _target(stats: dict[str, Any], pool: str, url: str) -> dict[str, Any]:
    (found,) = [t for t in stats["upstreams"][pool]["targets"] if t["url"] == url]
    return found


def _connections_to(port: int) -> int:
    """Established TCP connections to 127.0.0.1:``port`` from anyone (here: the workers)."""
    count = 0
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            rows = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for row in rows:
            fields = row.split()
            remote_port = int(fields[2].rsplit(":", 1)[1], 16)
            if remote_port == port and fields[3] == "01":
                count += 1
    return count


def test_sighup_to_the_whole_process_group_makes_one_reload(
    reloading: Reloading, servers: dict[str, Any]
) -> None:
    """``kill -HUP -PGID`` (systemd's ``KillMode=control-group``, a terminal's hangup) reaches
    the main process, both workers and Sanic's sync manager at once: one generation step,
    one line, every process still running."""
    reloading.sighup(config(servers))  # a known starting point
    before = reloading.generation()
    pids = reloading.lb.pids()
    applied = reloading.stats()["config"]["reloads"]["applied"]
    told = len(reloading.lines("configuration reloaded (SIGHUP)"))
    reloading.write(config(servers, routes=(("/group", "blog-service"),)))
    os.killpg(reloading.lb.process.pid, signal.SIGHUP)
    wait_for(lambda: reloading.runs_everywhere(before + 1), timeout=5, step=0.01)
    time.sleep(1.0)  # room for a second (wrong) reload to show
    assert reloading.generation() == before + 1
    assert len(reloading.lines("configuration reloaded (SIGHUP)")) == told + 1
    assert reloading.stats()["config"]["reloads"]["applied"] == applied + 1
    assert reloading.stats()["config"]["generation"] == before + 1
    assert reloading.lb.pids() == pids and reloading.lb.process.poll() is None
    for _ in range(6):
        assert get(reloading.lb, "/group/x").json()["upstream"] == "blog"
    reloading.running = reloading.path.read_text()


def test_a_reload_whose_leader_dies_is_applied_by_the_other_worker(
    reloading: Reloading, servers: dict[str, Any]
) -> None:
    """The leader killed as the reload is asked for: the other worker takes the lease (its
    term is 2 s) and applies the file, and the replacement worker runs it too."""
    reloading.sighup(config(servers, routes=(("/before-failover", "blog-service"),)))
    leader = int(
        re.search(r"worker=(\d+)", reloading.lines("configuration reloaded (SIGHUP)")[-1]).group(1)
    )
    before = reloading.generation()
    survivor = next(int(p) for p in reloading.pids_running(before) if int(p) != leader)
    reloading.write(config(servers, routes=(("/failover", "blog-service"),)))
    os.kill(leader, signal.SIGKILL)
    os.kill(reloading.lb.process.pid, signal.SIGHUP)
    took = wait_for(lambda: str(survivor) in reloading.pids_running(before + 1), timeout=8)
    assert took.elapsed < 4.0  # the lease's term, and the reload itself
    line = reloading.lines("configuration reloaded (SIGHUP)")[-1]
    assert f"worker={survivor}" in line and f"generation {before + 1}" in line
    # the replacement of the dead leader runs it too, and nothing ran it twice
    wait_for(lambda: len(reloading.pids_running(before + 1) - {str(leader)}) == 2, timeout=10)
    assert reloading.generation() == before + 1
    for _ in range(6):
        assert get(reloading.lb, "/failover/x").json()["upstream"] == "blog"
    reloading.running = reloading.path.read_text()
