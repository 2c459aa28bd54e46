#!/usr/bin/env python
"""Metrics, /stats and pools under load, in one bounded invocation per benchmark, on 127.0.0.1.

    record     proxied /api/x throughput, 1 worker, metrics recording ON (the service) versus
               OFF and amplified (bench/variant_norecord.py: store, sample, times11) and an
               A/A control; one app at a time (interleaved repeats, medians) and side by side
               (each variant loaded together with ON on the same core); plus the in-process
               cost of one recording step and, with --profile, py-spy's share of it
    stats      latency of sequential ``GET /stats`` calls, 1 worker: five healthy stdlib
               upstreams with the cache (default TTL, 1 s) and without (TTL 0); then one
               upstream that never answers, with TTL 0, TTL 1 s, and at the dashboard's pace
    sustained  60 s of wrk on proxied /api/x, 1 worker, in consecutive 5-s runs, while the
               worker's RSS and open descriptors are sampled every second; the loaded load
               balancer compared side by side with an identical idle one before and after
    pools      proxied /api/x throughput, 1 worker, through a pool of 3 nginx targets versus
               one target, for least_request and round_robin, equal weights and one target
               at ``;weight=3`` (one at a time and side by side); the spread of requests over
               the targets, from ``/stats``; with --profile, py-spy's share of the balancing

wrk: one thread, 32 keep-alive connections, ``--latency``; CPU pinning as in proxy_bench.py
(the 1-worker load balancer on CPU 0, nginx, wrk and this script's own servers on CPU 1).
Each run also records the serving process tree's CPU µs per request and the "other load"
(CPUs busy with processes outside the run). Why side by side: bench/README.md. Results go to
bench/results/ as JSON.

    /work/venv/bin/python bench/stats_bench.py record [--duration 5] [--repeats 5] [--profile]
    /work/venv/bin/python bench/stats_bench.py stats [--calls 300] [--pace 0.01]
    /work/venv/bin/python bench/stats_bench.py sustained [--seconds 60]
    /work/venv/bin/python bench/stats_bench.py pools [--duration 6] [--repeats 3] [--profile]
"""

from __future__ import annotations

import argparse
import http.client
import json
import math
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import timeit
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Any

if __package__ in (None, ""):  # run as a script: make ``bench`` (and ``tests``) importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.harness import (
    LB_CPUS,
    LOAD_CPUS,
    REPO,
    RESULTS,
    URL_VARS,
    LoadBalancer,
    Processes,
    WrkRun,
    can_pin,
    interrupt_on_signals,
    launch_lb,
    lb_env,
    machine_load,
    measure_side_by_side,
    measure_wrk,
    median,
    open_fds,
    read_profile,
    record_profile,
    rss_kib,
    run_wrk,
    start_nginx_ports,
)

# ------------------------------------------------------------------------------- shared


@dataclass
class Case:
    label: str
    lb: LoadBalancer

    @property
    def url(self) -> str:
        return self.lb.url + "/api/x"


def get_json(base: str, path: str, timeout: float = 10.0) -> Any:
    host, port = base.removeprefix("http://").split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=timeout)
    try:
        conn.request("GET", path)
        response = conn.getresponse()
        body = response.read()
        if response.status != 200:
            raise RuntimeError(f"GET {base}{path}: HTTP {response.status}")
        return json.loads(body)
    finally:
        conn.close()


def interleaved(
    cases: list[Case],
    *,
    repeats: int,
    duration: float,
    connections: int,
    pin: bool,
    nginx: subprocess.Popen[bytes],
    warm_up: bool = True,
) -> dict[str, list[WrkRun]]:
    """Every case once per repeat, the order rotated each repeat; medians are taken later."""
    for case in cases if warm_up else ():  # pools filled, first-request costs paid
        run_wrk(case.url, 2, connections, pin)
    results: dict[str, list[WrkRun]] = {case.label: [] for case in cases}
    for rep in range(repeats):
        shift = rep % len(cases)
        for case in cases[shift:] + cases[:shift]:
            run = measure_wrk(case.url, case.lb.proc, [nginx], duration, connections, pin)
            results[case.label].append(run)
            print(
                f"  rep {rep + 1}/{repeats} {case.label:<30} {run.rps:>9,.0f} req/s "
                f"{run.server_cpu_us:6.0f} µs CPU/req  other load {run.other_load:4.2f} CPU"
                + (f"  ERRORS {run.errors}" if run.errors else ""),
                flush=True,
            )
    return results


