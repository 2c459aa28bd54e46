#!/usr/bin/env python
"""Admission control: its cost on the hot path, its exactness, and its memory under a flood of keys.

1. in process: µs per decision (``Gate.admit`` + release) for one per-client limit;
2. proxied ``/api/x`` throughput, 1 worker, limits off vs one limit on (``LB_RATE_LIMIT``
   far above the load, so every request is decided and none refused), one at a time
   (interleaved, medians) and side by side (both load balancers loaded at once on one core);
3. exactness across workers: wrk floods one client's limit on a 2-worker load balancer;
   admitted requests (from ``/stats``) against ``burst + rate × seconds``;
4. exactness across replicas (``--replicas``): two 2-worker replicas on one Redis, one
   client at twice the rate split 50/50 and 90/10 for 10 s, and with Redis killed;
5. keys (``--keys``): wrk sends a new ``X-Api-Key`` on every request (up to a million in a
   minute) while one heavy key floods at 5x its rate; the process tree's RSS and PSS
   before and after, the heavy key's admissions, the table's state.

How it measures (wrk, pinning, CPU per request, other load, results): bench/harness.py.

    .venv/bin/python bench/admission_cost.py [--duration 5] [--repeats 3] [--pair-repeats 2]
        [--replicas] [--keys [--keys-seconds 60]] [--skip-cost]
"""

from __future__ import annotations

import argparse
import logging
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import timeit
from dataclasses import asdict
from pathlib import Path
from types import SimpleNamespace
from typing import Any

if __package__ in (None, ""):  # run as a script: make ``bench`` (and ``tests``) importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.harness import (
    pairs_if_asked,
    URL_VARS,
    Case,
    LoadBalancer,
    Mode,
    Processes,
    add_run_options,
    bench_env,
    bench_parser,
    get_json,
    interleaved,
    control_wanted,
    launch_lb,
    machine_load,
    median,
    micro_calls,
    parse_wrk,
    print_runs_table,
    pss_kib,
    run_bench,
    run_wrk,
    save,
    start_nginx,
    warm,
    wrk_argv,
)
from tests.support import REPO
from tests.support.flood import client_from, flood, in_parallel
from tests.support.redis import RedisServer

ONE_LIMIT = {"LB_RATE_LIMIT": "1000000/s burst=1000000"}  # decided on every request, never refused
KEYS_LUA = """
local counter, thread_id = 0, 0
local threads = 0
function setup(thread) thread:set("thread_id", threads); threads = threads + 1 end
function request()
  counter = counter + 1
  return wrk.format("GET", "/api/k", {["X-Api-Key"] = "k" .. thread_id .. "-" .. counter})
end
"""


# ------------------------------------------------------------------------------- 1. micro


def admit_micro() -> dict[str, float]:
    """µs per ``Gate.admit`` + ``release`` of one request, one per-client limit, in this
    process, the host lock (the block's robust mutex) included."""
    from service import admission
    from service.frontdoor.client import ClientAddresses
    from service.admission.layout import LOCK_WAIT_S
    from service.admission.policy import compile_limits, route_plans
    from service.admission.table import ClientTable, RateTable
    from service.settings import load_settings
    from service.sharedmem import Plan, SharedBlock

    settings = load_settings(env=ONE_LIMIT)
    limits = compile_limits(settings)
    out = {}
    for label in ("SharedLock (robust mutex)",):
        plan = Plan()
        layout = admission.reserve(plan, settings)
        assert layout is not None
        block = SharedBlock(plan.allocate(), plan)
        row = block.claim()
        raw_bytes = block.mem.cast("B")
        gate = admission.Gate(
            mem=block.mem, layout=layout,
            lock=block.lock(layout.lock, "admission host", LOCK_WAIT_S),
            table=RateTable(block.mem, raw_bytes, layout),
            clients=ClientTable(block.mem, raw_bytes, layout),
            plans=route_plans(settings, limits), limits=limits,
            pool_names=[u.name for u in settings.upstreams],
            client_addresses=ClientAddresses(()), row_at=row.at, column=row.index,
            row_offsets=list(block.rows()), max_client_requests=0, send_fields=True,
        )  # fmt: skip
        request = SimpleNamespace(method="GET", path="/api/x", ip="127.0.0.2", headers={})

        def decide(gate: Any = gate, request: Any = request) -> None:
            request.ctx = SimpleNamespace()
            decided = gate.admit(request, "api-gateway")
            if decided is not None:
                decided.release()

        number = micro_calls(50_000)
        runs = timeit.repeat(decide, number=number, repeat=5, timer=time.process_time)
        out[label] = min(runs) / number * 1e6  # CPU time: robust to a busy machine
    return out


