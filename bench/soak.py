#!/usr/bin/env python
"""Soak: many proxied requests through ``--workers 2``; RSS must stay flat, errors zero.

Two phases, each of ``--requests`` proxied GETs (default 10^6) driven by wrk with a Lua
script: a mix of response sizes (70 % 200 B, 25 % 16 KiB, 5 % 256 KiB) and of connections
(every 10th request says ``Connection: close``, so wrk opens a new one), in 10-s segments.
After each segment the RSS of every process of the load balancer (main and workers) is
sampled; the slope (least squares, KiB per minute, first sample left out as warm-up) is
reported per process. Phase 2 runs the same load against a pool of two nginx targets while
one of them is killed (SIGKILL) and restarted every ``--kill-every`` seconds: the count of
failed GETs (wrk's non-2xx plus socket errors) must be zero. Everything on 127.0.0.1;
each phase stops at its request count or after ``--max-seconds``.

    .venv/bin/python bench/soak.py [--requests 1000000] [--kill-every 20] [--phase both]
"""

from __future__ import annotations

import argparse
import json
import signal
import statistics
import subprocess
import sys
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make ``bench`` (and ``tests``) importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.harness import (
    NGINX_HEAD,
    LoadBalancer,
    Processes,
    bench_env,
    bench_parser,
    launch_lb,
    parse_wrk,
    start_upstream,
    wrk_argv,
    run_bench,
    save,
    wait_http,
)
from tests.support import REPO, URL_VARS, free_port, rss_kib

SIZES = {"s": 200, "m": 16 * 1024, "l": 256 * 1024}
SEGMENT_S = 10  # also the RSS sampling period (a smoke run's are 0.5 s)
READY = ("/lb-health", "/api/s")

WRK_SCRIPT = """
local paths = {}
for i = 1, 70 do paths[#paths + 1] = "/api/s" end
for i = 1, 25 do paths[#paths + 1] = "/api/m" end
for i = 1, 5 do paths[#paths + 1] = "/api/l" end
local counter = 0
request = function()
  counter = counter + 1
  local path = paths[(counter * 37) % 100 + 1]
  if counter % 10 == 0 then
    return wrk.format("GET", path, {["Connection"] = "close"})
  end
  return wrk.format("GET", path)
end
"""

NGINX_SITE = """\
    server {{
        listen 127.0.0.1:{port};
        location /api/ {{ alias {www}/; default_type application/octet-stream; }}
        location = /stats {{ default_type application/json; return 200 '{{}}'; }}
    }}
}}
"""


@dataclass
class Phase:
    name: str
    requests: int = 0
    errors: int = 0
    non_2xx: int = 0
    socket_errors: int = 0
    seconds: float = 0.0
    kills: int = 0
    rss_kib: dict[str, list[int]] = field(default_factory=dict)  # per process, per sample
    slope_kib_per_min: dict[str, float] = field(default_factory=dict)


def start_target(procs: Processes, tmp: Path, name: str, port: int) -> subprocess.Popen[bytes]:
    """One nginx (one worker) serving the three sizes under /api/ on ``port``."""
    home = tmp / name
    (home / "logs").mkdir(parents=True, exist_ok=True)
    conf = home / "nginx.conf"
    conf.write_text(NGINX_HEAD.format(tmp=home) + NGINX_SITE.format(port=port, www=tmp / "www"))
    proc = start_upstream(procs, name, conf, [port], {"/api/": tmp / "www"}, cpus=None)
    wait_http(f"http://127.0.0.1:{port}/api/s", proc)
    return proc


def launch_two_workers(procs: Processes, name: str, urls: dict[str, str]) -> LoadBalancer:
    env = bench_env(urls)
    return launch_lb(procs, name=name, app="service.app:app", env=env, workers=2, ready=READY)


def roles(lb: LoadBalancer) -> dict[str, int]:
    """The load balancer's processes by role: main, worker(s), and multiprocessing's helpers."""
    named = {"main": lb.process.pid}
    for pid in lb.pids()[1:]:
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
        except OSError:
            continue
        role = "tracker" if b"resource_tracker" in cmdline else "spawned"
        named[f"{role}{len(named)}"] = pid
    return named


def slope(samples: list[int], segment_s: float) -> float:
    """Least-squares slope of ``samples`` (one every ``segment_s``), KiB per minute."""
    points = samples[1:]  # the first segment is the warm-up
    if len(points) < 2:
        return 0.0
    xs = [i * segment_s / 60 for i in range(len(points))]
    mean_x, mean_y = statistics.fmean(xs), statistics.fmean(points)
    num = sum((x - mean_x) * (y - mean_y) for x, y in zip(xs, points, strict=True))
    den = sum((x - mean_x) ** 2 for x in xs)
    return num / den


