#!/usr/bin/env python
"""A sustained minute of proxied load: throughput and RSS over time, in one invocation.

60 s of wrk on proxied /api/x, 1 worker, in consecutive 5-s runs, while the worker's RSS and
open descriptors are sampled every second; the loaded load balancer compared side by side with
an identical idle one before and after.

How it measures (wrk, pinning, CPU per request, other load, results): bench/harness.py.

    /work/venv/bin/python bench/sustained.py [--seconds 60] [--step 5]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make ``bench`` (and ``tests``) importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.harness import (
    URL_VARS,
    Case,
    Processes,
    WrkRun,
    bench_env,
    bench_parser,
    get_json,
    launch_lb,
    machine_load,
    measure_wrk,
    run_bench,
    run_wrk,
    save,
    side_by_side,
    start_nginx_ports,
)
from tests.support import open_fds, rss_kib


@dataclass
class Sample:
    t: float
    worker_rss_kib: int
    main_rss_kib: int
    worker_fds: int


def bench_sustained(args: argparse.Namespace, procs: Processes, tmp: Path, stamp: str) -> None:
    (nginx,), nginx_proc = start_nginx_ports(procs, tmp, 1)
    env = bench_env({var: nginx for var in URL_VARS})
    lb = launch_lb(procs, name="sustained", app="service.app:app", env=env)
    # A second, identical load balancer that is not under the long load: compared side by side
    # with the loaded one before and after the minute, it tells a slowdown of the loaded one
    # apart from the machine's own drift (see side_by_side).
    reference = launch_lb(procs, name="reference", app="service.app:app", env=env)
    loaded_case, reference_case = Case("loaded", lb), Case("reference", reference)
    workers = lb.serving_workers()
    if len(workers) != 1:
        raise RuntimeError(f"expected one worker process, found {workers}")
    (worker,) = workers
    idle = Sample(0.0, rss_kib(worker), rss_kib(lb.proc.pid), open_fds(worker))
    run_wrk(lb.url + "/api/x", args.warm_up, args.connections, procs.pin)
    run_wrk(reference.url + "/api/x", args.warm_up, args.connections, procs.pin)
    warm = Sample(0.0, rss_kib(worker), rss_kib(lb.proc.pid), open_fds(worker))
    samples: list[Sample] = []
    stop = threading.Event()
    t0 = 0.0

    def sampler() -> None:
        while not stop.wait(1.0 - (time.monotonic() - t0) % 1.0):
            samples.append(
                Sample(time.monotonic() - t0, rss_kib(worker), rss_kib(lb.proc.pid),
                       open_fds(worker))
            )  # fmt: skip

    steps = max(1, round(args.seconds / args.step))
    print(
        f"{steps} consecutive wrk runs of {args.step:g} s (-t1 -c{args.connections} --latency), "
        f"1 worker, pinning {'on' if procs.pin else 'off'}, after a {args.warm_up:g}-s warm-up; "
        f"{machine_load()}"
    )
    for name, sample in (("idle before any load", idle), ("after the warm-up", warm)):
        print(
            f"  {name}: worker RSS {sample.worker_rss_kib / 1024:.1f} MiB, main "
            f"{sample.main_rss_kib / 1024:.1f} MiB, worker fds {sample.worker_fds}"
        )
    compare = {"repeats": 2, "duration": args.step, "connections": args.connections,
               "pin": procs.pin}  # fmt: skip
    if args.compare:
        print("  before: loaded vs reference side by side, both orders")
        before = side_by_side(reference_case, [loaded_case], **compare)["loaded"]
    t0 = time.monotonic()
    thread = threading.Thread(target=sampler, daemon=True)
    thread.start()
    runs: list[WrkRun] = []
    try:
        for i in range(steps):
            run = measure_wrk(
                lb.url + "/api/x", lb.proc, [nginx_proc], args.step, args.connections, procs.pin
            )
            runs.append(run)
            rss = samples[-1].worker_rss_kib / 1024 if samples else 0.0
            print(
                f"  {i * args.step:>3g}-{(i + 1) * args.step:<3g} s {run.rps:>8,.0f} req/s "
                f"p50 {run.p50_ms:5.2f} ms p99 {run.p99_ms:6.2f} ms "
                f"{run.server_cpu_us:5.0f} µs CPU/req  other load {run.other_load:4.2f}  "
                f"worker RSS {rss:6.1f} MiB" + (f"  ERRORS {run.errors}" if run.errors else ""),
                flush=True,
            )
    finally:
        stop.set()
        thread.join()
    time.sleep(2.0)  # wrk's connections closed, the worker idle again
    after = Sample(0.0, rss_kib(worker), rss_kib(lb.proc.pid), open_fds(worker))
    if args.compare:
        print("  after: loaded vs reference side by side, both orders")
        later = side_by_side(reference_case, [loaded_case], **compare)["loaded"]
    stats = get_json(lb.url, "/stats")["load-balancer"]

    per10 = max(1, round(10 / args.step))
    first, last = runs[:per10], runs[-per10:]

    def rate(group: list[WrkRun]) -> float:
        return sum(r.requests for r in group) / (len(group) * args.step)

    first_rps, last_rps = rate(first), rate(last)
    at = {round(s.t): s for s in samples}

    def rss_at(second: int) -> float:
        nearest = min(at, key=lambda t: abs(t - second))
        return at[nearest].worker_rss_kib / 1024

    end = samples[-1]
    growth = (end.worker_rss_kib - at[min(at, key=lambda t: abs(t - 10))].worker_rss_kib) / 1024
    sent = sum(r.requests for r in runs)
    print(
        f"\nthroughput first 10 s: {first_rps:,.0f} req/s, last 10 s: {last_rps:,.0f} req/s, "
        f"ratio {last_rps / first_rps:.3f} -> target ≥ 0.95: "
        f"{'met' if last_rps >= 0.95 * first_rps else 'NOT met'}"
    )
    if args.compare:
        start_ratio = statistics.median(before.ratios)
        end_ratio = statistics.median(later.ratios)
        print(
            f"side by side with the reference (loaded/reference req/s): before "
            f"{start_ratio:.3f} ({' '.join(f'{r:.3f}' for r in before.ratios)}), after "
            f"{end_ratio:.3f} ({' '.join(f'{r:.3f}' for r in later.ratios)}); after/before "
            f"{end_ratio / start_ratio:.3f} -> target ≥ 0.95: "
            f"{'met' if end_ratio >= 0.95 * start_ratio else 'NOT met'}"
        )
    print(
        f"worker RSS (MiB): idle {idle.worker_rss_kib / 1024:.1f}, after warm-up "
        f"{warm.worker_rss_kib / 1024:.1f}, 1 s {rss_at(1):.1f}, "
        f"10 s {rss_at(10):.1f}, 30 s {rss_at(30):.1f}, end ({end.t:.0f} s) "
        f"{end.worker_rss_kib / 1024:.1f}, max {max(s.worker_rss_kib for s in samples) / 1024:.1f}"
        f"; growth 10 s -> end {growth:+.2f} MiB over {sum(r.requests for r in runs[per10:]):,} "
        f"requests -> flat (< 1 MiB): {'yes' if abs(growth) < 1 else 'NO'}"
    )
    print(
        f"2 s after the load: worker RSS {after.worker_rss_kib / 1024:.1f} MiB, fds "
        f"{after.worker_fds} (idle before any load: {idle.worker_fds}; under load max "
        f"{max(s.worker_fds for s in samples)}); main process RSS idle "
        f"{idle.main_rss_kib / 1024:.1f}, after {after.main_rss_kib / 1024:.1f} MiB"
    )
    print(
        f"requests: wrk counted {sent:,} (errors {sum(r.errors for r in runs)}); /stats "
        f"total_requests {stats['total_requests']:,}, success_rate {stats['success_rate']} "
        "(/stats also counts the start-up checks, the warm-up, and the requests in flight "
        "when each wrk run stops, which wrk abandons)"
    )
    save(
        "sustained",
        stamp,
        {
            "args": vars(args),
            "idle": asdict(idle),
            "warm": asdict(warm),
            "after": asdict(after),
            "runs": [asdict(r) for r in runs],
            "samples": [asdict(s) for s in samples],
            "stats": stats,
            "side_by_side": (
                {"before": asdict(before), "after": asdict(later)} if args.compare else {}
            ),
        },
    )


def main() -> int:
    parser = bench_parser(__doc__)
    parser.add_argument("--seconds", type=float, default=60.0, help="total seconds of load (60)")
    parser.add_argument("--step", type=float, default=5.0, help="seconds per wrk run (5)")
    parser.add_argument("--warm-up", type=float, default=2.0, help="seconds of wrk first (2)")
    parser.add_argument(
        "--no-compare", dest="compare", action="store_false",
        help="skip the side-by-side comparisons with a reference load balancer",
    )  # fmt: skip
    return run_bench("sustained", parser.parse_args(), bench_sustained)


if __name__ == "__main__":
    sys.exit(main())
