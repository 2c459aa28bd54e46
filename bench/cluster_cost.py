#!/usr/bin/env python
"""Cluster: what sharing the figures through Redis costs, in one invocation.

- proxied /api/x throughput, 1 worker, with the cluster backend on (LB_CLUSTER_REDIS_URL set,
  publishing every 250 ms) against off, side by side (both load balancers loaded at once on
  one core, both orders), with an A/A control (off against a second off) for the noise;
- proxied p50/p99 with Redis up, then killed (no request waits on Redis);
- Redis commands per second from one host, at idle and under load (they must not grow with
  the request rate: one publisher per host on a timer);
- GET /stats latency with 2 and with 8 replicas' figures in Redis (synthetic replicas: copies
  of the measured host's own full-window document, re-stamped as live), and without a cluster.

How it measures (wrk, pinning, CPU per request, results): bench/harness.py. Redis is Debian's
redis-server on an ephemeral port (tests/support/redis.py), unpinned.

    .venv/bin/python bench/cluster_cost.py [--pair-repeats 3] [--pair-duration 5] [--duration 5]
"""

from __future__ import annotations

import argparse
import http.client
import statistics
import sys
import threading
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a script: make ``bench`` (and ``tests``) importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import orjson
import redis

from bench.harness import (
    LB_CPUS,
    URL_VARS,
    Case,
    Processes,
    add_run_options,
    bench_env,
    bench_parser,
    control_wanted,
    launch_lb,
    machine_load,
    measure_wrk,
    median,
    percentile,
    run_bench,
    run_wrk,
    save,
    side_by_side,
    start_nginx,
    warm,
)
from tests.support.redis import RedisServer

CLUSTER = "bench-cluster"


def commands_processed(client: redis.Redis) -> int:
    return int(client.info("stats")["total_commands_processed"])


def redis_ops_per_s(client: redis.Redis, seconds: float, during: Any = None) -> float:
    """Commands Redis processed per second over ``seconds`` (minus this probe's own INFO)."""
    before = commands_processed(client)
    started = time.monotonic()
    if during is None:
        time.sleep(seconds)
    else:
        during()
    elapsed = time.monotonic() - started
    return (commands_processed(client) - before - 1) / elapsed


def stats_latency(base: str, calls: int, gap_s: float = 0.0) -> dict[str, float]:
    """``calls`` GET /stats on one keep-alive connection, ``gap_s`` apart."""
    host, port = base.removeprefix("http://").split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=10)
    times = []
    try:
        for _ in range(calls):
            time.sleep(gap_s)
            started = time.perf_counter()
            conn.request("GET", "/stats")
            response = conn.getresponse()
            body = response.read()
            times.append((time.perf_counter() - started) * 1000)
            if response.status != 200:
                raise RuntimeError(f"/stats answered {response.status}")
    finally:
        conn.close()
    cluster = orjson.loads(body)["load-balancer"].get("cluster", {})
    return {
        "p50_ms": statistics.median(times),
        "p99_ms": percentile(times, 99),
        "replicas": cluster.get("replicas", 1),
        "status": cluster.get("status", "-"),
    }