# ------------------------------------------------------------------------------- 2. cost


def bench_cost(args: argparse.Namespace, procs: Processes, tmp: Path) -> dict[str, Any]:
    nginx_url, nginx_proc = start_nginx(procs, tmp)
    urls = {var: nginx_url for var in URL_VARS}
    off = launch_lb(procs, name="off", app="service.app:app", env=bench_env(urls))
    on = launch_lb(procs, name="one-limit", app="service.app:app", env=bench_env(urls, ONE_LIMIT))
    quiet = launch_lb(
        procs, name="one-limit-no-fields", app="service.app:app",
        env=bench_env(urls, {**ONE_LIMIT, "LB_RATE_LIMIT_HEADERS": "false"}),
    )  # fmt: skip
    cases = [Case("limits off", off), Case("one limit on", on), Case("one limit, no fields", quiet)]
    if control_wanted(args.no_control):
        again = launch_lb(procs, name="off-again", app="service.app:app", env=bench_env(urls))
        cases.append(Case("limits off, A/A control", again))
    print(
        f"\nnginx upstream; wrk -t1 -c{args.connections} -d{args.duration:g}s, {args.repeats} "
        f"repeats interleaved, 1 worker, pinning {'on' if procs.pin else 'off'}; {machine_load()}"
    )
    results = interleaved(
        cases, repeats=args.repeats, duration=args.duration, connections=args.connections,
        pin=procs.pin, nginx=nginx_proc,
    )  # fmt: skip
    print_runs_table(cases, results, cases[0].label, "off")
    decided = get_json(on.url, "/stats")["load-balancer"]["limits"]["rate"]["default"]
    print(f"(the limit admitted {decided['admitted']:,} and limited {decided['limited']} of them)")
    pairs = pairs_if_asked(
        args, procs.pin, cases[0], cases[1:], "side by side: both load balancers loaded at once"
    )
    print()
    for case in cases[1:]:
        alone = median(results[case.label], "rps") / median(results["limits off"], "rps")
        line = f"{case.label} / limits off: one at a time {alone:.3f}"
        if pairs:
            sbs = statistics.median(pairs[case.label].ratios)
            line += f"; side by side {sbs:.3f} (cost {100 * (1 - sbs):+.1f} %, target < 5 %)"
        print(line)
    return {
        "results": {k: [asdict(r) for r in v] for k, v in results.items()},
        "side_by_side": {k: asdict(v) for k, v in pairs.items()},
    }


# -------------------------------------------------------------------------- 3. exactness


def stats_limits(lb: LoadBalancer, source: str = "127.0.0.1") -> dict[str, Any]:
    with client_from(lb.url, source) as client:
        return client.get("/stats").json()["load-balancer"]["limits"]


def bench_workers(procs: Processes, tmp: Path, seconds: float) -> dict[str, Any]:
    nginx_url, _ = start_nginx(procs, tmp)
    urls = {var: nginx_url for var in URL_VARS}
    rate, burst = 200, 20
    lb = launch_lb(
        procs, name="exact", app="service.app:app", workers=2,
        env=bench_env(urls, {"LB_RATE_LIMIT": f"{rate}/s burst={burst}"}),
    )  # fmt: skip
    print(f"\nexactness across workers: 2 workers, LB_RATE_LIMIT={rate}/s burst={burst}, wrk flood")
    out = {}
    for connections in (8, 64):
        before = stats_limits(lb)["rate"]["default"]
        started = time.monotonic()
        run = run_wrk(lb.url + "/api/x", seconds, connections, procs.pin)
        span = time.monotonic() - started
        after = stats_limits(lb)["rate"]["default"]
        admitted = after["admitted"] - before["admitted"]
        expected = burst + rate * span
        by_worker = get_json(lb.url, "/stats")["load-balancer"]["requests_by_worker"]
        print(
            f"  wrk -c{connections}: {run.requests:,} requests ({run.rps:,.0f}/s, "
            f"{run.rps / rate:.0f}x the rate) in {span:.2f} s: admitted {admitted:,}, expected "
            f"{expected:,.0f} ({admitted / expected - 1:+.2%}); requests by worker {by_worker}"
        )
        out[f"c{connections}"] = {"admitted": admitted, "expected": expected, "rps": run.rps}
        time.sleep(burst / rate + 0.2)  # the bucket refills
    return out


