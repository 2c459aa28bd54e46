#!/usr/bin/env python
"""Proxy throughput on this machine, in one bounded invocation, all on 127.0.0.1.

Starts nginx as the upstream (``/api/x``: an 11-byte ``{"ok":true}``; ``/api/body/16k`` and
``/api/body/1m``: files with ``Content-Length``; ``/api/body/sse``: a short event stream that
nginx sends chunked), starts the load balancer in front of it, and drives both with wrk
(keep-alive connections, one thread, ``--latency``):

    (a) lb-health   the load balancer's own /lb-health, 1 worker: the framework's ceiling
    (b) proxy w1    each body proxied to nginx, 1 worker
    (c) proxy w2    the same, 2 workers
    (d) nginx       /api/x straight from nginx: the load generator's side ceiling

``--baseline PATH`` runs (b) and (c) a second time from another checkout of the project
(say, the commit before a change), in the same invocation, interleaved, so the two compare
under the same conditions. The repeats are interleaved (rep 1 of every case, then rep 2...)
so that drift of the machine spreads over all cases; the table shows medians. Memory is the
PSS of each load balancer's whole process tree (main process and workers, from
``/proc/<pid>/smaps_rollup``), idle after start-up and again after all the load.
``--profile`` then samples one 1-worker proxy with py-spy under the same load.

Besides wrk's req/s, p50 and p99, each run records the CPU time the serving processes used
per request (from /proc, so it barely moves when something else loads the machine) and how
many CPUs processes outside the run kept busy meanwhile ("other load"): req/s figures taken
with other load well above 0 are not worth comparing; CPU per request still is.

CPU pinning (``taskset``, 2 cores): the 1-worker load balancer (main process and worker) on
CPU 0, nginx and wrk on CPU 1. The 2-worker load balancer is not pinned: two workers on one
core would measure nothing, so in (c) they share the machine with wrk and nginx.

    .venv/bin/python bench/proxy_bench.py [--duration S] [--repeats N] [--bodies x,16k,1m,sse]
        [--baseline PATH] [--profile [--native]] [--no-w2] [--smoke]

(The transport comparisons, ``--transport`` and bench/variant*.py, were retired once their
figures were recorded in bench/README.md.)
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make ``bench`` importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.harness import (
    LB_CPUS,
    LOAD_CPUS,
    REPO,
    URL_VARS,
    LoadBalancer,
    Processes,
    WrkRun,
    bench_parser,
    launch_lb,
    lb_env,
    measure_wrk,
    median,
    print_profile,
    pss_kib,
    record_profile,
    run_bench,
    save,
    start_nginx,
    warm,
)


def start_lb(procs: Processes, workers: int, upstream: str, repo: Path = REPO) -> LoadBalancer:
    env = lb_env({var: upstream for var in URL_VARS}, repo=repo)
    variant = "service" if repo == REPO else "service baseline"
    lb = launch_lb(
        procs, name=f"{variant.replace(' ', '-')}-w{workers}", app="service.app:app", env=env,
        workers=workers, repo=repo,
    )  # fmt: skip
    lb.variant = variant
    return lb


def _tag(lb: LoadBalancer) -> str:
    return f"{lb.variant} w{lb.workers or 1}"  # a smoke run's: --single-process


BODY_PATHS = {"x": "/api/x", "16k": "/api/body/16k", "1m": "/api/body/1m", "sse": "/api/body/sse"}


def measure(case: Case, duration: float, connections: int, pin: bool, nginx: Case) -> WrkRun:
    """One wrk run, with the server's CPU per request and the machine's foreign load."""
    return measure_wrk(case.url, case.server, [nginx.server], duration, connections, pin)


# --------------------------------------------------------------------------------- main


@dataclass
class Case:
    label: str
    url: str
    server: subprocess.Popen[bytes]  # whose process tree serves ``url`` (CPU accounting)


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


def bench(args: argparse.Namespace, procs: Processes, tmp: Path, stamp: str) -> None:
    pin = procs.pin
    nginx, nginx_proc = start_nginx(procs, tmp)
    direct = Case("(d) nginx direct", nginx + "/api/x", nginx_proc)
    cases = [direct]
    lbs: list[LoadBalancer] = []
    trees = [REPO] + ([Path(args.baseline).resolve()] if args.baseline else [])
    for i, repo in enumerate(trees):
        lb1 = start_lb(procs, 1, nginx, repo)
        lbs.append(lb1)
        if i == 0:
            cases.insert(0, Case("(a) lb-health w1", lb1.url + "/lb-health", lb1.proc))
        pair = [("(b) proxy w1", lb1)]
        if not args.no_w2:
            lb2 = start_lb(procs, 2, nginx, repo)
            lbs.append(lb2)
            pair.append(("(c) proxy w2", lb2))
        for body in args.bodies:
            for label, lb in pair:
                cases.append(
                    Case(f"{label} {body} {lb.variant}", lb.url + BODY_PATHS[body], lb.proc)
                )
    time.sleep(1.0)
    idle_pss = {_tag(lb): pss_kib(lb.proc.pid) for lb in lbs}
    pinning = f"LB w1 on CPU {LB_CPUS}, nginx+wrk on CPU {LOAD_CPUS}" if pin else "off"
    print(
        f"wrk -t1 -c{args.connections} -d{args.duration:g}s --latency, "
        f"{args.repeats} repeats, pinning {pinning}"
    )
    for case in cases:  # warm-up: pools filled, first-request costs paid
        warm(case.url, args.connections, pin)
    results: dict[str, list[WrkRun]] = {case.label: [] for case in cases}
    for rep in range(args.repeats):
        for case in cases:
            run = measure(case, args.duration, args.connections, pin, direct)
            results[case.label].append(run)
            print(
                f"  rep {rep + 1}/{args.repeats} {case.label:<28} {run.rps:>9,.0f} req/s "
                f"{run.server_cpu_us:6.0f} µs CPU/req  other load {run.other_load:4.2f} CPU",
                flush=True,
            )
    print_table(cases, results, cases[0].label)
    ceiling = median(results[cases[0].label], "rps")
    for case in cases[2:]:
        if case.label.startswith("(b) proxy w1 x "):
            ratio = median(results[case.label], "rps") / ceiling
            print(f"ratio (b)/(a), 11-byte body, {case.label[15:]}: {ratio:.3f}")
    if args.baseline:
        print("\nthis checkout against the baseline (req/s ratio, CPU µs/req ratio):")
        for case in cases[2:]:
            other = results.get(case.label + " baseline")
            if other is None or case.label.endswith("baseline"):
                continue
            rps = median(results[case.label], "rps") / median(other, "rps")
            cpu = median(results[case.label], "server_cpu_us") / median(other, "server_cpu_us")
            print(f"  {case.label:<34} {rps:6.3f} {cpu:6.3f}")
    print("\nmemory, PSS of the process tree (main process and workers), MiB:")
    for lb in lbs:
        after, idle = pss_kib(lb.proc.pid), idle_pss[_tag(lb)]
        print(f"  {_tag(lb):<24} idle {idle / 1024:7.1f}   after the load {after / 1024:7.1f}")
    save("proxy", stamp, {
        "args": vars(args),
        "pss_idle_kib": idle_pss,
        "results": {k: [asdict(r) for r in v] for k, v in results.items()},
    })  # fmt: skip
    if args.profile:
        print(f"\nprofile of (b) {lbs[0].variant}, 1 worker:")
        raw = record_profile(
            procs, lbs[0], label=lbs[0].variant, stamp=stamp, seconds=max(int(args.duration), 5),
            connections=args.connections, pin=pin, native=args.native,
        )  # fmt: skip
        if raw is not None:
            print_profile(raw, args.top)


def main() -> int:
    parser = bench_parser(__doc__)
    parser.add_argument("--duration", type=float, default=10.0, help="seconds per wrk run (10)")
    parser.add_argument("--repeats", type=int, default=3, help="runs per case; medians shown (3)")
    parser.add_argument("--no-w2", action="store_true", help="skip (c), the 2-worker runs")
    parser.add_argument(
        "--bodies",
        default="x,16k,1m,sse",
        help="upstream bodies: x (11 bytes), 16k, 1m (Content-Length), sse (chunked)",
    )
    parser.add_argument(
        "--baseline", default="", help="another checkout: its (b) and (c) run alongside"
    )
    parser.add_argument("--profile", action="store_true", help="then py-spy the 1-worker proxy")
    parser.add_argument(
        "--native", action="store_true", help="--profile with C frames (syscalls) too"
    )
    parser.add_argument("--top", type=int, default=25, help="frames shown by --profile (25)")
    args = parser.parse_args()
    args.bodies = [b.strip() for b in args.bodies.split(",") if b.strip()]
    if unknown := set(args.bodies) - set(BODY_PATHS):
        parser.error(f"unknown bodies {sorted(unknown)}; known: {sorted(BODY_PATHS)}")
    smoke = {"duration": 0.2, "repeats": 1, "profile": True}
    return run_bench("proxy", args, bench, smoke)


if __name__ == "__main__":
    sys.exit(main())
