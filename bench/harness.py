"""What the benchmarks share: processes, nginx, the load balancer, wrk, /proc accounting, py-spy.

Used by ``bench/proxy_bench.py`` and ``bench/stats_bench.py``. Everything listens on
127.0.0.1 on ephemeral ports; every process started through :class:`Processes` runs in its
own session and is stopped (SIGTERM, then SIGKILL of the whole session) by ``close``.

CPU pinning (``taskset``, 2 cores): a 1-worker load balancer on :data:`LB_CPUS`, nginx and
wrk on :data:`LOAD_CPUS`.
"""

from __future__ import annotations

import collections
import contextlib
import os
import re
import signal
import socket
import statistics
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
RESULTS = REPO / "bench" / "results"
BIN = Path(sys.executable).parent
URL_VARS = (
    "API_GATEWAY_URL",
    "DASHBOARD_UI_URL",
    "BLOG_SERVICE_URL",
    "AUTH_SERVICE_URL",
    "USER_SERVICE_URL",
)
LB_CPUS, LOAD_CPUS = "0", "1"

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
    }}
"""


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
        while self._started:
            self.stop(self._started[-1])

    def print_logs(self, lines: int = 15) -> None:
        for log in sorted(self.logs.glob("*.log")):
            tail = log.read_text(errors="replace").splitlines()[-lines:]
            print(f"--- {log.name}\n" + "\n".join(tail), file=sys.stderr)


def children(pid: int) -> list[int]:
    out: list[int] = []
    try:
        tasks = Path(f"/proc/{pid}/task").iterdir()
        for task in tasks:
            for child in (task / "children").read_text().split():
                out += [int(child), *children(int(child))]
    except OSError:
        pass
    return out


def cpu_ticks(pid: int) -> int:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return int(fields[11]) + int(fields[12])
    except (OSError, IndexError):
        return 0


def tree_ticks(proc: subprocess.Popen[bytes]) -> int:
    """CPU ticks of a process and all its descendants (a load balancer and its workers)."""
    return sum(cpu_ticks(pid) for pid in [proc.pid, *children(proc.pid)])


def rss_kib(pid: int) -> int:
    """Resident set size of a process, KiB (0 if it is gone)."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def open_fds(pid: int) -> int:
    try:
        return len(os.listdir(f"/proc/{pid}/fd"))
    except OSError:
        return 0


def busy_ticks() -> int:
    """Ticks all CPUs spent not idle, from /proc/stat."""
    fields = Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]
    user, nice, system, _idle, _iowait, irq, softirq, steal = (int(f) for f in fields[:8])
    return user + nice + system + irq + softirq + steal


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


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
            time.sleep(0.1)
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
    servers = "".join(NGINX_SERVER.format(port=port) for port in ports)
    conf.write_text(NGINX_HEAD.format(tmp=tmp) + servers + "}\n")
    proc = procs.start("nginx", ["nginx", "-p", str(tmp), "-c", str(conf)], cpus=LOAD_CPUS)
    urls = [f"http://127.0.0.1:{port}" for port in ports]
    for url in urls:
        wait_http(url + "/", proc)
    return urls, proc


def start_nginx(procs: Processes, tmp: Path) -> tuple[str, subprocess.Popen[bytes]]:
    urls, proc = start_nginx_ports(procs, tmp, 1)
    return urls[0], proc


# ------------------------------------------------------------------------ load balancer