class FakeReplicas:
    """``count`` copies of a real replica's document under other ids, re-stamped every 250 ms
    as just published, with their time buckets moved to now (so they count, full windows)."""

    def __init__(self, client: redis.Redis, source: bytes, count: int) -> None:
        self._client = client
        self._doc = orjson.loads(source)
        self._count = count
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _documents(self) -> dict[str, bytes]:
        now = time.time()
        out = {}
        for i in range(self._count):
            doc = dict(self._doc, id=f"fake-{i}", published_at=now)
            rings = {}
            for name, ring in doc["figures"]["rings"].items():
                newest = max((bucket[0] for bucket in ring["buckets"]), default=0)
                shift = int(now / ring["resolution_s"]) - newest
                rings[name] = dict(ring, buckets=[[e + shift, i, v] for e, i, v in ring["buckets"]])
            doc["figures"] = dict(doc["figures"], rings=rings)
            out[f"fake-{i}"] = orjson.dumps(doc)
        return out

    def _run(self) -> None:
        while not self._stop.wait(0.25):
            self._client.hset(f"{CLUSTER}:replicas", mapping=self._documents())

    def wait_live(self, base: str, replicas: int) -> None:
        """Until /stats counts them all (a broken fake would otherwise go unnoticed)."""
        deadline = time.monotonic() + 10
        while stats_latency(base, 1)["replicas"] != replicas:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError(f"the {self._count} fake replicas are not live")
            time.sleep(0.1)

    def close(self) -> None:
        self._stop.set()
        self._thread.join(5)
        self._client.hdel(f"{CLUSTER}:replicas", *(f"fake-{i}" for i in range(self._count)))


def bench_cluster(args: argparse.Namespace, procs: Processes, tmp: Path, stamp: str) -> None:
    store = RedisServer()
    try:
        _bench(args, procs, tmp, stamp, store)
    finally:
        store.close()


