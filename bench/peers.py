#!/usr/bin/env python
"""This service side by side with its peers, in one invocation: throughput, latency at a
fixed rate, and memory (issue 23's tables).

Throughput (wrk, one thread, 32 keep-alive connections; each server on CPU 0, wrk and the
upstream nginx on CPU 1; nginx answers ``/api/x`` with the 11-byte ``{"ok":true}``), each
case once per repeat, the order rotated, ratios taken against this service's run of the
same repeat, medians shown:

    service /api/x      this service (1 worker), proxied
    service /lb-health  its own answer: what the framework costs without the proxy
    go shipped          the Go original as it ships (``GOMAXPROCS=1``)
    go fixed            the same with its per-request copy of a minute's samples fixed: Go's
                        own proxy path
    nginx proxy         Debian's nginx, one worker, upstream keep-alive
    bare sanic          /work/shared/peers/minimal_sanic_proxy.py: Sanic forwarding over raw
                        asyncio keep-alive connections, nothing else (the stack's floor)
    bare sanic /lb-health  the same app's own answer: what ours is compared with

Latency (Debian's ``hey``: 10 connections, 30 req/s each = 300 req/s): p50 and p99 of each
proxy minus those of calling the upstream directly, medians of the repeats. hey starts each
connection's ticker at the same moment, so the ten requests of a tick arrive together: a
one-core proxy's figure there is about the CPU of the whole burst. The same 300 req/s over
one connection (one request at a time, none queued behind another) is printed beside it, so
that what queueing adds and what one request costs are read apart.

Memory: PSS of ``sanic service.app --workers 2``'s whole process tree (default
configuration), idle after start-up and after a minute of wrk load (a second in a smoke run).

The Go peers are optional: ``--go DIR`` names the folder that
``/work/shared/peers/build-go-original GIT_DIR DIR`` built (``lb`` and ``lb-fixed``); without
it the table says so. nginx, wrk and hey are required in a full run; a smoke run uses none of
them (wrk's and nginx's stand-ins; the peers' rows and the latency table skipped).

    .venv/bin/python bench/peers.py [--go DIR] [--duration S] [--repeats N]
        [--latency-duration S] [--load-seconds S] [--smoke]
"""

from __future__ import annotations

import argparse
import re
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make ``bench`` importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.harness import (
    BARE_SANIC,
    BIN,
    LB_CPUS,
    LOAD_CPUS,
    URL_VARS,
    PEERS,
    Mode,
    Processes,
    WrkRun,
    bench_parser,
    launch_lb,
    lb_env,
    machine_load,
    measure_wrk,
    pss_kib,
    require,
    run_bench,
    run_wrk,
    save,
    start_nginx,
    wait_http,
    warm,
)
from tests.support import REPO, children, clean_env, free_port

NGINX_PROXY = """\
worker_processes 1;
pid {tmp}/nginx.pid;
error_log {tmp}/error.log warn;
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
    upstream up {{ server {upstream}; keepalive 64; keepalive_requests 1000000; }}
    server {{
        listen 127.0.0.1:{port};
        location / {{
            proxy_pass http://up;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
        }}
    }}
}}
"""
BASE = "service /api/x"


@dataclass
class Server:
    """One proxy (or this service's own answer) under test: its URL and its process."""

    label: str
    url: str
    proc: subprocess.Popen[bytes]
    runs: list[WrkRun] = field(default_factory=list)


def start_peer(
    procs: Processes, label: str, argv: list[str], env: dict[str, str], port: int
) -> Server:
    proc = procs.start(label.replace(" ", "-"), argv, cpus=LB_CPUS, env=env)
    url = f"http://127.0.0.1:{port}/api/x"
    wait_http(url, proc)
    return Server(label, url, proc)


