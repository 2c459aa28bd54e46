#!/usr/bin/env python
"""GET /stats latency, healthy and with a hanging upstream, in one bounded invocation.

Latency of sequential ``GET /stats`` calls, 1 worker: five healthy stdlib upstreams with the
cache (default TTL, 1 s) and without (TTL 0); then one upstream that never answers, with TTL 0,
TTL 1 s, and at the dashboard's pace.

How it measures (wrk, pinning, CPU per request, other load, results): bench/harness.py.

    /work/venv/bin/python bench/stats_latency.py
        [--calls 300] [--pace 0.01] [--hang-calls 15] [--hang-seconds 12]
"""

from __future__ import annotations

import argparse
import http.client
import json
import math
import os
import statistics
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a script: make ``bench`` (and ``tests``) importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.harness import (
    LOAD_CPUS,
    Processes,
    bench_parser,
    launch_lb,
    lb_env,
    machine_load,
    percentile,
    run_bench,
    save,
)


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


def main() -> int:
    parser = bench_parser(__doc__)
    parser.add_argument("--calls", type=int, default=300, help="calls per healthy scenario (300)")
    parser.add_argument("--hang-calls", type=int, default=15, help="calls, hanging + TTL 0 (15)")
    parser.add_argument(
        "--hang-seconds", type=float, default=12.0, help="seconds of calls, hanging + TTL 1 (12)"
    )
    parser.add_argument("--pace", type=float, default=0.01, help="seconds between calls (0.01)")
    parser.add_argument(
        "--dashboard-calls", type=int, default=5,
        help="calls, hanging + TTL 1, 2 s after each answer as the dashboard polls (5)",
    )  # fmt: skip
    parser.add_argument(
        "--hang", default="auth-service",
        choices=["api-gateway", "auth-service", "blog-service", "user-service"],
        help="the upstream that never answers (auth-service)",
    )  # fmt: skip
    return run_bench("stats", parser.parse_args(), bench_stats)


if __name__ == "__main__":
    sys.exit(main())
