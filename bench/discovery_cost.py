#!/usr/bin/env python
"""DNS discovery: what a resolved pool costs on the hot path, and how soon a DNS change is used.

- proxied /api/x throughput, 1 worker: a pool of one target resolved from DNS
  (``http://nginx.bench:<port>;resolve``, answered by dnsmasq with 127.0.0.1) against the
  same target configured as is, one at a time (medians) and side by side (both load
  balancers loaded at once on one core, both orders), with an A/A control (static against a
  second static) for the noise. Both send to the same nginx;
- the time from a DNS change (the SIGHUP that makes dnsmasq answer with the new address) to
  the first request that reaches the new address, seen by a client sending one request every
  ~5 ms through a 2-worker load balancer, with the default ``LB_RESOLVER_VALID`` (5 s) and
  with 1 s, records' TTL as given (``--ttl``).

How it measures (wrk, pinning, CPU per request, results): bench/harness.py. dnsmasq is
Debian's, on an ephemeral port (tests/support/dns.py), unpinned.

    .venv/bin/python bench/discovery_cost.py [--repeats 3] [--pair-repeats 2] [--changes 4]
"""

from __future__ import annotations

import argparse
import http.client
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a script: make ``bench`` (and ``tests``) importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

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
    print_pairs,
    print_runs_table,
    interleaved,
    run_bench,
    save,
    side_by_side,
    start_nginx,
)
from tests.support import UpstreamServer, free_port
from tests.support.dns import DnsServer

NAME = "nginx.bench"
MOVING = "moving.bench"


def bench_discovery(args: argparse.Namespace, procs: Processes, tmp: Path, stamp: str) -> None:
    dns = DnsServer({NAME: ["127.0.0.1"]}, ttl=args.ttl)
    try:
        _bench(args, procs, tmp, stamp, dns)
    finally:
        dns.close()


def _bench(
    args: argparse.Namespace, procs: Processes, tmp: Path, stamp: str, dns: DnsServer
) -> None:
    nginx_url, nginx = start_nginx(procs, tmp)
    urls = {var: nginx_url for var in URL_VARS}
    port = nginx_url.rsplit(":", 1)[1]
    resolved_env = {
        "API_GATEWAY_URL": f"http://{NAME}:{port};resolve",
        "LB_RESOLVER": dns.address,
    }
    static = launch_lb(procs, name="static", app="service.app:app", env=bench_env(urls))
    resolved = launch_lb(
        procs, name="resolved", app="service.app:app", env=bench_env(urls, resolved_env)
    )
    base = Case("static pool (1 target)", static)
    discovered = Case("resolved pool (1 address)", resolved)
    controls = []
    if control_wanted():
        static2 = launch_lb(procs, name="static2", app="service.app:app", env=bench_env(urls))
        controls.append(Case("static pool (A/A)", static2))
    print(
        f"nginx upstream; wrk -t1 -c{args.connections}; 1 worker each, pinning "
        f"{'on' if procs.pin else 'off'}; {machine_load()}"
    )
    results: dict[str, Any] = {"args": vars(args)}
    if args.repeats:
        print(f"\none at a time, interleaved, {args.repeats} repeats of {args.duration:g} s:")
        runs = interleaved(
            [base, discovered, *controls], repeats=args.repeats, duration=args.duration,
            connections=args.connections, pin=procs.pin, nginx=nginx,
        )  # fmt: skip
        print_runs_table([base, discovered, *controls], runs, base.label, "static")
        results["runs"] = {k: [vars(r) for r in v] for k, v in runs.items()}
    if args.pair_repeats:
        print(
            f"\nside by side: static and resolved loaded at once (one wrk each, "
            f"-d{args.pair_duration:g}s), sharing CPU {LB_CPUS}; both orders, "
            f"{args.pair_repeats} repeats"
        )
        pairs = side_by_side(
            base, [*controls, discovered], repeats=args.pair_repeats,
            duration=args.pair_duration, connections=args.connections, pin=procs.pin,
        )  # fmt: skip
        print_pairs(base, [*controls, discovered], pairs)
        results["pairs"] = {k: vars(v) for k, v in pairs.items()}
    # the CPU is the DNS-change runs' now
    for lb in (static, resolved, *(case.lb for case in controls)):
        lb.stop()
    results["dns_change"] = {}
    for valid in args.valid:
        print(
            f"\nDNS change -> first request at the new address: --workers 2, "
            f"LB_RESOLVER_VALID={valid:g}, record TTL {args.ttl} s, {args.changes} changes"
        )
        results["dns_change"][str(valid)] = change_latency(args, procs, dns, urls, valid)
    save("discovery", stamp, results)