def start_peers(
    args: argparse.Namespace, procs: Processes, tmp: Path, upstream: str
) -> tuple[list[Server], list[str]]:
    """The peers this run can use, and a note for each it cannot."""
    servers: list[Server] = []
    notes: list[str] = []
    urls = {var: upstream for var in URL_VARS}
    go = Path(args.go) if args.go else None
    for label, binary in (("go shipped", "lb"), ("go fixed", "lb-fixed")):
        if Mode.smoke:
            notes.append(f"{label}: not used (smoke run)")
        elif go is None or not (go / binary).is_file():
            notes.append(
                f"{label}: not built (--go DIR, built by "
                f"{PEERS}/build-go-original GIT_DIR DIR from a snapshot of DvwN-Lee/Monitoring)"
            )
        else:
            port = free_port()
            env = clean_env({**urls, "LB_PORT": str(port), "GOMAXPROCS": "1"})
            servers.append(start_peer(procs, label, [str(go / binary)], env, port))
    if require("nginx"):
        port = free_port()
        (tmp / "nginx-proxy").mkdir()
        conf = tmp / "nginx-proxy" / "nginx.conf"
        hostport = upstream.removeprefix("http://")
        conf.write_text(NGINX_PROXY.format(tmp=tmp / "nginx-proxy", upstream=hostport, port=port))
        argv = ["nginx", "-p", str(conf.parent), "-c", str(conf)]
        servers.append(start_peer(procs, "nginx proxy", argv, clean_env(), port))
    else:
        notes.append("nginx proxy: not used (smoke run)")
    if Mode.smoke:
        notes.append("bare sanic: not used (smoke run)")
    elif not BARE_SANIC.is_file():
        notes.append(f"bare sanic: {BARE_SANIC} not found")
    else:
        port = free_port()
        env = clean_env({**urls, "PYTHONPATH": str(PEERS)})
        argv = [str(BIN / "sanic"), "minimal_sanic_proxy:app", "--host", "127.0.0.1",
                "--port", str(port), "--single-process", "--no-access-logs"]  # fmt: skip
        bare = start_peer(procs, "bare sanic", argv, env, port)
        servers += [
            bare,
            Server("bare sanic /lb-health", bare.url.replace("/api/x", "/lb-health"), bare.proc),
        ]
    return servers, notes


# ------------------------------------------------------------------------- throughput


def throughput(
    servers: list[Server], args: argparse.Namespace, pin: bool, nginx: subprocess.Popen[bytes]
) -> None:
    """Every server once per repeat (order rotated), one at a time on CPU 0."""
    for server in servers:
        warm(server.url, args.connections, pin)
    for rep in range(args.repeats):
        shift = rep % len(servers)
        for server in servers[shift:] + servers[:shift]:
            run = measure_wrk(
                server.url, server.proc, [nginx], args.duration, args.connections, pin
            )
            server.runs.append(run)
            print(
                f"  rep {rep + 1}/{args.repeats} {server.label:<20} {run.rps:>9,.0f} req/s  "
                f"other load {run.other_load:4.2f} CPU"
                + (f"  ERRORS {run.errors}" if run.errors else ""),
                flush=True,
            )  # fmt: skip


def print_throughput(servers: list[Server], notes: list[str]) -> dict[str, dict[str, float]]:
    base = next(s for s in servers if s.label == BASE)
    print(f"\n{'':<20} {'req/s':>9} {'service/it':>10} {'min':>6} {'max':>6}  runs (req/s)")
    table: dict[str, dict[str, float]] = {}
    for server in servers:
        rps = statistics.median(r.rps for r in server.runs)
        # this service's req/s over this server's, in the same repeat
        pairs = zip(base.runs, server.runs, strict=True)
        ratios = [b.rps / r.rps if r.rps else float("nan") for b, r in pairs]
        ratio = statistics.median(ratios)
        table[server.label] = {
            "rps": rps,
            "ratio": ratio,
            "errors": sum(r.errors for r in server.runs),
        }
        runs = " ".join(f"{r.rps:,.0f}" for r in server.runs)
        print(
            f"{server.label:<20} {rps:>9,.0f} {ratio:>10.2f} {min(ratios):>6.2f} "
            f"{max(ratios):>6.2f}  {runs}"
        )  # fmt: skip
    for note in notes:
        print(f"{'':<20} {note}")
    _print_local_ratio(servers)
    print(
        "service/it: this service's proxied req/s over the row's, in the same repeat (median; "
        "above 1: this service is faster). /lb-health's row is proxied/local."
    )
    return table