def print_runs_table(
    cases: list[Case], results: dict[str, list[WrkRun]], base: str, base_name: str
) -> None:
    base_rps = median(results[base], "rps")
    base_cpu = median(results[base], "server_cpu_us")
    print(
        f"\n{'case':<30} {'req/s':>8} {'p50 ms':>7} {'p99 ms':>7} {'/' + base_name:>8} "
        f"{'CPU µs/req':>10} {'Δ CPU µs':>8} {'other':>6}  {'runs (req/s)':<40} errors"
    )
    for case in cases:
        runs = results[case.label]
        rps = median(runs, "rps")
        cpu = median(runs, "server_cpu_us")
        spread = " ".join(f"{r.rps:,.0f}" for r in runs)
        print(
            f"{case.label:<30} {rps:>8,.0f} {median(runs, 'p50_ms'):>7.2f} "
            f"{median(runs, 'p99_ms'):>7.2f} {rps / base_rps:>8.3f} {cpu:>10.1f} "
            f"{cpu - base_cpu:>+8.1f} {median(runs, 'other_load'):>6.2f}  {spread:<40} "
            f"{sum(r.errors for r in runs)}"
        )
    print(
        "CPU µs/req: CPU time of the load balancer (main process + worker) per request; "
        "other: CPUs busy with processes outside this run (should be ~0)."
    )


def save(kind: str, stamp: str, document: dict[str, Any]) -> None:
    out = RESULTS / f"stats-bench-{kind}-{stamp}.json"
    out.write_text(json.dumps(document, indent=2, default=str))
    print(f"raw results: {out.relative_to(REPO)}")


def percentile(values: list[float], p: float) -> float:
    """Nearest-rank percentile (p in 0..100)."""
    ordered = sorted(values)
    return ordered[max(0, math.ceil(p / 100 * len(ordered)) - 1)]


# ---------------------------------------------------------------------- 1. record cost


def record_micro() -> dict[str, float]:
    """µs per call of the recording step, in this process, without Sanic or sockets."""
    from service.metrics import RequestSample
    from service.shared_store import Layout, SharedMemoryStore, allocate

    layout = Layout(
        routes=("api-gateway", "dashboard-ui", "blog-service", "auth-service", "user-service",
                "local"),
        rows=64,
    )  # fmt: skip
    store = SharedMemoryStore(allocate(layout), layout)
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
        number = 100_000
        best = min(timeit.repeat(fn, number=number, repeat=5))
        out[name] = best / number * 1e6
    return out


def frame_shares(raw: Path, frames: dict[str, str]) -> dict[str, float]:
    """Inclusive share (%) of a py-spy profile's samples per frame; ``frames``: name -> part of
    the frame as :func:`bench.harness.frame_name` spells it (``[Class.]function (path``)."""
    total, _own, inclusive = read_profile(raw)
    out = {
        name: 100 * sum(n for frame, n in inclusive.items() if part in frame) / total
        if total
        else 0.0
        for name, part in frames.items()
    }
    out["samples"] = float(total)
    return out


def profile_share(raw: Path) -> dict[str, float]:
    """Inclusive share of the worker's samples spent in the recording step."""
    return frame_shares(
        raw,
        {
            "SharedMemoryStore.record": "record (service/shared_store.py",
            "RequestSample.of": "of (service/metrics.py",
        },
    )


def bench_record(args: argparse.Namespace, procs: Processes, tmp: Path, stamp: str) -> None:
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
        variants.append((label, "bench.variant_norecord:app", {"BENCH_NORECORD": mode}))
    if not args.no_control:
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

    pairs: dict[str, Pairs] = {}
    if args.pair_repeats:
        print(
            f"\n(2) side by side: ON and one other app loaded at once (one wrk each, "
            f"-d{args.pair_duration:g}s), sharing CPU {LB_CPUS}; both orders, "
            f"{args.pair_repeats} repeats; {machine_load()}"
        )
        pairs = side_by_side(
            on, others, repeats=args.pair_repeats, duration=args.pair_duration,
            connections=args.connections, pin=procs.pin,
        )  # fmt: skip
        print_pairs(on, others, pairs)

    # The swap really happened: the ON apps counted every request, the OFF ones none.
    counted = {
        c.label: get_json(c.lb.url, "/stats")["load-balancer"]["total_requests"] for c in cases
    }
    print("\n/stats total_requests at the end (OFF: 0; xN: N times as many as ON):")
    for label, count in counted.items():
        print(f"  {label:<30} {count:>10,}")

    shares = {}
    if args.profile:
        print("\nprofile of ON, 1 worker (py-spy, Python frames):")
        raw = record_profile(
            procs, on.lb, label="record-on", stamp=stamp, seconds=max(int(args.duration), 5),
            connections=args.connections, pin=procs.pin, native=False, formats=("raw",),
        )  # fmt: skip
        shares = profile_share(raw)
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