def change_latency(
    args: argparse.Namespace,
    procs: Processes,
    dns: DnsServer,
    urls: dict[str, str],
    valid: float,
) -> list[float]:
    """Seconds from each SIGHUP to the first answer from the address the name moved to."""
    port = free_port()
    servers = [UpstreamServer(f"at-{i}").start(port, host=f"127.0.0.{i}") for i in (2, 3)]
    try:
        dns.set({MOVING: ["127.0.0.2"]})
        env = bench_env(
            urls,
            {
                "API_GATEWAY_URL": f"http://{MOVING}:{port};resolve",
                "LB_RESOLVER": dns.address,
                "LB_RESOLVER_VALID": f"{valid:g}",
            },
        )
        lb = launch_lb(procs, name=f"moving-{valid:g}", app="service.app:app", env=env, workers=2)
        host, lb_port = lb.url.removeprefix("http://").split(":")
        conn = http.client.HTTPConnection(host, int(lb_port), timeout=10)
        seconds = []
        try:
            for change in range(args.changes):
                # let the current answer age by a random-ish amount, as a real change would
                time.sleep((0.37 * (change + 1)) % valid)
                new = 3 if change % 2 == 0 else 2
                told = dns.set({MOVING: [f"127.0.0.{new}"]})
                while answered_by(conn) != f"at-{new}":
                    time.sleep(0.005)
                seconds.append(time.monotonic() - told)
                print(f"  change {change + 1}: {seconds[-1]:.3f} s", flush=True)
        finally:
            conn.close()
        print(
            f"  min {min(seconds):.3f} s  median {statistics.median(seconds):.3f} s  "
            f"max {max(seconds):.3f} s  (bound: LB_RESOLVER_VALID or TTL, whichever is "
            f"lower, + 0.1 s for the workers + one lookup)"
        )
        return seconds
    finally:
        for server in servers:
            server.stop()


def answered_by(conn: http.client.HTTPConnection) -> str:
    """The name of the upstream server that answered one GET /api/x (its JSON echo)."""
    conn.request("GET", "/api/x")
    response = conn.getresponse()
    body = response.read()
    if response.status != 200:
        return f"HTTP {response.status}"
    return str(json.loads(body).get("upstream"))


def main() -> int:
    parser = bench_parser(__doc__ or "")
    add_run_options(parser, duration=5.0, repeats=3, what="case")
    parser.add_argument("--changes", type=int, default=4, help="DNS changes timed (4)")
    parser.add_argument("--ttl", type=int, default=5, help="record TTL dnsmasq gives (5)")
    parser.add_argument(
        "--valid", type=float, nargs="+", default=[5.0, 1.0],
        help="LB_RESOLVER_VALID values to time DNS changes with (5 1)",
    )  # fmt: skip
    smoke = {"duration": 0.2, "repeats": 1, "pair_repeats": 1, "pair_duration": 0.2,
             "changes": 1, "ttl": 1, "valid": [1.0]}  # fmt: skip
    return run_bench("discovery", parser.parse_args(), bench_discovery, smoke)


if __name__ == "__main__":
    raise SystemExit(main())
