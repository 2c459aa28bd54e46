#!/usr/bin/env python
"""Rollouts per pool (issue 24): what hashing, a sticky cookie and slow start cost a request.

Proxied /api/x throughput, 1 worker, a pool of 3 nginx targets: nothing configured versus
``BALANCE=hash`` (on the client address: wrk's one address, so one target takes it all),
``STICKY_COOKIE`` (wrk sends no cookie back, so every answer sets one: the dearest case),
``SLOW_START=30`` (no target ramping: the periodic look at the shared state), and all three
at once. One at a time (interleaved, medians of ``--repeats``) and side by side with the
base (each pair loaded together on one core). Target: < 5 % each; the in-process cost of a
decision (choose + started + finished) is printed first.

How it measures (wrk, pinning, CPU per request, other load, results): bench/harness.py.

    /work/venv/bin/python bench/rollouts_cost.py [--duration 6] [--repeats 3] [--pair-repeats 2]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
import timeit
from dataclasses import asdict
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make ``bench`` (and ``tests``) importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.harness import (
    pairs_if_asked,
    URL_VARS,
    Case,
    Mode,
    Processes,
    add_run_options,
    bench_env,
    bench_parser,
    interleaved,
    launch_lb,
    machine_load,
    median,
    micro_calls,
    print_runs_table,
    run_bench,
    save,
    start_nginx_ports,
)

HASH = {"API_GATEWAY_BALANCE": "hash"}
STICKY = {"API_GATEWAY_STICKY_COOKIE": "lb_sticky"}
SLOW = {"API_GATEWAY_SLOW_START": "30"}
CASES: list[tuple[str, dict[str, str]]] = [
    ("nothing configured", {}),
    ("hash (client)", HASH),
    ("sticky cookie", STICKY),
    ("slow start 30 s", SLOW),
    ("all three", {**HASH, **STICKY, **SLOW}),
]


def decision_micro() -> dict[str, float]:
    """CPU µs per decision (choose + started + finished), best of 15, in this process."""
    from service.pools import Affinity, Pool, PoolLayout, PoolState
    from service.settings import TargetSpec, Upstream
    from service.sharedmem import Plan, SharedBlock

    settings = {
        "nothing configured": ({}, None),
        "hash (a key)": ({"balance": "hash"}, Affinity(key="10.1.2.3")),
        "hash, factor 125": ({"balance": "hash", "hash_balance_factor": 125}, Affinity(key="k")),
        "sticky cookie (valid)": ({"sticky_cookie": "s"}, "sticky"),
        "slow start 30 s": ({"slow_start": 30.0}, None),
    }
    out = {}
    for label, (fields, given) in settings.items():
        targets = tuple(TargetSpec(url=f"http://127.0.0.1:{9000 + i}") for i in range(3))
        upstream = Upstream(name="api-gateway", url_env="API_GATEWAY_URL", targets=targets,
                            **fields)  # type: ignore[arg-type]  # fmt: skip
        plan = Plan()
        layout = PoolLayout(plan, len(targets))
        pool = Pool(upstream, 0, PoolState(SharedBlock(plan.allocate(), plan).claim(), layout))
        affinity = Affinity(sticky=pool.targets[1].sticky_id) if given == "sticky" else given

        def decide(pool: Pool = pool, affinity: Affinity | None = affinity) -> None:
            target = pool.choose(affinity=affinity)
            pool.started(target)
            pool.finished(target, 0.004, failed=False)

        number = micro_calls(50_000)
        runs = timeit.repeat(decide, number=number, repeat=15, timer=time.process_time)
        out[label] = min(runs) / number * 1e6
    return out


def bench_rollouts(args: argparse.Namespace, procs: Processes, tmp: Path, stamp: str) -> None:
    print("in-process CPU cost of one decision, choose + started + finished (best of 15):")
    micro = decision_micro()
    for name, us in micro.items():
        print(f"  {name:<28} {us:6.2f} µs")

    urls, nginx_proc = start_nginx_ports(procs, tmp, 3)
    base = {var: urls[0] for var in URL_VARS}
    # smoke: two starts, the base and every feature at once (each code path runs)
    chosen = [CASES[0], CASES[-1]] if Mode.smoke else CASES
    cases = []
    for i, (label, extra) in enumerate(chosen):
        env = bench_env(base, {"API_GATEWAY_URL": ",".join(urls), **extra})
        lb = launch_lb(procs, name=f"rollouts-{i}", app="service.app:app", env=env)
        cases.append(Case(label, lb))
    print(
        f"\nnginx: one worker, 3 ports; wrk -t1 -c{args.connections} -d{args.duration:g}s "
        f"--latency, {args.repeats} repeats interleaved, 1 worker, pinning "
        f"{'on' if procs.pin else 'off'}; {machine_load()}"
    )
    results = interleaved(
        cases, repeats=args.repeats, duration=args.duration, connections=args.connections,
        pin=procs.pin, nginx=nginx_proc,
    )  # fmt: skip
    print_runs_table(cases, results, cases[0].label, "nothing")
    pairs = pairs_if_asked(
        args,
        procs.pin,
        cases[0],
        cases[1:],
        "side by side: the base LB and one other loaded at once",
    )
    single = median(results[cases[0].label], "rps")
    print("\nthroughput with the feature / with nothing configured (target: cost < 5 %):")
    for case in cases[1:]:
        one = median(results[case.label], "rps") / single
        line = f"  {case.label:<20} one at a time {one:.3f} (cost {100 * (1 - one):+5.1f} %)"
        if case.label in pairs:
            sbs = statistics.median(pairs[case.label].ratios)
            line += f"; side by side {sbs:.3f} (cost {100 * (1 - sbs):+5.1f} %)"
            line += f" -> {'met' if sbs > 0.95 else 'NOT met'}"
        print(line)
    save(
        "rollouts",
        stamp,
        {
            "args": vars(args),
            "micro_us": micro,
            "results": {k: [asdict(r) for r in v] for k, v in results.items()},
            "side_by_side": {k: asdict(v) for k, v in pairs.items()},
        },
    )


def main() -> int:
    parser = bench_parser(__doc__)
    add_run_options(parser, duration=6.0, repeats=3, what="case")
    smoke = {"duration": 0.2, "repeats": 1, "pair_repeats": 1, "pair_duration": 0.2}
    return run_bench("rollouts", parser.parse_args(), bench_rollouts, smoke)


if __name__ == "__main__":
    sys.exit(main())