def bench_env(urls: dict[str, str], extra: dict[str, str] | None = None) -> dict[str, str]:
    """A load balancer's environment, with one hash seed for all (fewer per-instance quirks)."""
    return lb_env(urls, {"PYTHONHASHSEED": "0", **(extra or {})})


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


@dataclass
class Pairs:
    ratios: list[float] = field(default_factory=list)  # X req/s / base req/s, one per run
    cpu_ratios: list[float] = field(default_factory=list)  # base CPU/req / X CPU/req
    rps: list[tuple[float, float]] = field(default_factory=list)  # (base, X)
    errors: int = 0


def side_by_side(
    base: Case,
    others: list[Case],
    *,
    repeats: int,
    duration: float,
    connections: int,
    pin: bool,
) -> dict[str, Pairs]:
    """Each X loaded at the same time as ``base``, both on the load balancer's core.

    Whatever slows the core down during a run slows both alike, so the ratio of their
    req/s is the ratio of their costs per request, free of the drift between runs that
    dominates one-at-a-time figures on a VM. Each pair runs in both orders (whose wrk
    starts first), which cancels any advantage of the order.
    """
    pairs = {case.label: Pairs() for case in others}
    for rep in range(repeats):
        for case in others:
            for first, second in ((base, case), (case, base)):
                runs = measure_side_by_side(
                    [(first.url, first.lb.proc), (second.url, second.lb.proc)],
                    duration, connections, pin,
                )  # fmt: skip
                by = {first.label: runs[0], second.label: runs[1]}
                x, b = by[case.label], by[base.label]
                pair = pairs[case.label]
                pair.ratios.append(x.rps / b.rps)
                pair.cpu_ratios.append(b.server_cpu_us / x.server_cpu_us)
                pair.rps.append((b.rps, x.rps))
                pair.errors += x.errors + b.errors
            print(
                f"  rep {rep + 1}/{repeats} {case.label:<32} / {base.label}: "
                + " ".join(f"{r:.3f}" for r in pairs[case.label].ratios[-2:]),
                flush=True,
            )
    return pairs


def print_pairs(base: Case, others: list[Case], pairs: dict[str, Pairs]) -> None:
    print(
        f"\n{'case':<32} {'X/' + base.label.split()[0] + ' req/s':>12} {'min':>6} {'max':>6} "
        f"{'CPU ratio':>9} {'req/s (base, X)':>18} {'runs':>5} errors"
    )
    for case in others:
        pair = pairs[case.label]
        b = statistics.median(r[0] for r in pair.rps)
        x = statistics.median(r[1] for r in pair.rps)
        print(
            f"{case.label:<32} {statistics.median(pair.ratios):>12.3f} {min(pair.ratios):>6.3f} "
            f"{max(pair.ratios):>6.3f} {statistics.median(pair.cpu_ratios):>9.3f} "
            f"{b:>8,.0f} {x:>8,.0f} {len(pair.ratios):>5} {pair.errors}"
        )
    print(
        "X/base req/s: median over the runs (both orders) of X's req/s over the base's in the "
        "same run; CPU ratio: base's CPU µs/req over X's."
    )


# ------------------------------------------------------------------------ 2. /stats


@dataclass
class Calls:
    label: str
    seconds: list[float] = field(default_factory=list)
    bad: int = 0  # answers whose entries were not what the scenario expects
    fan_outs: int = 0  # how many times the upstreams were asked meanwhile

    def row(self) -> str:
        ms = [1000 * s for s in self.seconds]
        slow = sum(1 for s in self.seconds if s > 1.0)
        return (
            f"{self.label:<44} {len(ms):>6} {self.fan_outs:>8} {percentile(ms, 50):>9.2f} "
            f"{percentile(ms, 99):>9.2f} {max(ms):>9.2f} {statistics.fmean(ms):>9.2f} "
            f"{slow:>7} {self.bad:>5}"
        )