def run_phase(
    args: argparse.Namespace, phase: Phase, url: str, lb_pids: dict[str, int], tmp: Path
) -> None:
    script = tmp / "mix.lua"
    script.write_text(WRK_SCRIPT)
    started = time.monotonic()
    while phase.requests < args.requests and time.monotonic() - started < args.max_seconds:
        argv = wrk_argv(url, args.segment, args.connections, pin=False, script=str(script))
        done = subprocess.run(argv, capture_output=True, text=True, check=True, cwd=REPO)
        run = parse_wrk(done.stdout)
        phase.requests += run.requests
        phase.non_2xx += run.non_2xx
        phase.socket_errors += run.socket_errors
        for role, pid in lb_pids.items():
            phase.rss_kib.setdefault(f"{role}:{pid}", []).append(rss_kib(pid))
        print(
            f"  {phase.name}: {phase.requests:>9} requests, {run.rps:7.0f} req/s, "
            f"errors {phase.non_2xx + phase.socket_errors}, RSS KiB "
            + " ".join(f"{pid}={values[-1]}" for pid, values in phase.rss_kib.items()),
            flush=True,
        )
    phase.seconds = time.monotonic() - started
    phase.errors = phase.non_2xx + phase.socket_errors
    phase.slope_kib_per_min = {
        pid: round(slope(v, args.segment), 1) for pid, v in phase.rss_kib.items()
    }


def bench_soak(args: argparse.Namespace, procs: Processes, tmp: Path, stamp: str) -> None:
    www = tmp / "www"
    www.mkdir()
    for readable in (tmp, www):  # nginx's worker runs as an unprivileged user
        readable.chmod(0o755)
    for name, size in SIZES.items():
        (www / name).write_bytes(b"x" * size)
        (www / name).chmod(0o644)
    phases: list[Phase] = []
    port_a, port_b = free_port(), free_port()
    start_target(procs, tmp, "target-a", port_a)
    target_b = start_target(procs, tmp, "target-b", port_b)
    urls = {var: f"http://127.0.0.1:{port_a}" for var in URL_VARS.values()}
    if args.phase in ("both", "steady"):
        lb = launch_two_workers(procs, "soak", urls)
        phase = Phase("steady")
        run_phase(args, phase, lb.url, roles(lb), tmp)
        phases.append(phase)
        lb.stop()
    if args.phase in ("both", "kill"):
        pool = {**urls, "API_GATEWAY_URL": f"http://127.0.0.1:{port_a}, http://127.0.0.1:{port_b}"}
        lb = launch_two_workers(procs, "soak-kill", pool)
        phase = Phase(f"target killed every {args.kill_every:g}s")
        stop = threading.Event()

        def killer() -> None:
            nonlocal target_b
            while not stop.wait(args.kill_every):
                target_b.send_signal(signal.SIGKILL)
                target_b.wait()
                phase.kills += 1
                if stop.wait(1.0):
                    return
                target_b = start_target(procs, tmp, "target-b", port_b)

        thread = threading.Thread(target=killer, daemon=True)
        thread.start()
        try:
            run_phase(args, phase, lb.url, roles(lb), tmp)
        finally:
            stop.set()
            thread.join(10)
        phases.append(phase)
        lb.stop()
    print()
    for phase in phases:
        print(
            f"{phase.name}: {phase.requests} requests in {phase.seconds:.0f} s, "
            f"errors {phase.errors} "
            f"(non-2xx {phase.non_2xx}, socket {phase.socket_errors}), kills {phase.kills}; "
            f"RSS slope KiB/min per process {json.dumps(phase.slope_kib_per_min)}"
        )
    save("soak", stamp, {"args": vars(args), "phases": [asdict(p) for p in phases]})


def main() -> int:
    parser = bench_parser(__doc__ or "")
    parser.add_argument("--requests", type=int, default=1_000_000, help="per phase (10^6)")
    parser.add_argument("--kill-every", type=float, default=20.0, help="seconds (20)")
    parser.add_argument("--max-seconds", type=float, default=1800.0, help="per phase (1800)")
    parser.add_argument("--phase", choices=("both", "steady", "kill"), default="both")
    parser.add_argument(
        "--segment",
        type=float,
        default=SEGMENT_S,
        help=f"seconds of load per RSS sample ({SEGMENT_S})",
    )
    smoke = {"requests": 50, "kill_every": 1.0, "max_seconds": 3.0, "segment": 0.5}
    return run_bench("soak", parser.parse_args(), bench_soak, smoke)


if __name__ == "__main__":
    sys.exit(main())