def shared_workers() -> int:
    """Workers of the replicas' and the keys' load balancers: 2, so the limits are shared in
    memory as in production; 1 in a smoke run, which only proves the code path runs (what
    they measure is across replicas and under many keys; 3. is the exactness across workers)."""
    return 1 if Mode.smoke else 2


def bench_replicas(procs: Processes, tmp: Path, seconds: float) -> dict[str, Any]:
    redis = RedisServer()
    try:
        nginx_url, _ = start_nginx(procs, tmp)
        urls = {var: nginx_url for var in URL_VARS}
        rate, burst = 50, 10
        env = bench_env(
            urls, {"LB_RATE_LIMIT": f"{rate}/s burst={burst}", "LB_CLUSTER_REDIS_URL": redis.url}
        )
        a, b = (
            launch_lb(procs, name=name, app="service.app:app", workers=shared_workers(), env=env)
            for name in ("replica-a", "replica-b")
        )
        print(
            f"\nexactness across replicas: 2 replicas x {shared_workers()} workers on one Redis, "
            f"LB_RATE_LIMIT={rate}/s burst={burst}; one client at 2x the rate for {seconds:g} s"
        )
        out = {}
        for n, (label, share) in enumerate((("50/50", 0.5), ("90/10", 0.9))):
            source = f"127.0.0.{10 + n}"
            on_a, on_b = in_parallel(
                lambda s=source, f=share: flood(
                    a.url, s, "/api/x", rate=2 * rate * f, seconds=seconds, connections=2
                ),
                lambda s=source, f=share: flood(
                    b.url, s, "/api/x", rate=2 * rate * (1 - f), seconds=seconds, connections=2
                ),
            )
            admitted = on_a.count(200) + on_b.count(200)
            span = max(on_a.span_s, on_b.span_s)
            expected = burst + rate * span
            print(
                f"  {label}: sent {len(on_a.answers)} + {len(on_b.answers)}, admitted "
                f"{on_a.count(200)} + {on_b.count(200)} = {admitted} in {span:.2f} s, expected "
                f"{expected:.0f} ({admitted / expected - 1:+.2%})"
            )
            out[label] = {"admitted": admitted, "expected": expected}
        redis.stop()
        time.sleep(1.0)
        alone = flood(a.url, "127.0.0.20", "/api/x", rate=2 * rate, seconds=seconds, connections=2)
        expected = burst + rate / 2 * alone.span_s
        mode = stats_limits(a)["cluster"]
        print(
            f"  Redis killed: replica a says mode {mode['mode']!r}, share {mode['share']}; one "
            f"client at 2x to a alone admitted {alone.count(200)} in {alone.span_s:.2f} s, "
            f"expected at half the rate {expected:.0f} ({alone.count(200) / expected - 1:+.2%})"
        )
        out["redis down"] = {"admitted": alone.count(200), "expected": expected}
        return out
    finally:
        redis.close()


# ------------------------------------------------------------------------------- 5. keys


