#!/usr/bin/env python
"""Metrics recording cost: proxied /api/x throughput with recording ON and OFF, one invocation.

Proxied /api/x throughput, 1 worker, metrics recording ON (the service) versus OFF and
amplified (bench/_norecord.py: store, sample, times11) and an A/A control; one app at a
time (interleaved repeats, medians) and side by side (each variant loaded together with ON on
the same core); plus the in-process cost of one recording step and, with --profile, py-spy's
share of it.

How it measures (wrk, pinning, CPU per request, other load, results): bench/harness.py.

    /work/venv/bin/python bench/record_cost.py
        [--duration 5] [--repeats 5] [--pair-repeats 2] [--profile] [--smoke]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import timeit
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from types import SimpleNamespace

if __package__ in (None, ""):  # run as a script: make ``bench`` (and ``tests``) importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.harness import (
    pairs_if_asked,
    URL_VARS,
    Case,
    Processes,
    WrkRun,
    add_run_options,
    bench_env,
    bench_parser,
    check_frames,
    frame_shares,
    get_json,
    interleaved,
    control_wanted,
    launch_lb,
    machine_load,
    median,
    micro_calls,
    print_runs_table,
    record_profile,
    run_bench,
    save,
    start_nginx_ports,
)


def record_micro() -> dict[str, float]:
    """µs per call of the recording step, in this process, without Sanic or sockets."""
    from service.metrics import MetricsLayout, RequestSample, SharedMemoryStore
    from service.sharedmem import Plan, SharedBlock

    plan = Plan()
    layout = MetricsLayout(
        plan,
        ("api-gateway", "dashboard-ui", "blog-service", "auth-service", "user-service", "local"),
    )
    store = SharedMemoryStore(SharedBlock(plan.allocate(), plan).claim(), layout)
    request = SimpleNamespace(path="/api/x", method="GET", headers={})
    sample = RequestSample.of(request, "api-gateway", 200, 0.0042, False)  # type: ignore[arg-type]
    cases: dict[str, Callable[[], object]] = {
        "RequestSample.of (real API request)": lambda: RequestSample.of(
            request,  # type: ignore[arg-type]
            "api-gateway",
            200,
            0.0042,
            False,
        ),
        "SharedMemoryStore.record (real API request)": lambda: store.record(sample),
        "both (the handler's recording step)": lambda: store.record(
            RequestSample.of(request, "api-gateway", 200, 0.0042, False)  # type: ignore[arg-type]
        ),
    }
    out = {}
    for name, fn in cases.items():
        number = micro_calls(100_000)
        best = min(timeit.repeat(fn, number=number, repeat=5))
        out[name] = best / number * 1e6
    return out


# py-spy frames of the recording step: name -> ``function (path`` (checked at start-up)
PROFILE_FRAMES = {
    "SharedMemoryStore.record": "record (service/metrics/shared.py",
    "RequestSample.of": "of (service/metrics/sample.py",
}


def bench_record(args: argparse.Namespace, procs: Processes, tmp: Path, stamp: str) -> None:
    check_frames(PROFILE_FRAMES)
    print("in-process cost of the recording step (best of 5 × 100,000 calls):")
    micro = record_micro()
    for name, us in micro.items():
        print(f"  {name:<46} {us:6.2f} µs/call")

    (nginx,), nginx_proc = start_nginx_ports(procs, tmp, 1)
    urls = {var: nginx for var in URL_VARS}
    variants = [("ON  service.app (recording)", "service.app:app", {})]
    for mode in (m.strip() for m in args.modes.split(",")):
        if mode.startswith("times"):
            label = f"x{mode[5:]} (recording {mode[5:]} times)"
        else:
            what = {"store": "record() no-op", "sample": "no sample either"}[mode]
            label = f"OFF {mode} ({what})"
        variants.append((label, "bench._norecord:app", {"BENCH_NORECORD": mode}))
    if control_wanted(args.no_control):
        variants.append(("ON  again (A/A control)", "service.app:app", {}))
    cases = []
    for i, (label, app, extra) in enumerate(variants):
        lb = launch_lb(procs, name=f"record-{i}", app=app, env=bench_env(urls, extra))
        cases.append(Case(label, lb))
    on, others = cases[0], cases[1:]
    print(
        f"\n(1) one app at a time: wrk -t1 -c{args.connections} -d{args.duration:g}s --latency, "
        f"{args.repeats} repeats interleaved, 1 worker, pinning {'on' if procs.pin else 'off'}; "
        f"{machine_load()}"
    )
    results = interleaved(
        cases, repeats=args.repeats, duration=args.duration, connections=args.connections,
        pin=procs.pin, nginx=nginx_proc,
    )  # fmt: skip
    print_runs_table(cases, results, on.label, "ON")
    sequential = sequential_ratios(on, others, results)

    pairs = pairs_if_asked(
        args,
        procs.pin,
        on,
        others,
        "(2) side by side: ON and one other app loaded at once",
        f"; {machine_load()}",
    )

    # The swap really happened: the ON apps counted every request, the OFF ones none.
    counted = {
        c.label: get_json(c.lb.url, "/stats")["load-balancer"]["total_requests"] for c in cases
    }
    print("\n/stats total_requests at the end (OFF: 0; xN: N times as many as ON):")
    for label, count in counted.items():
        print(f"  {label:<30} {count:>10,}")
    if stale := [label for label, count in counted.items() if label.startswith("OFF") and count]:
        raise RuntimeError(f"recording was not switched off in {stale}: bench/_norecord.py")

    shares = {}
    if args.profile:
        print("\nprofile of ON, 1 worker (py-spy, Python frames):")
        raw = record_profile(
            procs, on.lb, label="record-on", stamp=stamp, seconds=max(int(args.duration), 5),
            connections=args.connections, pin=procs.pin, native=False, formats=("raw",),
        )  # fmt: skip
        shares = frame_shares(raw, PROFILE_FRAMES) if raw else {}
    if shares:
        print(
            f"  {shares['samples']:.0f} samples: SharedMemoryStore.record "
            f"{shares['SharedMemoryStore.record']:.1f} %, RequestSample.of "
            f"{shares['RequestSample.of']:.1f} % of the worker's time (inclusive)"
        )

    print(
        "\nrecording cost = 1 - (ON req/s) / (OFF req/s), target < 5 %; for xN: the cost of "
        "one recording step = ((ON req/s) / (xN req/s) - 1) / (N - 1)"
    )
    for case in others:
        times = int(case.label[1:].split()[0]) if case.label.startswith("x") else 0

        def cost(ratio: float, times: int = times) -> float:
            """X/ON req/s -> the cost of recording (of one extra recording for xN)."""
            return (1 / ratio - 1) / (times - 1) if times else 1 - 1 / ratio

        seq = sequential[case.label]
        cpu = seq["cpu"] - seq["cpu_on"]
        line = (
            f"  {case.label:<32} one at a time: {100 * cost(seq['ratio_of_medians']):+5.1f} % "
            f"(medians), {100 * cost(seq['median_of_ratios']):+5.1f} % (per repeat), "
            f"{cpu / (times - 1) if times else -cpu:+.1f} µs CPU/req"
        )
        if case.label in pairs:
            sbs = cost(statistics.median(pairs[case.label].ratios))
            line += f"; side by side: {100 * sbs:+5.1f} %"
            if not case.label.startswith("ON"):
                line += f" -> {'met' if sbs < 0.05 else 'NOT met'}"
        print(line)
    print(
        "  (the A/A control row is the noise floor: two identical ON apps; see bench/README.md "
        "for which figure to trust)"
    )
    save(
        "record",
        stamp,
        {
            "args": vars(args),
            "micro_us": micro,
            "results": {k: [asdict(r) for r in v] for k, v in results.items()},
            "sequential": sequential,
            "side_by_side": {k: asdict(v) for k, v in pairs.items()},
            "counted": counted,
            "profile_share": shares,
        },
    )


def sequential_ratios(
    base: Case, others: list[Case], results: dict[str, list[WrkRun]]
) -> dict[str, dict[str, float]]:
    """X/base req/s: ratio of the medians, and median of the per-repeat ratios."""
    out = {}
    for case in others:
        runs, base_runs = results[case.label], results[base.label]
        out[case.label] = {
            "ratio_of_medians": median(runs, "rps") / median(base_runs, "rps"),
            "median_of_ratios": statistics.median(
                x.rps / b.rps for x, b in zip(runs, base_runs, strict=True)
            ),
            "cpu_on": median(base_runs, "server_cpu_us"),
            "cpu": median(runs, "server_cpu_us"),
        }
    return out


def main() -> int:
    parser = bench_parser(__doc__)
    add_run_options(parser, duration=5.0, repeats=5, what="variant")
    parser.add_argument(
        "--modes", default="store,sample,times11",
        help="variants of bench/_norecord.py: store, sample, times<N> "
        "(default: store,sample,times11)",
    )  # fmt: skip
    parser.add_argument("--no-control", action="store_true", help="skip the A/A control (ON twice)")
    parser.add_argument("--profile", action="store_true", help="then py-spy the ON worker")
    smoke = {"duration": 0.2, "repeats": 1, "pair_repeats": 1, "pair_duration": 0.2,
             "modes": "sample,times2", "profile": True}  # fmt: skip
    return run_bench("record", parser.parse_args(), bench_record, smoke)


if __name__ == "__main__":
    sys.exit(main())