class StatsClient:
    """Sequential ``GET /stats`` on one keep-alive connection, each call timed."""

    def __init__(self, base: str) -> None:
        host, port = base.removeprefix("http://").split(":")
        self.conn = http.client.HTTPConnection(host, int(port), timeout=30)

    def call(self) -> tuple[float, dict[str, Any]]:
        started = time.perf_counter()
        self.conn.request("GET", "/stats")
        response = self.conn.getresponse()
        body = response.read()
        elapsed = time.perf_counter() - started
        if response.status != 200:
            raise RuntimeError(f"/stats: HTTP {response.status}")
        return elapsed, json.loads(body)

    def close(self) -> None:
        self.conn.close()


AGGREGATED = {"api-gateway": "api-gateway", "auth-service": "auth",
              "blog-service": "blog_service", "user-service": "user_service"}  # fmt: skip


def check(document: dict[str, Any], hanging: str | None) -> bool:
    for name, key in AGGREGATED.items():
        entry = document.get(key, {})
        if name == hanging:
            if entry.get("service_status") != "offline" or entry.get("error") != "timeout":
                return False
        elif entry.get("service_status") != "online":
            return False
    return document.get("load-balancer", {}).get("status") == "healthy"


def bench_stats(args: argparse.Namespace, procs: Processes, tmp: Path, stamp: str) -> None:
    from tests.support import STATS_PAYLOADS, SilentServer, UpstreamServer
    from tests.support import URL_VARS as VAR_OF

    if procs.pin:  # this process (client and upstream threads) on CPU 1, the LB on CPU 0
        os.sched_setaffinity(0, {int(LOAD_CPUS)})
    servers = {name: UpstreamServer(name, STATS_PAYLOADS[name]).start() for name in VAR_OF}
    silent = SilentServer()
    try:
        healthy = {VAR_OF[name]: s.url for name, s in servers.items()}
        hanging = dict(healthy, **{VAR_OF[args.hang]: silent.url})
        ttl0 = {"LB_STATS_CACHE_TTL": "0"}
        ready = ("/lb-health",)
        lbs = {
            "healthy, TTL 1 s (default)": launch_lb(
                procs, name="stats-ttl1", app="service.app:app", env=lb_env(healthy), ready=ready
            ),
            "healthy, TTL 0": launch_lb(
                procs, name="stats-ttl0", app="service.app:app", env=lb_env(healthy, ttl0),
                ready=ready,
            ),
            f"{args.hang} hangs, TTL 0": launch_lb(
                procs, name="stats-hang-ttl0", app="service.app:app", env=lb_env(hanging, ttl0),
                ready=ready,
            ),
            f"{args.hang} hangs, TTL 1 s (default)": launch_lb(
                procs, name="stats-hang-ttl1", app="service.app:app", env=lb_env(hanging),
                ready=ready,
            ),
        }  # fmt: skip
        labels = list(lbs)
        clients = {label: StatsClient(lb.url) for label, lb in lbs.items()}
        calls: dict[str, Calls] = {}
        fan_out_server = servers["user-service"]  # asked once per fan-out, by every scenario
        print(
            f"sequential GET /stats, 1 worker, pinning {'on' if procs.pin else 'off'}, "
            f"pace {1000 * args.pace:g} ms between calls; {machine_load()}"
        )

        def session(
            label: str, lb: str, count: int | None, seconds: float | None, pace: float
        ) -> None:
            """Sequential calls to ``lb``, each followed by ``pace`` s of pause, into ``label``."""
            client = clients[lb]
            record = calls.setdefault(label, Calls(label))
            before = fan_out_server.hits["/stats"]
            deadline = time.monotonic() + (seconds or math.inf)
            done = 0
            while (count is None or done < count) and time.monotonic() < deadline:
                elapsed, document = client.call()
                record.seconds.append(elapsed)
                record.bad += not check(document, args.hang if "hangs" in lb else None)
                done += 1
                if pace:
                    time.sleep(pace)
            record.fan_outs += fan_out_server.hits["/stats"] - before

        first = {}
        for label in labels[:2]:  # the first call opens the upstream connections: not counted
            first[label] = clients[label].call()[0]
        # healthy: TTL 1 s and TTL 0 interleaved in blocks
        blocks = 3
        for block in range(blocks):
            for label in labels[:2] if block % 2 == 0 else labels[1::-1]:
                share = args.calls // blocks + (block < args.calls % blocks)
                session(label, label, share, None, args.pace)
        print(f"  healthy: done ({args.calls} calls each)", flush=True)
        session(labels[2], labels[2], args.hang_calls, None, args.pace)
        print(f"  {labels[2]}: done ({args.hang_calls} calls)", flush=True)
        session(labels[3], labels[3], None, args.hang_seconds, args.pace)
        print(f"  {labels[3]}: done ({args.hang_seconds:g} s of calls)", flush=True)
        # The dashboard's own schedule: the next poll 2 s after the previous answer.
        dashboard = f"{args.hang} hangs, TTL 1 s, dashboard pace"
        if args.dashboard_calls:
            time.sleep(2.0)
            session(dashboard, labels[3], args.dashboard_calls, None, 2.0)
            print(f"  {dashboard}: done ({args.dashboard_calls} calls)", flush=True)
        for client in clients.values():
            client.close()

        print(
            f"\n{'scenario':<44} {'calls':>6} {'fan-outs':>8} {'p50 ms':>9} {'p99 ms':>9} "
            f"{'max ms':>9} {'mean ms':>9} {'> 1 s':>7} {'bad':>5}"
        )
        for record in calls.values():
            print(record.row())
        print(
            "first call of each healthy LB (opens the upstream connections): "
            + ", ".join(f"{label}: {1000 * s:.1f} ms" for label, s in first.items())
        )
        print(
            "fan-outs: times the upstreams were asked (hits on user-service's /stats); "
            "bad: answers whose entries were not as expected (online, or offline 'timeout' "
            "for the hanging one)"
        )
        p50_ttl0 = 1000 * percentile(calls[labels[1]].seconds, 50)
        print(
            f"healthy, TTL 0: p50 {p50_ttl0:.2f} ms -> target < 10 ms: "
            f"{'met' if p50_ttl0 < 10 else 'NOT met'}"
        )
        hang_max = max(calls[labels[2]].seconds)
        print(
            f"hanging, TTL 0: max {hang_max:.3f} s -> bounded by the 2 s timeout (+0.1 s): "
            f"{'yes' if hang_max < 2.1 else 'NO'}"
        )
        save(
            "stats",
            stamp,
            {"args": vars(args), "calls": {k: asdict(v) for k, v in calls.items()},
             "first_call_s": first},
        )  # fmt: skip
    finally:
        for server in servers.values():
            server.stop()
        silent.stop()


