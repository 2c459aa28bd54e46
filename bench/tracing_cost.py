#!/usr/bin/env python
"""Tracing's cost: proxied GET /api/x requests/s with no OTLP endpoint (trace context only),
exporting every request's spans (to a local sink answering 200), and main without tracing.

The targets it guards (docs/tracing.md): with no endpoint, under 1 % on the hot path;
exporting every request, under 10 %. 1-worker load balancers in front of one nginx,
identical but for tracing, run one at a time and interleaved (medians of ``--repeats``).
"main, no tracing" is ``--baseline-ref`` (main) exported with ``git archive`` into a
temporary folder and run from there; when git cannot give it, "no endpoint" is the
baseline and the output says so. The sink is an HTTP server in this process counting the
export requests it got (so the exporting case is seen to export).

How it measures (wrk, pinning, CPU per request, other load, results): bench/harness.py.

    .venv/bin/python bench/tracing_cost.py [--duration 5] [--repeats 3] [--baseline-ref main]
        [--smoke]
"""

from __future__ import annotations

import argparse
import io
import subprocess
import sys
import tarfile
import threading
from dataclasses import asdict
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a script: make ``bench`` (and ``tests``) importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.harness import (
    REPO,
    URL_VARS,
    Case,
    Processes,
    bench_parser,
    interleaved,
    launch_lb,
    lb_env,
    machine_load,
    median,
    print_runs_table,
    run_bench,
    save,
    start_nginx,
)

NO_ENDPOINT, EXPORTING, MAIN = "no endpoint", "exporting every request", "main, no tracing"


class Sink:
    """An OTLP/HTTP stand-in: reads each body, answers 200, counts."""

    def __init__(self) -> None:
        self.requests = 0
        sink = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self) -> None:
                self.rfile.read(int(self.headers.get("content-length", 0)))
                sink.requests += 1
                self.send_response(200)
                self.send_header("content-length", "0")
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_port}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def export_ref(ref: str, into: Path) -> Path | None:
    """``ref`` of this repository as files in ``into`` (None when git cannot give it)."""
    try:
        archive = subprocess.run(
            ["git", "-C", str(REPO), "archive", ref], capture_output=True, check=True
        ).stdout
    except (OSError, subprocess.CalledProcessError):
        return None
    into.mkdir(parents=True)
    with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
        tar.extractall(into, filter="data")
    return into


def bench_tracing(args: argparse.Namespace, procs: Processes, tmp: Path, stamp: str) -> None:
    url, nginx = start_nginx(procs, tmp)
    sink = Sink()
    base = {var: url for var in URL_VARS} | {"PYTHONHASHSEED": "0"}
    cases = [
        Case(NO_ENDPOINT, launch_lb(procs, name="none", app="service.app", env=lb_env(base))),
        Case(
            EXPORTING,
            launch_lb(
                procs, name="export", app="service.app",
                env=lb_env(base, {"OTEL_EXPORTER_OTLP_ENDPOINT": sink.url}),
            ),
        ),
    ]  # fmt: skip
    baseline = NO_ENDPOINT
    main = None if args.smoke else export_ref(args.baseline_ref, tmp / "main")
    if main is not None:
        env = lb_env(base, repo=main)
        lb = launch_lb(procs, name="main", app="service.app", env=env, repo=main)
        cases.insert(0, Case(MAIN, lb))
        baseline = MAIN
    print(
        f"wrk -t1 -c{args.connections} -d{args.duration:g}s --latency, {args.repeats} repeats "
        f"interleaved, 1 worker, pinning {'on' if procs.pin else 'off'}; {machine_load()}"
    )
    if main is None:
        why = "smoke" if args.smoke else f"git archive {args.baseline_ref} failed"
        print(f"baseline: {NO_ENDPOINT} ({MAIN} skipped: {why})")
    results = interleaved(
        cases, repeats=args.repeats, duration=args.duration, connections=args.connections,
        pin=procs.pin, nginx=nginx,
    )  # fmt: skip
    print_runs_table(cases, results, baseline, baseline.split()[0])
    exports = sink.requests
    sink.stop()
    print(f"\nexport requests the sink answered: {exports}")
    if exports == 0:
        raise RuntimeError("the exporting load balancer exported nothing")
    first = median(results[baseline], "rps")
    cpu = median(results[baseline], "server_cpu_us")
    print(f"\nagainst {baseline} (medians of {args.repeats}; on a busy machine read CPU):")
    for case in cases:
        if case.label != baseline:
            ratio = median(results[case.label], "rps") / first
            more = median(results[case.label], "server_cpu_us") / cpu - 1 if cpu else 0.0
            print(
                f"  {case.label:<26} throughput {ratio:.3f} (cost {100 * (1 - ratio):+5.1f} %), "
                f"CPU per request {100 * more:+5.1f} %"
            )
    save(
        "tracing",
        stamp,
        {
            "baseline": baseline,
            "exports": exports,
            "runs": {k: [asdict(r) for r in v] for k, v in results.items()},
        },
    )


def main() -> int:
    parser = bench_parser(__doc__ or "")
    parser.add_argument("--duration", type=float, default=5.0, help="seconds per wrk run (5)")
    parser.add_argument("--repeats", type=int, default=3, help="runs per case; medians (3)")
    parser.add_argument(
        "--baseline-ref", default="main", help="the git ref run as 'main, no tracing' (main)"
    )
    smoke = {"duration": 0.5, "repeats": 1}
    return run_bench("tracing", parser.parse_args(), bench_tracing, smoke)


if __name__ == "__main__":
    sys.exit(main())
