"""What the benchmarks share: processes, nginx, the load balancer, wrk, /proc accounting, py-spy,
and the ``--smoke`` mode.

Used by every script in bench/. The load-balancer process, free ports, the /proc helpers and
the stdlib upstream servers are the tests' own (:mod:`tests.support`).
Everything listens on 127.0.0.1 on ephemeral ports; every process started through
:class:`Processes` (or :func:`launch_lb`) runs in its own session and is stopped (SIGTERM,
then SIGKILL of the whole session) by ``close``.

CPU pinning (``taskset``, 2 cores): a 1-worker load balancer on :data:`LB_CPUS`, nginx and
wrk on :data:`LOAD_CPUS`.

How the benchmarks measure: wrk with one thread, 32 keep-alive connections, ``--latency``;
the 1-worker load balancer on CPU 0, nginx, wrk and the script's own servers on CPU 1. Each
run also records the serving process tree's CPU µs per request and the "other load" (CPUs
busy with processes outside the run). Why side by side: bench/README.md. Results go to
bench/results/ as JSON.

Smoke runs (``--smoke``, what tests/test_bench.py runs): seconds, tiny sizes, every code path
of the script. A peer (nginx, wrk, py-spy) is never used, installed or not: it is reported and
replaced where the run needs one (``bench/_upstream.py`` for nginx, ``bench/_wrk.py`` for wrk)
or skipped (py-spy); in a full run a missing peer is an error. What the script starts itself
(the load balancer, Redis, dnsmasq) must start either way.
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import http.client
import json
import math
import os
import re
import shutil
import signal
import ssl
import statistics
import subprocess
import sys
import time
import tempfile
import urllib.request
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from tests import support
from tests.support import REPO, children, clean_env, cpu_ticks, free_port

RESULTS = REPO / "bench" / "results"
BIN = Path(sys.executable).parent
# the peers the comparisons run beside this service (/work/shared/peers: the Go original's
# build script, the bare Sanic proxy)
PEERS = Path("/work/shared/peers")
BARE_SANIC = PEERS / "minimal_sanic_proxy.py"
URL_VARS = tuple(support.URL_VARS.values())  # the environment variables of the upstreams' URLs
LB_CPUS, LOAD_CPUS = "0", "1"


# ------------------------------------------------------------------------ smoke, peers


class Mode:
    """Whether this process is a smoke run: set once by :func:`run_bench`, before any peer is
    asked for (a benchmark process is one run, so this is process-wide on purpose)."""

    smoke: ClassVar[bool] = False
    absent: ClassVar[set[str]] = set()
    results: ClassVar[Path] = RESULTS  # a smoke run's go to its temporary folder


def require(peer: str) -> bool:
    """Whether to use the program ``peer``. A full run needs it installed (an error if not).
    A smoke run never uses it, installed or not, so that it runs the same on every machine
    (the stand-ins take short durations that wrk refuses): reported once, and False (the
    caller uses its stand-in or skips that part)."""
    if not Mode.smoke:
        if shutil.which(peer) or (BIN / peer).exists():
            return True
        raise RuntimeError(f"{peer} is not installed (bench/README.md says where to get it)")
    if peer not in Mode.absent:
        Mode.absent.add(peer)
        print(f"peer {peer}: not used (smoke run: a stand-in or that part skipped)", flush=True)
    return False


def micro_calls(calls: int) -> int:
    """Calls per timing of an in-process micro-benchmark: a thousandth in a smoke run."""
    return max(calls // 1000, 10) if Mode.smoke else calls


def control_wanted(no_control: bool = False) -> bool:
    """Whether to run the A/A control (the noise floor: the base twice): not in a smoke run,
    where figures mean nothing and each load balancer costs a start (it says so)."""
    if Mode.smoke:
        print("control: skipped (smoke)", flush=True)
        return False
    return not no_control


def warm(url: str, connections: int, pin: bool) -> None:
    """2 s of wrk (0.1 s in a smoke run): pools filled, first-request costs paid."""
    run_wrk(url, 0.1 if Mode.smoke else 2, connections, pin)


def peer_path(peer: str) -> str:
    return shutil.which(peer) or str(BIN / peer)


NGINX_HEAD = """\
worker_processes 1;
pid {tmp}/nginx.pid;
error_log {tmp}/nginx-error.log warn;
daemon off;
events {{ worker_connections 1024; }}
http {{
    access_log off;
    client_body_temp_path {tmp}/body;
    proxy_temp_path {tmp}/proxy;
    fastcgi_temp_path {tmp}/fastcgi;
    uwsgi_temp_path {tmp}/uwsgi;
    scgi_temp_path {tmp}/scgi;
    keepalive_requests 1000000;
    keepalive_timeout 75s;
"""
NGINX_SERVER = """\
    server {{
        listen 127.0.0.1:{port};
        location / {{
            default_type application/json;
            return 200 '{{"ok":true}}';
        }}
        location /api/body/ {{
            root {tmp}/www;
            default_type application/octet-stream;
        }}
        location = /api/body/sse {{
            root {tmp}/www;
            default_type text/event-stream;
            ssi on;  # SSI output has no length: nginx sends it chunked
            ssi_types text/event-stream;
        }}
    }}
"""
# Bodies nginx serves under /api/body/: a name, and its file's content.
BODIES = {
    "16k": b"x" * 16 * 1024,
    "1m": b"y" * 1024 * 1024,
    "sse": b'data: 1\n\n<!--# echo var="uri" -->\ndata: 2\n\n',
}


def interrupt_on_signals() -> None:
    """SIGTERM/SIGHUP end a run through the same ``finally`` as an error or Ctrl-C does."""

    def interrupted(signum: int, frame: object) -> None:
        raise KeyboardInterrupt(signal.Signals(signum).name)

    signal.signal(signal.SIGTERM, interrupted)
    signal.signal(signal.SIGHUP, interrupted)


def can_pin(no_pin: bool = False) -> bool:
    return not no_pin and os.cpu_count() not in (None, 1)


# ---------------------------------------------------------------------------- processes


class Processes:
    """Every process this script starts, each in its own session, all stopped in ``close``."""

    def __init__(self, pin: bool, logs: Path) -> None:
        self.pin = pin
        self.logs = logs
        self._started: list[subprocess.Popen[bytes]] = []
        self._balancers: list[LoadBalancer] = []

    def adopt(self, lb: LoadBalancer) -> LoadBalancer:
        """A load balancer started elsewhere (:func:`launch_lb`), to be stopped in ``close``."""
        self._balancers.append(lb)
        return lb

    def start(
        self, name: str, argv: list[str], *, cpus: str | None, env: dict[str, str] | None = None
    ) -> subprocess.Popen[bytes]:
        if cpus and self.pin:
            argv = ["taskset", "-c", cpus, *argv]
        with open(self.logs / f"{name}.log", "wb") as log:
            proc = subprocess.Popen(
                argv,
                cwd=REPO,
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        self._started.append(proc)
        return proc

    def stop(self, proc: subprocess.Popen[bytes], timeout: float = 10.0) -> None:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout)
        # whatever is left of its session (workers of a killed main process...)
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        with contextlib.suppress(ValueError):
            self._started.remove(proc)

    def close(self) -> None:
        while self._balancers:
            lb = self._balancers.pop()
            lb.stop(timeout=10.0)
            # whatever is left of its session (workers of a killed main process...)
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(lb.process.pid, signal.SIGKILL)
        while self._started:
            self.stop(self._started[-1])

    def print_logs(self, lines: int = 15) -> None:
        for log in sorted(self.logs.glob("*.log")):
            tail = log.read_text(errors="replace").splitlines()[-lines:]
            print(f"--- {log.name}\n" + "\n".join(tail), file=sys.stderr)


def tree_ticks(proc: subprocess.Popen[bytes]) -> int:
    """CPU ticks of a process and all its descendants (a load balancer and its workers)."""
    return sum(cpu_ticks(pid) for pid in [proc.pid, *children(proc.pid)])


def busy_ticks() -> int:
    """Ticks all CPUs spent not idle, from /proc/stat."""
    fields = Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]
    user, nice, system, _idle, _iowait, irq, softirq, steal = (int(f) for f in fields[:8])
    return user + nice + system + irq + softirq + steal


def wait_http(url: str, proc: subprocess.Popen[bytes], timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{proc.args} exited with {proc.returncode} before serving {url}")
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                if response.status == 200:
                    return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"{url} did not answer 200 within {timeout:.0f} s")


def machine_load() -> str:
    """The load averages of /proc/loadavg (what ``uptime`` shows), for the record."""
    loads = Path("/proc/loadavg").read_text().split()[:3]
    return f"load average {' '.join(loads)} ({os.cpu_count()} CPUs)"


# -------------------------------------------------------------------------------- nginx


def start_nginx_ports(
    procs: Processes, tmp: Path, count: int
) -> tuple[list[str], subprocess.Popen[bytes]]:
    """One nginx (one worker, on LOAD_CPUS) answering ``{"ok":true}`` on ``count`` ports."""
    ports = [free_port() for _ in range(count)]
    conf = tmp / "nginx.conf"
    (tmp / "www" / "api" / "body").mkdir(parents=True, exist_ok=True)
    tmp.chmod(0o755)  # nginx's workers run as another user: they must reach www/
    for name, content in BODIES.items():
        (tmp / "www" / "api" / "body" / name).write_bytes(content)
    servers = "".join(NGINX_SERVER.format(port=port, tmp=tmp) for port in ports)
    conf.write_text(NGINX_HEAD.format(tmp=tmp) + servers + "}\n")
    files = {"/api/body/": tmp / "www" / "api" / "body"}
    proc = start_upstream(procs, "nginx", conf, ports, files, cpus=LOAD_CPUS)
    urls = [f"http://127.0.0.1:{port}" for port in ports]
    for url in urls:
        wait_http(url + "/", proc)
    return urls, proc


def start_upstream(
    procs: Processes,
    name: str,
    conf: Path,
    ports: list[int],
    files: Mapping[str, Path],
    *,
    cpus: str | None,
) -> subprocess.Popen[bytes]:
    """nginx with ``conf``; in a smoke run without nginx, its stand-in (bench/_upstream.py)
    on ``ports``, serving ``files`` (URL prefix -> folder) as the configuration does."""
    if require("nginx"):
        return procs.start(name, ["nginx", "-p", str(conf.parent), "-c", str(conf)], cpus=cpus)
    argv = [sys.executable, "-m", "bench._upstream"]
    argv += [f"--files={prefix}={folder}" for prefix, folder in files.items()]
    return procs.start(name, [*argv, *map(str, ports)], cpus=cpus)


def start_nginx(procs: Processes, tmp: Path) -> tuple[str, subprocess.Popen[bytes]]:
    urls, proc = start_nginx_ports(procs, tmp, 1)
    return urls[0], proc


# ------------------------------------------------------------------------ load balancer


class LoadBalancer(support.LoadBalancer):
    """The tests' load-balancer process, with what the benchmarks ask of it."""

    @property
    def variant(self) -> str:
        return self.name

    @variant.setter
    def variant(self, value: str) -> None:
        self.name = value

    @property
    def proc(self) -> subprocess.Popen[bytes]:
        return self.process

    def worker_pids(self) -> list[int]:
        return children(self.proc.pid) or [self.proc.pid]

    def busiest_worker(self) -> int:
        return max(self.worker_pids(), key=cpu_ticks)

    def serving_workers(self) -> list[int]:
        """The main process's descendants that hold the listening socket: Sanic's workers.

        (Its other children, multiprocessing's resource tracker and, in a baseline from
        before the sync manager ran in the main process's threads, Sanic's spawned sync
        manager, serve nothing.)
        """
        inodes = set()
        for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
            fields = line.split()
            if fields[3] == "0A" and int(fields[1].rsplit(":", 1)[1], 16) == self.port:  # LISTEN
                inodes.add(f"socket:[{fields[9]}]")
        workers = []
        for pid in children(self.proc.pid):
            with contextlib.suppress(OSError):
                fds = Path(f"/proc/{pid}/fd")
                if any(os.readlink(fd) in inodes for fd in fds.iterdir()):
                    workers.append(pid)
        return workers


def lb_env(
    urls: Mapping[str, str], extra: Mapping[str, str] | None = None, repo: Path = REPO
) -> dict[str, str]:
    """The environment of a load balancer: ours minus LB_/SANIC_/BENCH_, plus ``urls``.

    The access log is off unless ``extra`` turns it on, so that figures stay comparable with
    those taken before it existed; bench/access_log_cost.py measures it."""
    return clean_env({"LB_ACCESS_LOG": "false", **urls, **(extra or {}), "PYTHONPATH": str(repo)})


def launch_lb(
    procs: Processes,
    *,
    name: str,
    app: str,
    env: dict[str, str],
    workers: int = 1,
    ready: Iterable[str] = ("/lb-health", "/api/x"),
    repo: Path = REPO,
    tls: ssl.SSLContext | None = None,
) -> LoadBalancer:
    """``sanic <app>`` on an ephemeral port, no access logs; a 1-worker one is pinned to
    LB_CPUS. Its output goes to ``lb-<name>.log`` in ``procs.logs``; ``procs.close`` stops it.
    ``tls``: it serves HTTPS (``LB_TLS_*`` in ``env``), its URL is ``https://`` and its
    readiness is checked trusting this context (:func:`bench_certificate`).

    In a smoke run a 1-worker load balancer runs ``--single-process`` (one Python process
    to start instead of two: half the CPU, and the same request path); one whose port was
    taken meanwhile by another process (:func:`free_port` closes it before Sanic binds) is
    started again, once, on another port."""
    for attempt in (1, 2):
        try:
            lb = LoadBalancer(
                env,
                workers=None if Mode.smoke and workers == 1 else workers,
                app=app,
                name=name,
                cpus=LB_CPUS if workers == 1 and procs.pin else None,
                args=["--no-access-logs"],
                ready=tuple(ready),
                log=procs.logs / f"lb-{name}.log",
                timeout=30.0,
                repo=repo,
                tls=tls,
            )
        except RuntimeError:
            log = (procs.logs / f"lb-{name}.log").read_text(errors="replace")
            if attempt == 2 or "Address already in use" not in log:
                raise
            continue
        return procs.adopt(lb)
    raise AssertionError("unreachable")


def bench_certificate(folder: Path) -> tuple[str, str, ssl.SSLContext]:
    """An ECDSA P-256 certificate for 127.0.0.1 and localhost, issued by a CA made here, in
    ``folder``: (certificate path, key path, a client context trusting that CA). wrk does
    not verify certificates, so it talks to a load balancer serving this one as is."""
    from tests.support.certs import issue, make_ca  # cryptography: only the TLS scripts'

    ca = make_ca("bench CA")
    cert, key = issue(ca, "bench", ("127.0.0.1", "localhost")).write(folder)
    (folder / "ca.pem").write_bytes(ca.cert_pem)
    return cert, key, ssl.create_default_context(cafile=str(folder / "ca.pem"))


# ---------------------------------------------------------------------------------- wrk

_UNITS = {"us": 1e-3, "ms": 1.0, "s": 1e3, "m": 60e3}


@dataclass
class WrkRun:
    rps: float
    p50_ms: float
    p99_ms: float
    requests: int
    non_2xx: int
    socket_errors: int
    server_cpu_us: float = 0.0  # CPU time of the serving process tree per request
    other_load: float = 0.0  # CPUs kept busy by processes that are not part of the run

    @property
    def errors(self) -> int:
        return self.non_2xx + self.socket_errors


def _ms(text: str) -> float:
    number, unit = re.fullmatch(r"([\d.]+)(us|ms|s|m)", text).groups()  # type: ignore[union-attr]
    return float(number) * _UNITS[unit]


def parse_wrk(output: str) -> WrkRun:
    def find(pattern: str, default: str | None = None) -> str:
        match = re.search(pattern, output, re.MULTILINE)
        if match is None:
            if default is None:
                raise ValueError(f"wrk output lacks {pattern!r}:\n{output}")
            return default
        return match.group(1)

    errors = re.search(
        r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", output
    )
    return WrkRun(
        rps=float(find(r"^Requests/sec:\s+([\d.]+)")),
        p50_ms=_ms(find(r"^\s+50%\s+(\S+)")),
        p99_ms=_ms(find(r"^\s+99%\s+(\S+)")),
        requests=int(find(r"^\s+(\d+) requests in")),
        non_2xx=int(find(r"Non-2xx or 3xx responses: (\d+)", "0")),
        socket_errors=sum(int(n) for n in errors.groups()) if errors else 0,
    )


def wrk_argv(
    url: str, duration: float, connections: int, pin: bool, *, threads: int = 1, script: str = ""
) -> list[str]:
    """wrk's command line; in a smoke run without wrk, its stand-in's (bench/_wrk.py)."""
    wrk = ["wrk"] if require("wrk") else [sys.executable, "-m", "bench._wrk"]
    argv = [
        *wrk,
        f"-t{threads}",
        f"-c{connections}",
        f"-d{duration:g}s",
        "--latency",
        "--timeout",
        "5s",
        *(["-s", script] if script else []),
        url,
    ]
    return ["taskset", "-c", LOAD_CPUS, *argv] if pin else argv


def run_wrk(url: str, duration: float, connections: int, pin: bool) -> WrkRun:
    argv = wrk_argv(url, duration, connections, pin)
    done = subprocess.run(
        argv, capture_output=True, text=True, timeout=duration + 30, check=True, cwd=REPO
    )
    return parse_wrk(done.stdout)


def measure_side_by_side(
    targets: list[tuple[str, subprocess.Popen[bytes]]],
    duration: float,
    connections: int,
    pin: bool,
) -> list[WrkRun]:
    """One wrk per (url, server), all at once: servers pinned to the same CPU share it.

    When the servers compete for one core, the scheduler gives each about the same CPU
    time, so their req/s compare their CPU cost per request, and whatever slows the core
    down meanwhile (the host of a VM, frequency) slows them all alike. ``server_cpu_us`` is
    each server's own; ``other_load`` is not measured (0).
    """
    before = [tree_ticks(server) for _url, server in targets]
    procs = [
        subprocess.Popen(
            wrk_argv(url, duration, connections, pin),
            cwd=REPO,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for url, _server in targets
    ]
    try:
        outputs = [proc.communicate(timeout=duration + 30)[0] for proc in procs]
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    after = [tree_ticks(server) for _url, server in targets]
    hz = os.sysconf("SC_CLK_TCK")
    runs = []
    for output, ticks_before, ticks_after in zip(outputs, before, after, strict=True):
        run = parse_wrk(output)
        run.server_cpu_us = (ticks_after - ticks_before) / hz * 1e6 / max(run.requests, 1)
        runs.append(run)
    return runs


def measure_wrk(
    url: str,
    server: subprocess.Popen[bytes],
    others: Iterable[subprocess.Popen[bytes]],
    duration: float,
    connections: int,
    pin: bool,
) -> WrkRun:
    """One wrk run, with ``server``'s CPU per request and the machine's foreign load.

    ``others`` are the run's other processes (nginx behind a load balancer): their CPU is
    neither the server's nor foreign.
    """
    ours = [server, *(p for p in others if p is not server)]
    before = [tree_ticks(p) for p in ours], busy_ticks(), os.times(), time.monotonic()
    run = run_wrk(url, duration, connections, pin)
    after = [tree_ticks(p) for p in ours], busy_ticks(), os.times(), time.monotonic()
    hz = os.sysconf("SC_CLK_TCK")
    served = after[0][0] - before[0][0]
    wrk = (after[2].children_user + after[2].children_system) - (
        before[2].children_user + before[2].children_system
    )
    foreign = (after[1] - before[1]) - (sum(after[0]) - sum(before[0])) - wrk * hz
    run.server_cpu_us = served / hz * 1e6 / max(run.requests, 1)
    run.other_load = max(foreign, 0) / hz / (after[3] - before[3])
    return run


def pss_kib(pid: int) -> int:
    """Proportional set size of a process and its descendants (shared pages split among
    the processes that share them, so the sum is the tree's real footprint), in KiB."""
    total = 0
    for each in (pid, *children(pid)):
        try:
            for line in Path(f"/proc/{each}/smaps_rollup").read_text().splitlines():
                if line.startswith("Pss:"):
                    total += int(line.split()[1])
        except OSError:
            continue
    return total


def median(runs: list[WrkRun], field: str) -> float:
    return statistics.median(getattr(run, field) for run in runs)


# ------------------------------------------------- cases, interleaved runs, side by side


@dataclass
class Case:
    label: str
    lb: LoadBalancer

    @property
    def url(self) -> str:
        return self.lb.url + "/api/x"


def bench_env(urls: dict[str, str], extra: dict[str, str] | None = None) -> dict[str, str]:
    """A load balancer's environment, with one hash seed for all (fewer per-instance quirks)."""
    return lb_env(urls, {"PYTHONHASHSEED": "0", **(extra or {})})


def get_json(base: str, path: str, timeout: float = 10.0) -> Any:
    host, port = base.removeprefix("http://").split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=timeout)
    try:
        conn.request("GET", path)
        response = conn.getresponse()
        body = response.read()
        if response.status != 200:
            raise RuntimeError(f"GET {base}{path}: HTTP {response.status}")
        return json.loads(body)
    finally:
        conn.close()


def interleaved(
    cases: list[Case],
    *,
    repeats: int,
    duration: float,
    connections: int,
    pin: bool,
    nginx: subprocess.Popen[bytes],
    warm_up: bool = True,
    also: Iterable[subprocess.Popen[bytes]] = (),
) -> dict[str, list[WrkRun]]:
    """Every case once per repeat, the order rotated each repeat; medians are taken later.
    ``also``: more processes of the run besides nginx (Redis, dnsmasq), whose CPU is then not
    counted as other load."""
    others = [nginx, *also]
    for case in cases if warm_up else ():  # pools filled, first-request costs paid
        warm(case.url, connections, pin)
    results: dict[str, list[WrkRun]] = {case.label: [] for case in cases}
    for rep in range(repeats):
        shift = rep % len(cases)
        for case in cases[shift:] + cases[:shift]:
            run = measure_wrk(case.url, case.lb.proc, others, duration, connections, pin)
            results[case.label].append(run)
            print(
                f"  rep {rep + 1}/{repeats} {case.label:<30} {run.rps:>9,.0f} req/s "
                f"{run.server_cpu_us:6.0f} µs CPU/req  other load {run.other_load:4.2f} CPU"
                + (f"  ERRORS {run.errors}" if run.errors else ""),
                flush=True,
            )
    return results


def print_runs_table(
    cases: list[Case], results: dict[str, list[WrkRun]], base: str, base_name: str
) -> None:
    base_rps = median(results[base], "rps")
    base_cpu = median(results[base], "server_cpu_us")
    print(
        f"\n{'case':<30} {'req/s':>8} {'p50 ms':>7} {'p99 ms':>7} {'/' + base_name:>8} "
        f"{'CPU µs/req':>10} {'Δ CPU µs':>8} {'other':>6}  {'runs (req/s)':<40} errors"
    )
    for case in cases:
        runs = results[case.label]
        rps = median(runs, "rps")
        cpu = median(runs, "server_cpu_us")
        spread = " ".join(f"{r.rps:,.0f}" for r in runs)
        print(
            f"{case.label:<30} {rps:>8,.0f} {median(runs, 'p50_ms'):>7.2f} "
            f"{median(runs, 'p99_ms'):>7.2f} {rps / base_rps:>8.3f} {cpu:>10.1f} "
            f"{cpu - base_cpu:>+8.1f} {median(runs, 'other_load'):>6.2f}  {spread:<40} "
            f"{sum(r.errors for r in runs)}"
        )
    print(
        "CPU µs/req: CPU time of the load balancer (main process + worker) per request; "
        "other: CPUs busy with processes outside this run (should be ~0)."
    )


@dataclass
class Pairs:
    ratios: list[float] = field(default_factory=list)  # X req/s / base req/s, one per run
    cpu_ratios: list[float] = field(default_factory=list)  # base CPU/req / X CPU/req
    rps: list[tuple[float, float]] = field(default_factory=list)  # (base, X)
    errors: int = 0


def ratio(a: float, b: float) -> float:
    """a / b; NaN for b 0 (a smoke run's few requests may cost less than one CPU tick)."""
    return a / b if b else math.nan


def side_by_side(
    base: Case,
    others: list[Case],
    *,
    repeats: int,
    duration: float,
    connections: int,
    pin: bool,
) -> dict[str, Pairs]:
    """Each X loaded at the same time as ``base``, both on the load balancer's core.

    Whatever slows the core down during a run slows both alike, so the ratio of their
    req/s is the ratio of their costs per request, free of the drift between runs that
    dominates one-at-a-time figures on a VM. Each pair runs in both orders (whose wrk
    starts first), which cancels any advantage of the order.
    """
    pairs = {case.label: Pairs() for case in others}
    for rep in range(repeats):
        for case in others:
            for first, second in ((base, case), (case, base)):
                runs = measure_side_by_side(
                    [(first.url, first.lb.proc), (second.url, second.lb.proc)],
                    duration, connections, pin,
                )  # fmt: skip
                by = {first.label: runs[0], second.label: runs[1]}
                x, b = by[case.label], by[base.label]
                pair = pairs[case.label]
                pair.ratios.append(ratio(x.rps, b.rps))
                pair.cpu_ratios.append(ratio(b.server_cpu_us, x.server_cpu_us))
                pair.rps.append((b.rps, x.rps))
                pair.errors += x.errors + b.errors
            print(
                f"  rep {rep + 1}/{repeats} {case.label:<32} / {base.label}: "
                + " ".join(f"{r:.3f}" for r in pairs[case.label].ratios[-2:]),
                flush=True,
            )
    return pairs


def pairs_if_asked(
    args: argparse.Namespace, pin: bool, base: Case, others: list[Case], title: str, note: str = ""
) -> dict[str, Pairs]:
    """With ``--pair-repeats``: ``base`` and each of ``others`` loaded at once
    (:func:`side_by_side`), headed ``title`` (what is loaded) and printed; else nothing."""
    if not args.pair_repeats:
        return {}
    print(
        f"\n{title} (one wrk each, -d{args.pair_duration:g}s), sharing CPU {LB_CPUS}; both "
        f"orders, {args.pair_repeats} repeats{note}"
    )
    pairs = side_by_side(
        base, others, repeats=args.pair_repeats, duration=args.pair_duration,
        connections=args.connections, pin=pin,
    )  # fmt: skip
    print_pairs(base, others, pairs)
    return pairs


def print_pairs(base: Case, others: list[Case], pairs: dict[str, Pairs]) -> None:
    print(
        f"\n{'case':<32} {'X/' + base.label.split()[0] + ' req/s':>12} {'min':>6} {'max':>6} "
        f"{'CPU ratio':>9} {'req/s (base, X)':>18} {'runs':>5} errors"
    )
    for case in others:
        pair = pairs[case.label]
        b = statistics.median(r[0] for r in pair.rps)
        x = statistics.median(r[1] for r in pair.rps)
        print(
            f"{case.label:<32} {statistics.median(pair.ratios):>12.3f} {min(pair.ratios):>6.3f} "
            f"{max(pair.ratios):>6.3f} {statistics.median(pair.cpu_ratios):>9.3f} "
            f"{b:>8,.0f} {x:>8,.0f} {len(pair.ratios):>5} {pair.errors}"
        )
    print(
        "X/base req/s: median over the runs (both orders) of X's req/s over the base's in the "
        "same run; CPU ratio: base's CPU µs/req over X's."
    )


def save(kind: str, stamp: str, document: dict[str, Any]) -> None:
    out = Mode.results / f"stats-bench-{kind}-{stamp}.json"
    out.write_text(json.dumps(document, indent=2, default=str))
    print(f"raw results: {out.relative_to(REPO) if out.is_relative_to(REPO) else out}")


def percentile(values: list[float], p: float) -> float:
    """Nearest-rank percentile (p in 0..100)."""
    ordered = sorted(values)
    return ordered[max(0, math.ceil(p / 100 * len(ordered)) - 1)]


def check_frames(frames: Mapping[str, str]) -> None:
    """Fail loudly if a profile filter names a file or a function that is not in the checkout
    (a filter gone stale would otherwise read 0 %). Each part is ``function (path`` as
    :func:`frame_name` spells a frame; every script calls this at its start, smoke runs too."""
    for name, part in frames.items():
        match = re.fullmatch(r"(?:\w*\.)?(\w+) \((\S+\.py)", part)
        if match is None:
            raise ValueError(f"profile filter {name!r}: {part!r} is not 'function (path.py'")
        function, path = match.groups()
        source = REPO / path
        if not source.is_file():
            raise ValueError(f"profile filter {name!r} names {path}, which does not exist")
        if not re.search(rf"\bdef {function}\b", source.read_text()):
            raise ValueError(f"profile filter {name!r}: {path} has no function {function}")


def frame_shares(raw: Path, frames: dict[str, str]) -> dict[str, float]:
    """Inclusive share (%) of a py-spy profile's samples per frame; ``frames``: name -> part of
    the frame as :func:`bench.harness.frame_name` spells it (``[Class.]function (path``)."""
    check_frames(frames)
    total, _own, inclusive = read_profile(raw)
    out = {
        name: 100 * sum(n for frame, n in inclusive.items() if part in frame) / total
        if total
        else 0.0
        for name, part in frames.items()
    }
    out["samples"] = float(total)
    return out


# ------------------------------------------------------------------------ running one


def bench_parser(doc: str) -> argparse.ArgumentParser:
    """A benchmark script's parser: its docstring's first paragraph, and the common options."""
    parser = argparse.ArgumentParser(
        description=doc.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--connections", type=int, default=32, help="wrk connections (32)")
    parser.add_argument("--no-pin", action="store_true", help="do not use taskset")
    parser.add_argument(
        "--smoke", action="store_true",
        help="seconds, tiny sizes, no peer required: does the benchmark still run end to end",
    )  # fmt: skip
    return parser


def add_run_options(
    parser: argparse.ArgumentParser, *, duration: float, repeats: int, what: str
) -> None:
    """--duration, --repeats, --pair-repeats, --pair-duration: the interleaved one-at-a-time
    runs (medians) and the side-by-side pairs (:func:`side_by_side`)."""
    parser.add_argument(
        "--duration", type=float, default=duration, help=f"seconds per wrk run ({duration:g})"
    )
    parser.add_argument(
        "--repeats", type=int, default=repeats, help=f"runs per {what}; medians ({repeats})"
    )
    parser.add_argument(
        "--pair-repeats", type=int, default=2, help="side-by-side repeats, 0 to skip (2)"
    )
    parser.add_argument("--pair-duration", type=float, default=5.0, help="seconds per pair run (5)")


Bench = Callable[[argparse.Namespace, Processes, Path, str], None]


def run_bench(kind: str, args: argparse.Namespace, bench: Bench, smoke: Mapping[str, Any]) -> int:
    """``bench(args, procs, tmp, stamp)`` with every process it starts stopped at the end,
    on error, Ctrl-C or SIGTERM; the exit status. With ``--smoke``, ``smoke`` overrides the
    arguments (short runs, small sizes, every optional part on), pinning is off (the
    machine is someone else's too) and results go to the temporary folder."""
    interrupt_on_signals()
    if unknown := set(smoke) - set(vars(args)):
        raise ValueError(f"{kind}: smoke settings for options it does not have: {unknown}")
    Mode.smoke = args.smoke
    if args.smoke:
        vars(args).update({"no_pin": True, **smoke})
    stamp = time.strftime("%Y%m%d-%H%M%S")
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix=f"bench-{kind}-") as tmp:
        Mode.results = Path(tmp) / "results" if args.smoke else RESULTS
        Mode.results.mkdir(parents=True, exist_ok=True)
        procs = Processes(can_pin(args.no_pin), Path(tmp))
        try:
            bench(args, procs, Path(tmp), stamp)
        except KeyboardInterrupt as exc:
            print(f"interrupted ({exc}), cleaning up", file=sys.stderr)
            return 130
        except (RuntimeError, subprocess.SubprocessError, ValueError, OSError, KeyError) as exc:
            print(f"{kind}: {exc!r}", file=sys.stderr)
            procs.print_logs()
            return 1
        finally:
            procs.close()
    print(f"({kind}: {time.monotonic() - started:.0f} s)")
    return 0


# ------------------------------------------------------------------------------ profile


def record_profile(
    procs: Processes,
    lb: LoadBalancer,
    *,
    label: str,
    stamp: str,
    seconds: int,
    connections: int,
    pin: bool,
    native: bool,
    formats: tuple[str, ...] = ("raw", "flamegraph"),
) -> Path | None:
    """Sample the busiest worker with py-spy while wrk loads it; returns the raw profile
    (None in a smoke run without py-spy).

    One recording per format, each under its own wrk load (collapsed stacks to rank frames,
    an SVG to look at).
    """
    if not require("py-spy"):
        return None
    target = lb.url + "/api/x"
    warm(target, connections, pin)  # and makes a worker busiest
    pid = lb.busiest_worker()
    spy = [peer_path("py-spy"), "record", "--pid", str(pid), "--duration", str(seconds),
           "--rate", "250", *(["--native"] if native else ["--nonblocking"])]  # fmt: skip
    raw = Mode.results / f"profile-{label}-{stamp}.txt"
    for fmt in formats:
        out = raw if fmt == "raw" else Mode.results / f"profile-{label}-{stamp}.svg"
        spy_proc = procs.start(f"py-spy-{fmt}", [*spy, "--format", fmt, "-o", str(out)], cpus=None)
        time.sleep(1.0)
        run = run_wrk(target, seconds, connections, pin)
        if spy_proc.wait(seconds + 30) != 0 or not out.exists():
            raise RuntimeError(f"py-spy failed (exit {spy_proc.returncode})")
        print(f"  py-spy {fmt}: {out}  (under load {run.rps:,.0f} req/s)")
    return raw


def read_profile(raw: Path) -> tuple[int, collections.Counter[str], collections.Counter[str]]:
    """py-spy raw (collapsed) stacks -> (samples, self counts, inclusive counts) per frame."""
    own: collections.Counter[str] = collections.Counter()
    inclusive: collections.Counter[str] = collections.Counter()
    total = 0
    for line in raw.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        n = int(count)
        total += n
        frames = [frame_name(f) for f in stack.split(";")[1:]]  # [0] is the thread
        if frames:
            own[frames[-1]] += n
        for frame in set(frames):
            inclusive[frame] += n
    return total, own, inclusive


def print_profile(raw: Path, top: int) -> None:
    total, own, inclusive = read_profile(raw)
    if not total:
        print("  (no samples)")
        return
    print(f"\n  {total} samples; self time (frame that was running):")
    for frame, n in own.most_common(top):
        print(f"    {100 * n / total:5.1f}%  {frame}")
    print("  inclusive time (frame on the stack), service/transport/httpx/aiohttp/sanic frames:")
    shown = 0
    for frame, n in inclusive.most_common():
        if any(
            key in frame
            for key in ("service/", "httpx/", "httpcore/", "aiohttp/", "sanic/", "bench/")
        ):
            print(f"    {100 * n / total:5.1f}%  {frame}")
            shown += 1
            if shown == top:
                break


def frame_name(frame: str) -> str:
    # py-spy raw: "function (path/to/file.py:line)"; keep function and a short path.
    match = re.match(r"(.*) \((.*?):\d+\)$", frame)
    if not match:
        return frame
    function, path = match.groups()
    for marker in ("site-packages/", f"{REPO}/", "lib/python3"):
        if marker in path:
            path = path.split(marker, 1)[1]
            break
    return f"{function} ({path})"