def _print_local_ratio(servers: list[Server]) -> None:
    """This service's own answer (``/lb-health``) against the bare app's own answer, repeat
    by repeat (issue 23: at least 0.8x)."""
    ours = next((s for s in servers if s.label == "service /lb-health"), None)
    bare = next((s for s in servers if s.label == "bare sanic /lb-health"), None)
    if ours is None or bare is None:
        return
    ratios = [o.rps / b.rps for o, b in zip(ours.runs, bare.runs, strict=True) if b.rps]
    if ratios:
        print(
            f"service /lb-health over bare sanic /lb-health: {statistics.median(ratios):.2f} "
            f"({min(ratios):.2f}-{max(ratios):.2f})"
        )


# ---------------------------------------------------------------------------- latency


# (connections, requests per second on each): 300 req/s in bursts of ten, and one at a time
SHAPES = {"10 connections": (10, 30), "1 connection": (1, 300)}


def hey(url: str, seconds: float, pin: bool, shape: tuple[int, int]) -> tuple[float, float]:
    """p50 and p99 in ms of ``hey`` at 300 req/s in ``shape`` (see :data:`SHAPES`)."""
    connections, rate = shape
    argv = ["hey", "-z", f"{seconds:g}s", "-c", str(connections), "-q", str(rate), url]
    argv = ["taskset", "-c", LOAD_CPUS, *argv] if pin else argv
    out = subprocess.run(argv, capture_output=True, text=True, check=True, timeout=seconds + 30)
    found = dict(re.findall(r"^\s+(\d+)% in ([\d.]+) secs", out.stdout, re.MULTILINE))
    if "50" not in found or "99" not in found:
        raise ValueError(f"hey output lacks percentiles:\n{out.stdout[-800:]}")
    return float(found["50"]) * 1e3, float(found["99"]) * 1e3


def latency(
    servers: list[Server], direct: str, args: argparse.Namespace, pin: bool
) -> dict[str, dict[str, dict[str, float]]]:
    """Each shape's table (:data:`SHAPES`): p50 and p99 of every proxy and of the upstream
    called directly, and what each proxy adds; both shapes run in every repeat."""
    if not require("hey"):
        print("\nlatency at 300 req/s: skipped (smoke run)")
        return {}
    targets = [("upstream direct", direct)] + [
        (s.label, s.url)
        for s in servers
        if s.label not in ("service /lb-health", "bare sanic /lb-health", "go shipped")
    ]
    got = {shape: {label: [] for label, _ in targets} for shape in SHAPES}
    for rep in range(args.repeats):
        for shape, sizes in SHAPES.items():
            for label, url in targets:
                got[shape][label].append(hey(url, args.latency_duration, pin, sizes))
        print(f"  latency rep {rep + 1}/{args.repeats} done", flush=True)
    return {shape: _latency_table(shape, runs, args.repeats) for shape, runs in got.items()}


def _latency_table(
    shape: str, got: dict[str, list[tuple[float, float]]], repeats: int
) -> dict[str, dict[str, float]]:
    direct50 = statistics.median(p[0] for p in got["upstream direct"])
    direct99 = statistics.median(p[1] for p in got["upstream direct"])
    print(f"\nlatency at 300 req/s over {shape} (hey), medians of {repeats}:")
    print(f"{'':<20} {'p50 ms':>7} {'p99 ms':>7} {'+p50 ms':>8} {'+p99 ms':>8}")
    table = {}
    for label, runs in got.items():
        p50 = statistics.median(p[0] for p in runs)
        p99 = statistics.median(p[1] for p in runs)
        table[label] = {
            "p50": p50,
            "p99": p99,
            "added_p50": p50 - direct50,
            "added_p99": p99 - direct99,
        }
        print(
            f"{label:<20} {p50:>7.2f} {p99:>7.2f} {p50 - direct50:>+8.2f} {p99 - direct99:>+8.2f}"
        )
    return table


# ----------------------------------------------------------------------------- memory


