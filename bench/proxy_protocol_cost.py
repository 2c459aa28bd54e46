#!/usr/bin/env python
"""PROXY protocol: proxied throughput with ``LB_PROXY_PROTOCOL`` off and on, behind HAProxy.

One HAProxy (TCP mode, on the load generator's core) in front of two load balancers (one
worker each, on the load balancer's core, the same nginx upstream behind both): the first
with ``LB_PROXY_PROTOCOL`` off, reached through a listener without ``send-proxy``; the second
with it on (``LB_TRUSTED_PROXIES`` = HAProxy's source address), reached through listeners
with ``send-proxy`` (v1) and ``send-proxy-v2``. wrk keeps its connections alive, so those
figures are the header's cost spread over many requests plus any cost on every request;
then new connections one request each (HAProxy opens a server connection, and so sends a
header, per client connection), which is where the header is paid. Medians of interleaved
runs (bench/harness.py).

    .venv/bin/python bench/proxy_protocol_cost.py [--duration 5] [--repeats 3] [--connects 500]
"""

from __future__ import annotations

import argparse
import http.client
import statistics
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make ``bench`` (and ``tests``) importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.harness import (
    LB_CPUS,
    LOAD_CPUS,
    URL_VARS,
    Case,
    LoadBalancer,
    Mode,
    Processes,
    bench_env,
    bench_parser,
    interleaved,
    machine_load,
    median,
    run_bench,
    save,
    start_nginx,
)
from tests.support.haproxy import HAProxy
from tests.support.tools import require

SOURCE = "127.0.0.9"  # HAProxy's address towards the load balancers: the trusted proxy


@dataclass
class Through:
    """A HAProxy listener in front of a load balancer, shaped like one for ``Case``: its URL
    is HAProxy's, its CPU the load balancer's."""

    url: str
    proc: subprocess.Popen[bytes]


def connects_per_second(url: str, count: int) -> float:
    """``count`` requests, each on a new connection (``Connection: close``): connections/s."""
    host, port = url.removeprefix("http://").split(":")
    started = time.perf_counter()
    for _ in range(count):
        conn = http.client.HTTPConnection(host, int(port), timeout=10)
        conn.request("GET", "/api/x", headers={"Connection": "close"})
        response = conn.getresponse()
        response.read()
        conn.close()
        if response.status != 200:
            raise RuntimeError(f"GET {url}/api/x: HTTP {response.status}")
    return count / (time.perf_counter() - started)


def bench(args: argparse.Namespace, procs: Processes, tmp: Path, stamp: str) -> None:
    print(machine_load())
    upstream, nginx = start_nginx(procs, tmp)
    env = bench_env({var: upstream for var in URL_VARS})

    def balancer(name: str, extra: dict[str, str]) -> LoadBalancer:
        lb = LoadBalancer(
            {**env, **extra}, workers=None if Mode.smoke else 1, name=name,
            args=["--no-access-logs"], cpus=LB_CPUS if procs.pin else None,
            ready=("/lb-health", "/api/x"), log=procs.logs / f"lb-{name}.log", timeout=30.0,
        )  # fmt: skip
        return procs.adopt(lb)

    off = balancer("off", {})
    on = balancer("on", {"LB_PROXY_PROTOCOL": "true", "LB_TRUSTED_PROXIES": f"{SOURCE}/32"})
    folder = tmp / "haproxy"
    folder.mkdir()
    haproxy = HAProxy(
        require("haproxy"),
        folder,
        {
            "plain": f"127.0.0.1:{off.port} source {SOURCE}",
            "v1": f"127.0.0.1:{on.port} source {SOURCE} send-proxy",
            "v2": f"127.0.0.1:{on.port} source {SOURCE} send-proxy-v2",
        },
        argv_prefix=("taskset", "-c", LOAD_CPUS) if procs.pin else (),
    )
    try:
        cases = [
            Case("off (haproxy)", Through(haproxy.url("plain"), off.proc)),  # type: ignore[arg-type]
            Case("on v1 (send-proxy)", Through(haproxy.url("v1"), on.proc)),  # type: ignore[arg-type]
            Case("on v2 (send-proxy-v2)", Through(haproxy.url("v2"), on.proc)),  # type: ignore[arg-type]
        ]
        print(f"\n{args.repeats} interleaved runs of {args.duration:g} s, /api/x through "
              f"HAProxy, {args.connections} keep-alive connections:")  # fmt: skip
        results = interleaved(
            cases, repeats=args.repeats, duration=args.duration, connections=args.connections,
            pin=procs.pin, nginx=nginx,
        )  # fmt: skip
        print(f"\n{args.repeats} interleaved runs of {args.connects} new connections each:")
        connects: dict[str, list[float]] = {case.label: [] for case in cases}
        for rep in range(args.repeats):
            for case in cases[rep % 3 :] + cases[: rep % 3]:
                rate = connects_per_second(case.lb.url, args.connects)
                connects[case.label].append(rate)
                print(f"  rep {rep + 1}/{args.repeats} {case.label:<24} {rate:>8,.0f} conn/s")
    finally:
        haproxy.stop()
    base_rps = median(results[cases[0].label], "rps")
    base_cps = statistics.median(connects[cases[0].label])
    print(f"\n{'case':<24} {'req/s':>8} {'/off':>6} {'p50 ms':>7} {'CPU µs/req':>10} "
          f"{'conn/s':>8} {'/off':>6}  runs (req/s)")  # fmt: skip
    for case in cases:
        runs = results[case.label]
        rps, cps = median(runs, "rps"), statistics.median(connects[case.label])
        print(
            f"{case.label:<24} {rps:>8,.0f} {rps / base_rps:>6.3f} {median(runs, 'p50_ms'):>7.2f} "
            f"{median(runs, 'server_cpu_us'):>10.1f} {cps:>8,.0f} {cps / base_cps:>6.3f}  "
            + " ".join(f"{r.rps:,.0f}" for r in runs)
            + (f"  ERRORS {sum(r.errors for r in runs)}" if any(r.errors for r in runs) else "")
        )
    print("(HAProxy's CPU counts as other load; CPU µs/req is the load balancer's own)")
    save("proxy-protocol", stamp, {
        "load": machine_load(),
        "runs": {label: [asdict(r) for r in runs] for label, runs in results.items()},
        "connects_per_s": connects,
    })  # fmt: skip


def main() -> int:
    parser = bench_parser(__doc__ or "")
    parser.add_argument("--duration", type=float, default=5.0, help="seconds per wrk run (5)")
    parser.add_argument("--repeats", type=int, default=3, help="runs per case; medians (3)")
    parser.add_argument(
        "--connects", type=int, default=500, help="new connections per run, one request each"
    )
    smoke = {"duration": 0.2, "repeats": 1, "connects": 5}
    return run_bench("proxy-protocol", parser.parse_args(), bench, smoke)


if __name__ == "__main__":
    sys.exit(main())
