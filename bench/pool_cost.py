#!/usr/bin/env python
"""Pools: a pool of 3 nginx targets versus one target, proxied throughput, in one invocation.

Proxied /api/x throughput, 1 worker, through a pool of 3 nginx targets versus one target, for
least_request and round_robin, equal weights and one target at ``;weight=3`` (one at a time
and side by side); the spread of requests over the targets, from ``/stats``; with --profile,
py-spy's share of the balancing.

How it measures (wrk, pinning, CPU per request, other load, results): bench/harness.py.

    /work/venv/bin/python bench/pool_cost.py
        [--duration 6] [--repeats 3] [--pair-repeats 2] [--profile]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import timeit
from dataclasses import asdict
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a script: make ``bench`` (and ``tests``) importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.harness import (
    pairs_if_asked,
    URL_VARS,
    Case,
    LoadBalancer,
    Processes,
    add_run_options,
    bench_env,
    bench_parser,
    check_frames,
    frame_shares,
    get_json,
    interleaved,
    launch_lb,
    machine_load,
    median,
    micro_calls,
    print_runs_table,
    record_profile,
    run_bench,
    save,
    start_nginx_ports,
    warm,
)


def pool_micro() -> dict[str, float]:
    """µs per balancing decision (choose + started + finished), in this process."""
    from service.pools import Pool, PoolLayout, PoolState
    from service.settings import TargetSpec, Upstream
    from service.sharedmem import Plan, SharedBlock

    out = {}
    for label, weights, balance in (
        ("1 target", (1,), "least_request"),
        ("3 targets, least_request", (1, 1, 1), "least_request"),
        ("3 targets, round_robin", (1, 1, 1), "round_robin"),
        ("3 targets, least_request, weight 3,1,1", (3, 1, 1), "least_request"),
        ("3 targets, round_robin, weight 3,1,1", (3, 1, 1), "round_robin"),
    ):
        targets = tuple(
            TargetSpec(url=f"http://127.0.0.1:{9000 + i}", weight=w) for i, w in enumerate(weights)
        )
        upstream = Upstream(name="api-gateway", url_env="API_GATEWAY_URL", targets=targets,
                            balance=balance)  # fmt: skip
        plan = Plan()
        layout = PoolLayout(plan, len(targets))
        state = PoolState(SharedBlock(plan.allocate(), plan).claim(), layout)
        pool = Pool(upstream, 0, state)

        def decide(pool: Pool = pool) -> None:
            target = pool.choose()
            pool.started(target)
            pool.finished(target, 0.004, failed=False)

        number = micro_calls(50_000)
        out[label] = min(timeit.repeat(decide, number=number, repeat=5)) / number * 1e6
    return out


def targets_of(lb: LoadBalancer) -> list[dict[str, Any]]:
    document = get_json(lb.url, "/stats")
    return document["load-balancer"]["upstreams"]["api-gateway"]["targets"]


# py-spy frames of balancing: name -> ``[Class].function (path`` (checked at start-up)
PROFILE_FRAMES = {
    "Pool.choose": "Pool.choose (service/pools/pool.py",
    "pick": ".pick (service/pools/balancing.py",
    "  _usable (available targets)": "_usable (service/pools/balancing.py",
    "  LeastRequest._two (random draws)": "_two (service/pools/balancing.py",
    "Pool.started": "Pool.started (service/pools/pool.py",
    "Pool.finished": "Pool.finished (service/pools/pool.py",
}


def bench_pools(args: argparse.Namespace, procs: Processes, tmp: Path, stamp: str) -> None:
    check_frames(PROFILE_FRAMES)
    print("in-process cost of one balancing decision, choose + started + finished (best of 5):")
    micro = pool_micro()
    for name, us in micro.items():
        print(f"  {name:<42} {us:6.2f} µs")

    urls, nginx_proc = start_nginx_ports(procs, tmp, 3)
    a, b, c = urls
    base = {var: a for var in URL_VARS}
    configs = [
        ("single target", a, None, (1,)),
        ("pool 3, least_request", f"{a},{b},{c}", None, (1, 1, 1)),
        ("pool 3, round_robin", f"{a},{b},{c}", "round_robin", (1, 1, 1)),
        ("pool 3, least_request, w 3,1,1", f"{a};weight=3,{b},{c}", None, (3, 1, 1)),
        ("pool 3, round_robin, w 3,1,1", f"{a};weight=3,{b},{c}", "round_robin", (3, 1, 1)),
    ]
    cases, weights = [], {}
    for i, (label, pool, balance, w) in enumerate(configs[: 1 + args.pools]):
        extra = {"API_GATEWAY_URL": pool}
        if balance:
            extra["API_GATEWAY_BALANCE"] = balance
        lb = launch_lb(procs, name=f"pool-{i}", app="service.app:app", env=bench_env(base, extra))
        cases.append(Case(label, lb))
        weights[label] = w
    print(
        f"\nnginx: one worker, 3 ports ({', '.join(u.rsplit(':', 1)[1] for u in urls)}); "
        f"wrk -t1 -c{args.connections} -d{args.duration:g}s --latency, {args.repeats} repeats "
        f"interleaved, 1 worker, pinning {'on' if procs.pin else 'off'}; {machine_load()}"
    )
    for case in cases:  # warm-up here, so that the /stats counts below cover measured runs only
        warm(case.url, args.connections, procs.pin)
    before = {case.label: targets_of(case.lb) for case in cases}
    results = interleaved(
        cases, repeats=args.repeats, duration=args.duration, connections=args.connections,
        pin=procs.pin, nginx=nginx_proc, warm_up=False,
    )  # fmt: skip
    after = {case.label: targets_of(case.lb) for case in cases}
    print_runs_table(cases, results, cases[0].label, "single")

    print(
        "\nspread of the measured runs' requests over the targets (from /stats → "
        "load-balancer.upstreams.api-gateway.targets[*].requests):"
    )
    print(f"{'case':<32} {'target':>7} {'weight':>6} {'requests':>10} {'share':>7} {'expected':>8}")
    spread = {}
    for case in cases:
        counts = [
            y["requests"] - x["requests"]
            for x, y in zip(before[case.label], after[case.label], strict=True)
        ]
        total = sum(counts) or 1
        w = weights[case.label]
        spread[case.label] = counts
        for i, count in enumerate(counts):
            name = "abc"[i]
            print(
                f"{case.label if i == 0 else '':<32} {name:>7} {w[i]:>6} {count:>10,} "
                f"{100 * count / total:>6.1f}% {100 * w[i] / sum(w):>7.1f}%"
            )
        sent = sum(r.requests for r in results[case.label])
        print(f"{'':<32} {'total':>7} {'':>6} {sum(counts):>10,}  (wrk counted {sent:,})")
    pairs = pairs_if_asked(
        args,
        procs.pin,
        cases[0],
        cases[1:],
        "side by side: the single-target LB and one pool LB loaded at once",
    )
    shares: dict[str, dict[str, float]] = {}
    if args.profile:
        frames = PROFILE_FRAMES
        for case in (cases[0], cases[1]):
            print(f"\nprofile of {case.label}, 1 worker (py-spy, Python frames):")
            raw = record_profile(
                procs, case.lb, label=f"pools-{case.lb.variant}", stamp=stamp,
                seconds=max(int(args.duration), 5), connections=args.connections, pin=procs.pin,
                native=False, formats=("raw",),
            )  # fmt: skip
            if raw is None:
                continue
            shares[case.label] = frame_shares(raw, frames)
            print(
                f"  {shares[case.label]['samples']:.0f} samples; inclusive share of the worker's "
                "time: " + ", ".join(f"{k.strip()} {shares[case.label][k]:.1f} %" for k in frames)
            )
    single = median(results[cases[0].label], "rps")
    print("\nthroughput through the pool / through one target (target: cost < 5 %):")
    for case in cases[1:]:
        ratio = median(results[case.label], "rps") / single
        line = f"  {case.label:<32} one at a time {ratio:.3f} (cost {100 * (1 - ratio):+5.1f} %)"
        if case.label in pairs:
            sbs = statistics.median(pairs[case.label].ratios)
            line += (
                f"; side by side {sbs:.3f} (cost {100 * (1 - sbs):+5.1f} %) -> "
                f"{'met' if sbs > 0.95 else 'NOT met'}"
            )
        print(line)
    save(
        "pools",
        stamp,
        {
            "args": vars(args),
            "micro_us": micro,
            "results": {k: [asdict(r) for r in v] for k, v in results.items()},
            "spread": spread,
            "weights": weights,
            "side_by_side": {k: asdict(v) for k, v in pairs.items()},
            "profile_share": shares,
        },
    )


def main() -> int:
    parser = bench_parser(__doc__)
    add_run_options(parser, duration=6.0, repeats=3, what="case")
    parser.add_argument(
        "--profile", action="store_true", help="then py-spy the single-target and pool LBs"
    )
    parser.add_argument(
        "--pools", type=int, default=4, help="pool cases measured against the single target (4)"
    )
    smoke = {"duration": 0.2, "repeats": 1, "pair_repeats": 1, "pair_duration": 0.2,
             "profile": True, "pools": 1}  # fmt: skip
    return run_bench("pools", parser.parse_args(), bench_pools, smoke)


if __name__ == "__main__":
    sys.exit(main())