def bench_keys(procs: Processes, tmp: Path, seconds: float, pin: bool) -> dict[str, Any]:
    nginx_url, _ = start_nginx(procs, tmp)
    urls = {var: nginx_url for var in URL_VARS}
    config = tmp / "keys.toml"
    rate, burst = 10, 10
    config.write_text(
        (REPO / "config" / "defaults.toml").read_text()
        + f'\n[[limits]]\nname = "keys"\nrate = "{rate}/s"\nburst = {burst}\n'
        'per = "header:X-Api-Key"\nroutes = ["api-gateway"]\n'
    )
    lb = launch_lb(
        procs, name="keys", app="service.app:app", workers=shared_workers(),
        env=bench_env(urls, {"LB_CONFIG": str(config)}),
    )  # fmt: skip
    warm(lb.url + "/api/x", 16, pin)  # warm-up: pools, first-request costs
    rss_before, pss_before = lb.rss_kib(), pss_kib(lb.proc.pid)
    script = tmp / "keys.lua"
    script.write_text(KEYS_LUA)
    argv = wrk_argv(lb.url + "/api/k", seconds, 64, pin, threads=2, script=str(script))
    print(
        f"\nkeys: {shared_workers()} workers, limit per X-Api-Key {rate}/s burst {burst}, table "
        f"{stats_limits(lb)['table']['keys']:,} keys; wrk -t2 -c64 -d{seconds:g}s, a new key per "
        "request; one heavy key at 5x its rate meanwhile"
    )
    heavy: dict[str, Any] = {}

    def heavy_hitter() -> None:
        heavy["flood"] = flood(
            lb.url, "127.0.0.30", "/api/heavy", rate=5 * rate, seconds=seconds - 2,
            connections=2, headers={"X-Api-Key": "heavy"},
        )  # fmt: skip

    thread = threading.Thread(target=heavy_hitter)
    started = time.monotonic()
    wrk = subprocess.Popen(
        argv, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    time.sleep(1.0)
    thread.start()
    samples = []
    while wrk.poll() is None:
        time.sleep(min(5.0, seconds / 3))
        samples.append((time.monotonic() - started, lb.rss_kib()))
    output = wrk.stdout.read() if wrk.stdout else ""
    thread.join()
    run = parse_wrk(output)
    rss_after, pss_after = lb.rss_kib(), pss_kib(lb.proc.pid)
    hitter = heavy["flood"]
    expected = burst + rate * hitter.span_s
    table = stats_limits(lb)["table"]
    print(
        f"  {run.requests:,} requests with distinct keys in {time.monotonic() - started:.0f} s "
        f"({run.rps:,.0f}/s), {run.non_2xx:,} not 2xx"
    )
    print(
        f"  RSS of the process tree: {rss_before:,} KiB before, {rss_after:,} KiB after "
        f"({rss_after - rss_before:+,} KiB); PSS {pss_before:,} -> {pss_after:,} KiB "
        f"({pss_after - pss_before:+,} KiB)"
    )
    print("  RSS every 5 s: " + ", ".join(f"{t:.0f}s {kib:,}" for t, kib in samples))
    print(
        f"  heavy key: sent {len(hitter.answers)} at {hitter.rate:.0f}/s, admitted "
        f"{hitter.count(200)}, expected {expected:.0f} ({hitter.count(200) / expected - 1:+.1%})"
    )
    print(f"  table: {table}")
    return {
        "requests": run.requests,
        "rss_kib": [rss_before, rss_after],
        "pss_kib": [pss_before, pss_after],
        "samples": samples,
        "heavy": {"admitted": hitter.count(200), "expected": expected},
        "table": table,
    }


def million_keys_in_process(keys: int = 1_000_000, seconds: float = 60.0) -> dict[str, Any]:
    """The gate itself under ``keys`` distinct keys in ``seconds`` of simulated time (a clock
    it is given), one heavy key at 5x its 10/s limit among them: this process's RSS before
    and after, and the heavy key's admissions. What a host's proxy cannot push through on a
    shared 2-core machine in a minute, the data structure is shown to take here."""
    from service import admission
    from service.frontdoor.client import ClientAddresses
    from service.admission.layout import LOCK_WAIT_S
    from service.admission.policy import compile_limits, route_plans
    from service.admission.table import ClientTable, RateTable
    from service.errors import RateLimited
    from service.settings import load_settings
    from service.sharedmem import Plan, SharedBlock
    from tests.support import rss_kib

    logging.getLogger("service.admission").setLevel(logging.ERROR)  # its one line, not here
    rate, burst = 10, 10
    config = Path(tempfile.mkdtemp(prefix="bench-keys-")) / "keys.toml"
    config.write_text(
        (REPO / "config" / "defaults.toml").read_text()
        + f'\n[[limits]]\nname = "keys"\nrate = "{rate}/s"\nburst = {burst}\n'
        'per = "header:X-Api-Key"\nroutes = ["api-gateway"]\n'
    )
    settings = load_settings(env={"LB_CONFIG": str(config)})
    limits = compile_limits(settings)
    plan = Plan()
    layout = admission.reserve(plan, settings)
    assert layout is not None
    block = SharedBlock(plan.allocate(), plan)
    row = block.claim()
    raw_bytes = block.mem.cast("B")
    clock = [1000.0]
    table = RateTable(block.mem, raw_bytes, layout)
    table.touch()
    gate = admission.Gate(
        mem=block.mem, layout=layout,
        lock=block.lock(layout.lock, "admission host", LOCK_WAIT_S), table=table,
        clients=ClientTable(block.mem, raw_bytes, layout), plans=route_plans(settings, limits),
        limits=limits, pool_names=[u.name for u in settings.upstreams],
        client_addresses=ClientAddresses(()), row_at=row.at, column=row.index,
        row_offsets=list(block.rows()), max_client_requests=0, send_fields=True,
        clock=lambda: clock[0],
    )  # fmt: skip

    def one(key: str) -> bool:
        request = SimpleNamespace(
            method="GET", path="/api/k", ip="127.0.0.2", headers={"x-api-key": key},
            ctx=SimpleNamespace(),
        )  # fmt: skip
        try:
            gate.admit(request, "api-gateway")
        except RateLimited:
            return False
        return True

    step = seconds / keys
    heavy_every = max(1, round(keys / (5 * rate * seconds)))
    before = rss_kib(os.getpid())
    heavy_sent = heavy_admitted = 0
    started = time.process_time()
    for n in range(keys):
        clock[0] += step
        one(f"key-{n}")
        if n % heavy_every == 0:
            heavy_sent += 1
            heavy_admitted += one("heavy")
    cpu = time.process_time() - started
    after = rss_kib(os.getpid())
    expected = burst + rate * seconds
    untracked = int(block.mem[row.at + layout.misc.at])
    print(
        f"\n{keys:,} distinct keys through the gate in {seconds:g} s of simulated time "
        f"({cpu:.1f} s of CPU, {cpu / keys * 1e6:.2f} µs a decision), table {layout.keys:,} "
        f"keys: RSS of this process {before:,} -> {after:,} KiB ({after - before:+,} KiB); "
        f"heavy key sent {heavy_sent} at {heavy_sent / seconds:.0f}/s, admitted "
        f"{heavy_admitted}, expected {expected:.0f}; untracked requests {untracked:,}"
    )
    return {
        "keys": keys,
        "rss_kib": [before, after],
        "heavy": {"sent": heavy_sent, "admitted": heavy_admitted, "expected": expected},
        "untracked": untracked,
    }


def bench_admission(args: argparse.Namespace, procs: Processes, tmp: Path, stamp: str) -> None:
    document: dict[str, Any] = {"args": vars(args)}
    print(
        "in-process cost of one decision, Gate.admit + release, one per-client limit (best of 5):"
    )
    micro = admit_micro()
    for name, us in micro.items():
        print(f"  {name:<28} {us:6.2f} µs")
    document["micro_us"] = micro
    if not args.skip_cost:
        document["cost"] = bench_cost(args, procs, tmp)
    document["workers"] = bench_workers(procs, tmp, args.exact_seconds)
    if args.replicas:
        document["replicas"] = bench_replicas(procs, tmp, args.replica_seconds)
    if args.keys:
        document["keys_in_process"] = million_keys_in_process(micro_calls(1_000_000))
        document["keys"] = bench_keys(procs, tmp, args.keys_seconds, procs.pin)
    save("admission", stamp, document)


def main() -> int:
    parser = bench_parser(__doc__)
    add_run_options(parser, duration=5.0, repeats=3, what="case")
    parser.add_argument("--skip-cost", action="store_true", help="skip the throughput runs")
    parser.add_argument("--no-control", action="store_true", help="skip the A/A control")
    parser.add_argument("--exact-seconds", type=float, default=5.0, help="wrk flood length (5)")
    parser.add_argument("--replicas", action="store_true", help="also two replicas on Redis")
    parser.add_argument("--keys", action="store_true", help="also the flood of distinct keys")
    parser.add_argument("--keys-seconds", type=float, default=60.0, help="its length (60)")
    parser.add_argument(
        "--replica-seconds", type=float, default=10.0, help="each replicas' flood (10)"
    )
    smoke = {"duration": 0.2, "repeats": 1, "pair_repeats": 1, "pair_duration": 0.2,
             "exact_seconds": 0.3, "replicas": True, "replica_seconds": 0.5, "keys": True,
             "keys_seconds": 2.2}  # fmt: skip
    return run_bench("admission", parser.parse_args(), bench_admission, smoke)


if __name__ == "__main__":
    sys.exit(main())