# -------------------------------------------------------------------- 3. sustained


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


# ------------------------------------------------------------------------- 4. pools


def pool_micro() -> dict[str, float]:
    """µs per balancing decision (choose + started + finished), in this process."""
    from service.pool import Pool
    from service.pool_state import PoolState, allocate
    from service.settings import TargetSpec, Upstream

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
        state = PoolState(allocate(len(targets), 64), targets=len(targets), rows=64, row=0)
        pool = Pool(upstream, 0, state)

        def decide(pool: Pool = pool) -> None:
            target = pool.choose()
            pool.started(target)
            pool.finished(target, 0.004, failed=False)

        number = 50_000
        out[label] = min(timeit.repeat(decide, number=number, repeat=5)) / number * 1e6
    return out


def targets_of(lb: LoadBalancer) -> list[dict[str, Any]]:
    document = get_json(lb.url, "/stats")
    return document["load-balancer"]["upstreams"]["api-gateway"]["targets"]


def bench_pools(args: argparse.Namespace, procs: Processes, tmp: Path, stamp: str) -> None:
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
    for i, (label, pool, balance, w) in enumerate(configs):
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
        run_wrk(case.url, 2, args.connections, procs.pin)
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
    pairs: dict[str, Pairs] = {}
    if args.pair_repeats:
        print(
            f"\nside by side: the single-target LB and one pool LB loaded at once (one wrk each, "
            f"-d{args.pair_duration:g}s), sharing CPU {LB_CPUS}; both orders, "
            f"{args.pair_repeats} repeats"
        )
        pairs = side_by_side(
            cases[0], cases[1:], repeats=args.pair_repeats, duration=args.pair_duration,
            connections=args.connections, pin=procs.pin,
        )  # fmt: skip
        print_pairs(cases[0], cases[1:], pairs)
    shares: dict[str, dict[str, float]] = {}
    if args.profile:
        frames = {
            "Pool.choose": "Pool.choose (service/pool.py",
            "pick": ".pick (service/balancing.py",
            "  _usable (available targets)": "_usable (service/balancing.py",
            "  LeastRequest._two (random draws)": "_two (service/balancing.py",
            "Pool.started": "Pool.started (service/pool.py",
            "Pool.finished": "Pool.finished (service/pool.py",
        }
        for case in (cases[0], cases[1]):
            print(f"\nprofile of {case.label}, 1 worker (py-spy, Python frames):")
            raw = record_profile(
                procs, case.lb, label=f"pools-{case.lb.variant}", stamp=stamp,
                seconds=max(int(args.duration), 5), connections=args.connections, pin=procs.pin,
                native=False, formats=("raw",),
            )  # fmt: skip
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