@dataclass
class LoadBalancer:
    variant: str
    workers: int
    url: str
    proc: subprocess.Popen[bytes]

    def worker_pids(self) -> list[int]:
        return children(self.proc.pid) or [self.proc.pid]

    def busiest_worker(self) -> int:
        return max(self.worker_pids(), key=cpu_ticks)

    def serving_workers(self) -> list[int]:
        """The main process's descendants that hold the listening socket: Sanic's workers.

        (Its other children, multiprocessing's resource tracker and Sanic's spawned helper,
        serve nothing.)
        """
        port = int(self.url.rsplit(":", 1)[1])
        inodes = set()
        for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
            fields = line.split()
            if fields[3] == "0A" and int(fields[1].rsplit(":", 1)[1], 16) == port:  # LISTEN
                inodes.add(f"socket:[{fields[9]}]")
        workers = []
        for pid in children(self.proc.pid):
            with contextlib.suppress(OSError):
                fds = Path(f"/proc/{pid}/fd")
                if any(os.readlink(fd) in inodes for fd in fds.iterdir()):
                    workers.append(pid)
        return workers


def lb_env(urls: Mapping[str, str], extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """The environment of a load balancer: ours minus LB_/SANIC_/BENCH_, plus ``urls``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("LB_", "SANIC_", "BENCH_"))}
    env.update(urls)
    env.update(extra or {})
    env["PYTHONPATH"] = str(REPO)
    return env


def launch_lb(
    procs: Processes,
    *,
    name: str,
    app: str,
    env: dict[str, str],
    workers: int = 1,
    ready: Iterable[str] = ("/lb-health", "/api/x"),
) -> LoadBalancer:
    """``sanic <app>`` on an ephemeral port; a 1-worker one is pinned to LB_CPUS."""
    port = free_port()
    argv = [
        str(BIN / "sanic"), app,
        "--host", "127.0.0.1", "--port", str(port), "--workers", str(workers), "--no-access-logs",
    ]  # fmt: skip
    cpus = LB_CPUS if workers == 1 else None
    proc = procs.start(f"lb-{name}", argv, cpus=cpus, env=env)
    url = f"http://127.0.0.1:{port}"
    for path in ready:
        wait_http(url + path, proc)
    return LoadBalancer(name, workers, url, proc)


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


def wrk_argv(url: str, duration: float, connections: int, pin: bool) -> list[str]:
    argv = [
        "wrk",
        "-t1",
        f"-c{connections}",
        f"-d{duration:g}s",
        "--latency",
        "--timeout",
        "5s",
        url,
    ]
    return ["taskset", "-c", LOAD_CPUS, *argv] if pin else argv


def run_wrk(url: str, duration: float, connections: int, pin: bool) -> WrkRun:
    argv = wrk_argv(url, duration, connections, pin)
    done = subprocess.run(argv, capture_output=True, text=True, timeout=duration + 30, check=True)
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


def median(runs: list[WrkRun], field: str) -> float:
    return statistics.median(getattr(run, field) for run in runs)


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
) -> Path:
    """Sample the busiest worker with py-spy while wrk loads it; returns the raw profile.

    One recording per format, each under its own wrk load (collapsed stacks to rank frames,
    an SVG to look at).
    """
    target = lb.url + "/api/x"
    run_wrk(target, 2, connections, pin)  # warm-up, and makes a worker busiest
    pid = lb.busiest_worker()
    spy = [str(BIN / "py-spy"), "record", "--pid", str(pid), "--duration", str(seconds),
           "--rate", "250", *(["--native"] if native else ["--nonblocking"])]  # fmt: skip
    raw = RESULTS / f"profile-{label}-{stamp}.txt"
    for fmt in formats:
        out = raw if fmt == "raw" else RESULTS / f"profile-{label}-{stamp}.svg"
        spy_proc = procs.start(f"py-spy-{fmt}", [*spy, "--format", fmt, "-o", str(out)], cpus=None)
        time.sleep(1.0)
        run = run_wrk(target, seconds, connections, pin)
        if spy_proc.wait(seconds + 30) != 0 or not out.exists():
            raise RuntimeError(f"py-spy failed (exit {spy_proc.returncode})")
        print(f"  py-spy {fmt}: {out.relative_to(REPO)}  (under load {run.rps:,.0f} req/s)")
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
    for marker in ("site-packages/", "/work/main/", "lib/python3"):
        if marker in path:
            path = path.split(marker, 1)[1]
            break
    return f"{function} ({path})"
