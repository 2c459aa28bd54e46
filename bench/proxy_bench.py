#!/usr/bin/env python
"""Proxy throughput on this machine, in one bounded invocation, all on 127.0.0.1.

Starts nginx (a constant ``{"ok":true}``) as the upstream, starts the load balancer in front
of it, and drives both with wrk (keep-alive connections, one thread, ``--latency``):

    (a) lb-health   the load balancer's own /lb-health, 1 worker: the framework's ceiling
    (b) proxy w1    /api/x proxied to nginx, 1 worker
    (c) proxy w2    the same, 2 workers
    (d) nginx       the same load straight to nginx: the load generator's side ceiling

(b) and (c) are measured for every ``--transport`` variant (see bench/variant.py). The repeats
are interleaved (rep 1 of every case, then rep 2...) so that drift of the machine spreads
over all cases; the table shows medians. ``--profile`` then samples one 1-worker proxy with
py-spy under the same load and prints where its time goes.

Besides wrk's req/s, p50 and p99, each run records the CPU time the serving processes used
per request (from /proc, so it barely moves when something else loads the machine) and how
many CPUs processes outside the run kept busy meanwhile ("other load"): req/s figures taken
with other load well above 0 are not worth comparing; CPU per request still is.

CPU pinning (``taskset``, 2 cores): the 1-worker load balancer (main process and worker) on
CPU 0, nginx and wrk on CPU 1. The 2-worker load balancer is not pinned: two workers on one
core would measure nothing, so in (c) they share the machine with wrk and nginx.

    /work/venv/bin/python bench/proxy_bench.py [--duration S] [--repeats N]
        [--transport service,httpcore,aiohttp] [--profile] [--no-w2] [--no-pin]
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import re
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import asdict, dataclass
from pathlib import Path
import contextlib

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

NGINX_CONF = """\
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
    server {{
        listen 127.0.0.1:{port};
        location / {{
            default_type application/json;
            return 200 '{{"ok":true}}';
        }}
    }}
}}
"""


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

    def close(self) -> None:
        while self._started:
            self.stop(self._started.pop())


def _children(pid: int) -> list[int]:
    out: list[int] = []
    try:
        tasks = Path(f"/proc/{pid}/task").iterdir()
        for task in tasks:
            for child in (task / "children").read_text().split():
                out += [int(child), *_children(int(child))]
    except OSError:
        pass
    return out


def _cpu_ticks(pid: int) -> int:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return int(fields[11]) + int(fields[12])
    except (OSError, IndexError):
        return 0


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


def start_nginx(procs: Processes, tmp: Path) -> tuple[str, subprocess.Popen[bytes]]:
    port = free_port()
    conf = tmp / "nginx.conf"
    conf.write_text(NGINX_CONF.format(tmp=tmp, port=port))
    proc = procs.start("nginx", ["nginx", "-p", str(tmp), "-c", str(conf)], cpus=LOAD_CPUS)
    url = f"http://127.0.0.1:{port}"
    wait_http(url + "/", proc)
    return url, proc


@dataclass
class LoadBalancer:
    variant: str
    workers: int
    url: str
    proc: subprocess.Popen[bytes]

    def busiest_worker(self) -> int:
        pids = _children(self.proc.pid) or [self.proc.pid]
        return max(pids, key=_cpu_ticks)


def start_lb(procs: Processes, variant: str, workers: int, upstream: str) -> LoadBalancer:
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("LB_", "SANIC_", "BENCH_"))}
    env.update({var: upstream for var in URL_VARS})
    env["BENCH_VARIANT"] = variant
    env["PYTHONPATH"] = str(REPO)
    argv = [
        str(BIN / "sanic"), "bench.variant:app",
        "--host", "127.0.0.1", "--port", str(port), "--workers", str(workers), "--no-access-logs",
    ]  # fmt: skip
    cpus = LB_CPUS if workers == 1 else None
    proc = procs.start(f"lb-{variant}-w{workers}", argv, cpus=cpus, env=env)
    url = f"http://127.0.0.1:{port}"
    wait_http(url + "/lb-health", proc)
    wait_http(url + "/api/x", proc)
    return LoadBalancer(variant, workers, url, proc)


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


def run_wrk(url: str, duration: float, connections: int, pin: bool) -> WrkRun:
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
    if pin:
        argv = ["taskset", "-c", LOAD_CPUS, *argv]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=duration + 30, check=True)
    return parse_wrk(done.stdout)


def _busy_ticks() -> int:
    """Ticks all CPUs spent not idle, from /proc/stat."""
    fields = Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]
    user, nice, system, _idle, _iowait, irq, softirq, steal = (int(f) for f in fields[:8])
    return user + nice + system + irq + softirq + steal


def measure(case: Case, duration: float, connections: int, pin: bool, nginx: Case) -> WrkRun:
    """One wrk run, with the server's CPU per request and the machine's foreign load."""
    ours = [case.server] if case.server is nginx.server else [case.server, nginx.server]
    before = [c_ticks(p) for p in ours], _busy_ticks(), os.times(), time.monotonic()
    run = run_wrk(case.url, duration, connections, pin)
    after = [c_ticks(p) for p in ours], _busy_ticks(), os.times(), time.monotonic()
    hz = os.sysconf("SC_CLK_TCK")
    server = after[0][0] - before[0][0]
    wrk = (after[2].children_user + after[2].children_system) - (
        before[2].children_user + before[2].children_system
    )
    foreign = (after[1] - before[1]) - (sum(after[0]) - sum(before[0])) - wrk * hz
    run.server_cpu_us = server / hz * 1e6 / max(run.requests, 1)
    run.other_load = max(foreign, 0) / hz / (after[3] - before[3])
    return run


def c_ticks(proc: subprocess.Popen[bytes]) -> int:
    return sum(_cpu_ticks(pid) for pid in [proc.pid, *_children(proc.pid)])


# ------------------------------------------------------------------------------ profile


def profile(procs: Processes, lb: LoadBalancer, args: argparse.Namespace, stamp: str) -> None:
    """Sample the busiest worker with py-spy while wrk loads it; print the top frames."""
    target = lb.url + "/api/x"
    run_wrk(target, 2, args.connections, not args.no_pin)  # warm-up, and makes a worker busiest
    pid = lb.busiest_worker()
    raw = RESULTS / f"profile-{lb.variant}-{stamp}.txt"
    svg = RESULTS / f"profile-{lb.variant}-{stamp}.svg"
    seconds = max(int(args.duration), 5)
    spy = [str(BIN / "py-spy"), "record", "--pid", str(pid), "--duration", str(seconds),
           "--rate", "250", *(["--native"] if args.native else ["--nonblocking"])]  # fmt: skip
    # Two recordings under two loads: collapsed stacks to rank frames, an SVG to look at.
    for out, fmt in ((raw, "raw"), (svg, "flamegraph")):
        spy_proc = procs.start(f"py-spy-{fmt}", [*spy, "--format", fmt, "-o", str(out)], cpus=None)
        time.sleep(1.0)
        run = run_wrk(target, seconds, args.connections, not args.no_pin)
        if spy_proc.wait(seconds + 30) != 0 or not out.exists():
            raise RuntimeError(f"py-spy failed (exit {spy_proc.returncode})")
        print(f"  py-spy {fmt}: {out.relative_to(REPO)}  (under load {run.rps:,.0f} req/s)")
    print_profile(raw, args.top)


def print_profile(raw: Path, top: int) -> None:
    own: collections.Counter[str] = collections.Counter()
    inclusive: collections.Counter[str] = collections.Counter()
    total = 0
    for line in raw.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        n = int(count)
        total += n
        frames = [_frame_name(f) for f in stack.split(";")[1:]]  # [0] is the thread
        if frames:
            own[frames[-1]] += n
        for frame in set(frames):
            inclusive[frame] += n
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


def _frame_name(frame: str) -> str:
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


# --------------------------------------------------------------------------------- main


@dataclass
class Case:
    label: str
    url: str
    server: subprocess.Popen[bytes]  # whose process tree serves ``url`` (CPU accounting)


def median(runs: list[WrkRun], field: str) -> float:
    return statistics.median(getattr(run, field) for run in runs)


def print_table(cases: list[Case], results: dict[str, list[WrkRun]], ceiling: str) -> None:
    base = median(results[ceiling], "rps")
    print(
        f"\n{'case':<26} {'req/s':>8} {'p50 ms':>7} {'p99 ms':>7} {'/(a)':>6} {'CPU µs/req':>10} "
        f"{'other load':>10}  {'runs (req/s)':<24} errors"
    )
    for case in cases:
        runs = results[case.label]
        rps = median(runs, "rps")
        errors = sum(r.non_2xx + r.socket_errors for r in runs)
        spread = " ".join(f"{r.rps:,.0f}" for r in runs)
        print(
            f"{case.label:<26} {rps:>8,.0f} {median(runs, 'p50_ms'):>7.2f} "
            f"{median(runs, 'p99_ms'):>7.2f} {rps / base:>6.3f} "
            f"{median(runs, 'server_cpu_us'):>10.0f} {median(runs, 'other_load'):>10.2f}  "
            f"{spread:<24} {errors}"
        )
    print(
        "CPU µs/req: CPU time of the serving processes (LB main+workers, or nginx) per request; "
        "other load: CPUs busy with processes outside this run (should be ~0)."
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=float, default=10.0, help="seconds per wrk run (10)")
    parser.add_argument("--repeats", type=int, default=3, help="runs per case; medians shown (3)")
    parser.add_argument(
        "--connections", type=int, default=32, help="wrk keep-alive connections (32)"
    )
    parser.add_argument(
        "--transport",
        default="service,httpcore,aiohttp",
        help="comma-separated variants (bench/variant.py) measured in (b) and (c): service "
        "(as shipped), <transport>, <transport>@httpx, <transport>+proposal; "
        "default: service,httpcore,aiohttp",
    )
    parser.add_argument("--no-w2", action="store_true", help="skip (c), the 2-worker runs")
    parser.add_argument("--profile", action="store_true", help="then py-spy the first variant")
    parser.add_argument(
        "--native", action="store_true", help="--profile with C frames (syscalls) too"
    )
    parser.add_argument("--top", type=int, default=25, help="frames shown by --profile (25)")
    parser.add_argument("--no-pin", action="store_true", help="do not use taskset")
    args = parser.parse_args()
    variants = [v.strip() for v in args.transport.split(",") if v.strip()]

    # SIGTERM/SIGHUP end the run through the same ``finally`` as an error does.
    def interrupted(signum: int, frame: object) -> None:
        raise KeyboardInterrupt(signal.Signals(signum).name)

    signal.signal(signal.SIGTERM, interrupted)
    signal.signal(signal.SIGHUP, interrupted)

    RESULTS.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    pin = not args.no_pin and os.cpu_count() not in (None, 1)
    args.no_pin = not pin
    with tempfile.TemporaryDirectory(prefix="proxy-bench-") as tmp:
        procs = Processes(pin, Path(tmp))
        try:
            nginx, nginx_proc = start_nginx(procs, Path(tmp))
            direct = Case("(d) nginx direct", nginx + "/api/x", nginx_proc)
            cases = [direct]
            lbs: list[LoadBalancer] = []
            for i, variant in enumerate(variants):
                lb1 = start_lb(procs, variant, 1, nginx)
                lbs.append(lb1)
                if i == 0:
                    cases.insert(0, Case("(a) lb-health w1", lb1.url + "/lb-health", lb1.proc))
                cases.append(Case(f"(b) proxy w1 {variant}", lb1.url + "/api/x", lb1.proc))
                if not args.no_w2:
                    lb2 = start_lb(procs, variant, 2, nginx)
                    cases.append(Case(f"(c) proxy w2 {variant}", lb2.url + "/api/x", lb2.proc))
            pinning = f"LB w1 on CPU {LB_CPUS}, nginx+wrk on CPU {LOAD_CPUS}" if pin else "off"
            print(
                f"wrk -t1 -c{args.connections} -d{args.duration:g}s --latency, "
                f"{args.repeats} repeats, pinning {pinning}"
            )
            for case in cases:  # warm-up: pools filled, first-request costs paid
                run_wrk(case.url, 2, args.connections, pin)
            results: dict[str, list[WrkRun]] = {case.label: [] for case in cases}
            for rep in range(args.repeats):
                for case in cases:
                    run = measure(case, args.duration, args.connections, pin, direct)
                    results[case.label].append(run)
                    print(
                        f"  rep {rep + 1}/{args.repeats} {case.label:<28} {run.rps:>9,.0f} req/s "
                        f"{run.server_cpu_us:6.0f} µs CPU/req  "
                        f"other load {run.other_load:4.2f} CPU",
                        flush=True,
                    )
            print_table(cases, results, cases[0].label)
            for variant in variants:
                label = f"(b) proxy w1 {variant}"
                ratio = median(results[label], "rps") / median(results[cases[0].label], "rps")
                print(f"ratio (b)/(a) {variant}: {ratio:.3f}")
            out = RESULTS / f"proxy-bench-{stamp}.json"
            out.write_text(
                json.dumps(
                    {
                        "args": vars(args),
                        "results": {k: [asdict(r) for r in v] for k, v in results.items()},
                    },
                    indent=2,
                )
            )
            print(f"raw results: {out.relative_to(REPO)}")
            if args.profile:
                print(f"\nprofile of (b) {lbs[0].variant}, 1 worker:")
                profile(procs, lbs[0], args, stamp)
        except KeyboardInterrupt as exc:
            print(f"interrupted ({exc}), cleaning up", file=sys.stderr)
            return 130
        except (RuntimeError, subprocess.SubprocessError, ValueError, OSError) as exc:
            print(f"proxy_bench: {exc}", file=sys.stderr)
            for log in sorted(Path(tmp).glob("*.log")):
                tail = log.read_text(errors="replace").splitlines()[-15:]
                print(f"--- {log.name}\n" + "\n".join(tail), file=sys.stderr)
            return 1
        finally:
            procs.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