# --------------------------------------------------------------------------------- main


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--connections", type=int, default=32, help="wrk connections (32)")
    parser.add_argument("--no-pin", action="store_true", help="do not use taskset")
    sub = parser.add_subparsers(dest="bench", required=True)

    p = sub.add_parser("record", help="metrics recording ON vs OFF, proxied throughput")
    p.add_argument("--duration", type=float, default=5.0, help="seconds per wrk run (5)")
    p.add_argument("--repeats", type=int, default=5, help="runs per variant; medians (5)")
    p.add_argument(
        "--modes", default="store,sample,times11",
        help="variants of bench/variant_norecord.py: store, sample, times<N> "
        "(default: store,sample,times11)",
    )  # fmt: skip
    p.add_argument("--no-control", action="store_true", help="skip the A/A control (ON twice)")
    p.add_argument(
        "--pair-repeats", type=int, default=2, help="side-by-side repeats, 0 to skip (2)"
    )
    p.add_argument("--pair-duration", type=float, default=5.0, help="seconds per pair run (5)")
    p.add_argument("--profile", action="store_true", help="then py-spy the ON worker")

    p = sub.add_parser("stats", help="GET /stats latency, healthy and with a hanging upstream")
    p.add_argument("--calls", type=int, default=300, help="calls per healthy scenario (300)")
    p.add_argument("--hang-calls", type=int, default=15, help="calls, hanging + TTL 0 (15)")
    p.add_argument(
        "--hang-seconds", type=float, default=12.0, help="seconds of calls, hanging + TTL 1 (12)"
    )
    p.add_argument("--pace", type=float, default=0.01, help="seconds between calls (0.01)")
    p.add_argument(
        "--dashboard-calls", type=int, default=5,
        help="calls, hanging + TTL 1, 2 s after each answer as the dashboard polls (5)",
    )  # fmt: skip
    p.add_argument(
        "--hang", default="auth-service",
        choices=["api-gateway", "auth-service", "blog-service", "user-service"],
        help="the upstream that never answers (auth-service)",
    )  # fmt: skip

    p = sub.add_parser("sustained", help="a minute of load: throughput and RSS over time")
    p.add_argument("--seconds", type=float, default=60.0, help="total seconds of load (60)")
    p.add_argument("--step", type=float, default=5.0, help="seconds per wrk run (5)")
    p.add_argument("--warm-up", type=float, default=2.0, help="seconds of wrk first (2)")
    p.add_argument(
        "--no-compare", dest="compare", action="store_false",
        help="skip the side-by-side comparisons with a reference load balancer",
    )  # fmt: skip

    p = sub.add_parser("pools", help="a pool of 3 targets vs one target; spread over targets")
    p.add_argument("--duration", type=float, default=6.0, help="seconds per wrk run (6)")
    p.add_argument("--repeats", type=int, default=3, help="runs per case; medians (3)")
    p.add_argument(
        "--pair-repeats", type=int, default=2, help="side-by-side repeats, 0 to skip (2)"
    )
    p.add_argument("--pair-duration", type=float, default=5.0, help="seconds per pair run (5)")
    p.add_argument(
        "--profile", action="store_true", help="then py-spy the single-target and pool LBs"
    )
    args = parser.parse_args()

    interrupt_on_signals()
    RESULTS.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    bench = {"record": bench_record, "stats": bench_stats, "sustained": bench_sustained,
             "pools": bench_pools}[args.bench]  # fmt: skip
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="stats-bench-") as tmp:
        procs = Processes(can_pin(args.no_pin), Path(tmp))
        try:
            bench(args, procs, Path(tmp), stamp)
        except KeyboardInterrupt as exc:
            print(f"interrupted ({exc}), cleaning up", file=sys.stderr)
            return 130
        except (RuntimeError, subprocess.SubprocessError, ValueError, OSError, KeyError) as exc:
            print(f"stats_bench {args.bench}: {exc!r}", file=sys.stderr)
            procs.print_logs()
            return 1
        finally:
            procs.close()
    print(f"({args.bench}: {time.monotonic() - started:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