def _bench(
    args: argparse.Namespace, procs: Processes, tmp: Path, stamp: str, store: RedisServer
) -> None:
    client = redis.Redis.from_url(store.url)
    nginx_url, nginx = start_nginx(procs, tmp)
    urls = {var: nginx_url for var in URL_VARS}
    off = launch_lb(procs, name="off", app="service.app:app", env=bench_env(urls))
    cluster_env = {"LB_CLUSTER_REDIS_URL": store.url, "LB_CLUSTER_NAME": CLUSTER}
    on = launch_lb(procs, name="on", app="service.app:app", env=bench_env(urls, cluster_env))
    base, cluster = Case("cluster off", off), Case("cluster on", on)
    controls = []
    if control_wanted():
        off2 = launch_lb(procs, name="off2", app="service.app:app", env=bench_env(urls))
        controls.append(Case("cluster off (A/A)", off2))
    print(
        f"nginx upstream; wrk -t1 -c{args.connections}; 1 worker each, pinning "
        f"{'on' if procs.pin else 'off'}; {machine_load()}"
    )
    for case in (base, cluster, *controls):
        warm(case.url, args.connections, procs.pin)  # warm-up

    results: dict[str, Any] = {}
    print("\nRedis commands per second from one host (the 'on' load balancer, 1 worker):")
    idle = redis_ops_per_s(client, args.duration)
    loaded_run: dict[str, Any] = {}

    def load() -> None:
        loaded_run["run"] = run_wrk(cluster.url, args.duration, args.connections, procs.pin)

    loaded = redis_ops_per_s(client, args.duration, during=load)
    print(f"  idle         {idle:7.1f} ops/s")
    print(f"  under load   {loaded:7.1f} ops/s  ({loaded_run['run'].rps:,.0f} proxied req/s)")
    # this host's document now, its window full of the load just run: the fakes' model
    source = client.hget(f"{CLUSTER}:replicas", next(iter(client.hkeys(f"{CLUSTER}:replicas"))))
    assert source is not None
    results["redis_ops"] = {"idle": idle, "loaded": loaded, "load_rps": loaded_run["run"].rps}

    calls, spaced = args.stats_calls, max(args.stats_calls // 10, 1)
    print(
        f"\nGET /stats latency (default cache TTL 1 s): {calls} calls one after another (most find"
        f"\nthe other replicas' documents unchanged: parsed once), then {spaced} calls 0.3 s apart"
        "\n(each after a new publication of every fake replica: parsed and merged every time):"
    )
    latency = {
        "no cluster": stats_latency(off.url, calls),
        # the same spacing as the cold reads below: the fan-out cache (1 s) misses as often
        "no cluster, spaced": stats_latency(off.url, spaced, gap_s=0.3),
    }
    print(f"  one replica's document: {len(source):,} bytes (right after the load, full window)")
    for replicas in (2, 8):
        fakes = FakeReplicas(client, source, replicas - 1)
        try:
            fakes.wait_live(on.url, replicas)
            latency[f"{replicas} replicas"] = stats_latency(on.url, calls)
            latency[f"{replicas} replicas, cold"] = stats_latency(on.url, spaced, gap_s=0.3)
        finally:
            fakes.close()
    for label, figures in latency.items():
        print(
            f"  {label:<18} p50 {figures['p50_ms']:6.2f} ms  p99 {figures['p99_ms']:6.2f} ms  "
            f"(cluster.replicas {figures['replicas']}, status {figures['status']})"
        )
    results["stats_latency"] = latency

    print(
        f"\nproxied /api/x one at a time, cluster on: Redis up, then killed, alternately, "
        f"{args.repeats} times"
    )
    runs: dict[str, list[Any]] = {"Redis up": [], "Redis down": []}
    for _ in range(args.repeats):
        for label in runs:
            if label == "Redis down":
                store.stop()
            run = measure_wrk(
                cluster.url, on.proc, [nginx], args.duration, args.connections, procs.pin
            )
            runs[label].append(run)
            print(
                f"  {label:<11} {run.rps:8,.0f} req/s  p50 {run.p50_ms:5.2f} ms  "
                f"p99 {run.p99_ms:5.2f} ms  errors {run.errors}",
                flush=True,
            )
            if label == "Redis down":
                store.start()
                time.sleep(1.0)
    for label, label_runs in runs.items():
        print(
            f"  median {label:<11} {median(label_runs, 'rps'):8,.0f} req/s  "
            f"p99 {median(label_runs, 'p99_ms'):5.2f} ms"
        )
    results["redis_down"] = {k: [asdict(r) for r in v] for k, v in runs.items()}

    if args.pair_repeats < 1:
        save("cluster", stamp, {"args": vars(args), **results})
        return
    print(
        f"\nside by side: cluster off and on loaded at once (one wrk each, -d{args.pair_duration:g}"
        f"s), sharing CPU {LB_CPUS}; both orders, {args.pair_repeats} repeats"
    )
    pairs = side_by_side(
        base, [*controls, cluster], repeats=args.pair_repeats, duration=args.pair_duration,
        connections=args.connections, pin=procs.pin,
    )  # fmt: skip
    pair = pairs[cluster.label]
    ratio = statistics.median(pair.ratios)
    print(
        f"  on/off req/s: median {ratio:.3f} (runs {' '.join(f'{r:.3f}' for r in pair.ratios)});"
        f" CPU ratio median {statistics.median(pair.cpu_ratios):.3f}; errors {pair.errors}"
    )
    verdict = "met" if ratio > 0.97 else "NOT met"
    print(f"  cost {100 * (1 - ratio):+.1f} % (target < 3 %) -> {verdict}")
    for control in controls:
        aa = statistics.median(pairs[control.label].ratios)
        print(
            f"  A/A control (off/off): median {aa:.3f} "
            f"(runs {' '.join(f'{r:.3f}' for r in pairs[control.label].ratios)}): the noise"
        )
    results["side_by_side"] = {k: asdict(v) for k, v in pairs.items()}
    save("cluster", stamp, {"args": vars(args), **results})


def main() -> int:
    parser = bench_parser(__doc__)
    add_run_options(parser, duration=5.0, repeats=2, what="Redis up/down alternation")
    parser.set_defaults(pair_repeats=3)
    parser.add_argument(
        "--stats-calls", type=int, default=300, help="GET /stats back to back (300; a tenth spaced)"
    )
    smoke = {"duration": 0.2, "repeats": 1, "pair_repeats": 1, "pair_duration": 0.2,
             "stats_calls": 10}  # fmt: skip
    return run_bench("cluster", parser.parse_args(), bench_cluster, smoke)


if __name__ == "__main__":
    sys.exit(main())