def memory(procs: Processes, upstream: str, args: argparse.Namespace) -> dict[str, float]:
    """PSS of ``sanic service.app --workers 2`` (default configuration) idle, then loaded;
    then of ``python -m service`` with two workers, as the Docker image runs it."""
    env = lb_env({var: upstream for var in URL_VARS})
    lb = launch_lb(procs, name="service-w2", app="service.app", env=env, workers=2)
    time.sleep(0.5 if Mode.smoke else 3.0)  # start-up's garbage settled
    idle = pss_kib(lb.proc.pid) / 1024
    run_wrk(lb.url + "/api/x", args.load_seconds, args.connections, pin=False)
    loaded = pss_kib(lb.proc.pid) / 1024
    print(
        f"\nPSS of sanic service.app --workers 2 (whole tree): idle {idle:.1f} MiB, "
        f"after {args.load_seconds:g} s of load {loaded:.1f} MiB ({loaded / idle - 1:+.1%})"
    )
    procs.stop(lb.proc)
    image = image_process_pss(procs, env)
    print(f"PSS of python -m service, LB_WORKERS=2, as the Docker image runs it: {image:.1f} MiB")
    return {
        "idle_mib": idle,
        "loaded_mib": loaded,
        "load_seconds": args.load_seconds,
        "image_process_idle_mib": image,
    }


def image_process_pss(procs: Processes, env: dict[str, str]) -> float:
    """Idle PSS of the Dockerfile's command, ``python -m service``, with two workers and the
    service's bytecode compiled first as the image's ``compileall`` does (into the
    checkout's ``__pycache__`` folders, which git ignores; not ``PYTHONPYCACHEPREFIX``,
    which would hide the installed packages' bytecode too and add the cost of compiling
    them). No image is built: this measures the same process tree outside one."""
    compile_argv = [sys.executable, "-m", "compileall", "-q", "service"]
    subprocess.run(compile_argv, cwd=REPO, env=env, check=True, timeout=120)
    port = free_port()
    env = {**env, "LB_WORKERS": "2", "LB_HOST": "127.0.0.1", "LB_PORT": str(port)}
    proc = procs.start("image-process", [sys.executable, "-m", "service"], cpus=None, env=env)
    wait_http(f"http://127.0.0.1:{port}/lb-health", proc)
    deadline = time.monotonic() + 30
    while len(children(proc.pid)) < 3 and time.monotonic() < deadline:  # 2 workers, tracker
        time.sleep(0.1)
    time.sleep(0.5 if Mode.smoke else 3.0)
    pss = pss_kib(proc.pid) / 1024
    procs.stop(proc)
    return pss


# ------------------------------------------------------------------------------- run


def bench(args: argparse.Namespace, procs: Processes, tmp: Path, stamp: str) -> None:
    pin = procs.pin
    print(machine_load())
    upstream, nginx = start_nginx(procs, tmp)
    env = lb_env({var: upstream for var in URL_VARS})
    lb = launch_lb(procs, name="service-w1", app="service.app", env=env)
    servers = [
        Server(BASE, lb.url + "/api/x", lb.proc),
        Server("service /lb-health", lb.url + "/lb-health", lb.proc),
    ]
    peers, notes = start_peers(args, procs, tmp, upstream)
    servers += peers
    throughput(servers, args, pin, nginx)
    rps = print_throughput(servers, notes)
    lat = latency(servers, upstream + "/api/x", args, pin)
    for server in peers:  # their CPU back for the memory run
        procs.stop(server.proc)
    mem = memory(procs, upstream, args)
    print(machine_load())
    save("peers", stamp, {"throughput": rps, "notes": notes, "latency": lat, "memory": mem})


def main() -> int:
    parser = bench_parser(__doc__ or "")
    parser.add_argument("--go", help="folder with the Go original's lb and lb-fixed")
    parser.add_argument("--duration", type=float, default=10.0, help="seconds per wrk run (10)")
    parser.add_argument("--repeats", type=int, default=3, help="repeats; medians (3)")
    parser.add_argument(
        "--latency-duration", type=float, default=10.0, help="seconds per hey run (10)"
    )
    parser.add_argument(
        "--load-seconds", type=float, default=60.0, help="load before the second PSS (60)"
    )
    args = parser.parse_args()
    smoke = {"duration": 0.3, "repeats": 1, "latency_duration": 0.3, "load_seconds": 0.3}
    return run_bench("peers", args, bench, smoke)


if __name__ == "__main__":
    sys.exit(main())
