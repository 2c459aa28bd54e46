#!/usr/bin/env python
"""The access log's cost: proxied throughput with LB_ACCESS_LOG off, on (text) and on (json);
and the request ids' cost on the proxy route: off versus a build that does not make them
(bench/_noids.py).

Three 1-worker load balancers in front of one nginx, identical but for the access log
(on: one line per request written to the process's stdout, a pipe read by this script
into a file, as a container runtime would). Interleaved one-at-a-time runs (medians), then
each "on" case side by side with "off" (both loaded at once on the load balancer's core, so
the ratio is their cost ratio). Request ids are on in the service, so "off" includes them;
"no request ids" is the same with a constant id instead (bench/_noids.py).

How it measures (wrk, pinning, CPU per request, other load, results): bench/harness.py.

    .venv/bin/python bench/access_log_cost.py [--duration 5] [--repeats 3] [--pair-repeats 2]
        [--smoke]
"""

from __future__ import annotations

import argparse
import http.client
import statistics
import sys
from dataclasses import asdict
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make ``bench`` (and ``tests``) importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.harness import (
    pairs_if_asked,
    URL_VARS,
    Case,
    Processes,
    add_run_options,
    bench_env,
    bench_parser,
    interleaved,
    launch_lb,
    machine_load,
    median,
    print_runs_table,
    run_bench,
    save,
    start_nginx,
)

SERVICE, NO_IDS = "service.app:app", "bench._noids:app"
CONFIGS = (
    ("access log off", SERVICE, {"LB_ACCESS_LOG": "false"}),
    ("access log on, text", SERVICE, {"LB_ACCESS_LOG": "true", "LB_LOG_FORMAT": "text"}),
    ("access log on, json", SERVICE, {"LB_ACCESS_LOG": "true", "LB_LOG_FORMAT": "json"}),
    ("no request ids, log off", NO_IDS, {"LB_ACCESS_LOG": "false"}),
)


def request_id_of(base: str) -> str | None:
    host, port = base.removeprefix("http://").split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=10)
    try:
        conn.request("GET", "/api/x")
        response = conn.getresponse()
        response.read()
        return response.getheader("X-Request-ID")
    finally:
        conn.close()


def bench_access_log(args: argparse.Namespace, procs: Processes, tmp: Path, stamp: str) -> None:
    url, nginx = start_nginx(procs, tmp)
    base = {var: url for var in URL_VARS}
    cases = [
        Case(label, launch_lb(procs, name=f"log-{i}", app=app, env=bench_env(base, extra)))
        for i, (label, app, extra) in enumerate(CONFIGS)
    ]  # fmt: skip
    for case in cases:  # the variant really makes no ids, the service really does
        made = request_id_of(case.lb.url) not in (None, "-")
        if made != (case.label != "no request ids, log off"):
            raise RuntimeError(f"{case.label}: X-Request-ID made: {made}")
    print(
        f"wrk -t1 -c{args.connections} -d{args.duration:g}s --latency, {args.repeats} repeats "
        f"interleaved, 1 worker, pinning {'on' if procs.pin else 'off'}; {machine_load()}"
    )
    results = interleaved(
        cases, repeats=args.repeats, duration=args.duration, connections=args.connections,
        pin=procs.pin, nginx=nginx,
    )  # fmt: skip
    print_runs_table(cases, results, cases[0].label, "off")
    lines = {
        case.label: sum(1 for line in case.lb.output if "service.access" in line) for case in cases
    }
    print("access lines in the last 500 output lines: " + ", ".join(
        f"{label}: {n}" for label, n in lines.items()))  # fmt: skip
    pairs = pairs_if_asked(args, procs.pin, cases[0], cases[1:], "side by side with 'off'")
    off = median(results[cases[0].label], "rps")
    print("\nthroughput / access log off (the service with request ids, no access log):")
    for case in cases[1:]:
        ratio = median(results[case.label], "rps") / off
        line = f"  {case.label:<24} one at a time {ratio:.3f} (cost {100 * (1 - ratio):+5.1f} %)"
        if case.label in pairs:
            sbs = statistics.median(pairs[case.label].ratios)
            line += f"; side by side {sbs:.3f} (cost {100 * (1 - sbs):+5.1f} %)"
        print(line)
    save(
        "access-log",
        stamp,
        {
            "runs": {k: [asdict(r) for r in v] for k, v in results.items()},
            "pairs": {k: asdict(v) for k, v in pairs.items()},
        },
    )


def main() -> int:
    parser = bench_parser(__doc__ or "")
    add_run_options(parser, duration=5.0, repeats=3, what="case")
    smoke = {"duration": 0.2, "repeats": 1, "pair_repeats": 1, "pair_duration": 0.2}
    return run_bench("access-log", parser.parse_args(), bench_access_log, smoke)


if __name__ == "__main__":
    sys.exit(main())
