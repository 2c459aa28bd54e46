#!/usr/bin/env python
"""How much Python one proxied request runs: bytecode instructions and function calls per
request, counted exactly (``sys.settrace`` opcode events, bench/_opcount.py), for this
service, beside it another checkout (``--baseline``) and the bare Sanic proxy.

req/s and CPU time move with whatever else the machine does; this count does not (the same
requests give the same figure, within a few instructions). It is what a change to the hot
path is judged by first, then by CPU time (bench/proxy_bench.py, bench/peers.py): it does not
see time spent in C (the socket writes, llhttp, regexes, ``map``), so a step that moves
Python work into C shows here in full and in CPU time only in part.

Each subject runs ``--single-process`` under the counter with nginx upstream (``/api/x``:
11 bytes); one keep-alive connection sends 50 requests to warm up, then ``--requests``
counted ones (``GET /api/x``, the headers of a browser's request). Prints the totals per
request and this service's ``--top`` functions by instructions.

    .venv/bin/python bench/hot_path_ops.py [--requests N] [--top K] [--baseline PATH] [--smoke]
"""

from __future__ import annotations

import argparse
import http.client
import json
import signal
import sys
import time
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a script: make ``bench`` importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.harness import (
    BARE_SANIC,
    BIN,
    REPO,
    URL_VARS,
    PEERS,
    Mode,
    Processes,
    bench_parser,
    lb_env,
    run_bench,
    save,
    start_nginx,
    wait_http,
)
from tests.support import clean_env, free_port

HEADERS = {
    "User-Agent": "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 Chrome/156.0 Safari/537.36",
    "Accept": "application/json, text/plain, */*",
    "Accept-Encoding": "gzip, deflate, br",
    "Accept-Language": "en-US,en;q=0.9",
}


def count(
    procs: Processes, tmp: Path, label: str, app: str, env: dict[str, str], requests: int
) -> dict[str, Any]:
    """Instructions and calls per request of ``app`` serving ``requests`` GET /api/x."""
    port = free_port()
    out = tmp / f"opcount-{label}.jsonl"
    argv = [str(BIN / "python"), str(REPO / "bench" / "_opcount.py"), app, "--host",
            "127.0.0.1", "--port", str(port), "--single-process", "--no-access-logs"]  # fmt: skip
    proc = procs.start(f"opcount-{label}", argv, cpus=None, env={**env, "OPCOUNT_OUT": str(out)})
    wait_http(f"http://127.0.0.1:{port}/lb-health", proc, timeout=120)
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    get(conn, 50)
    reports = mark(proc, out, conn, 1)
    get(conn, requests)
    reports = mark(proc, out, conn, reports + 1)
    conn.close()
    procs.stop(proc)
    last = json.loads(out.read_text().splitlines()[-1])
    return {
        "opcodes": last["opcodes"] / requests,
        "calls": last["calls"] / requests,
        "functions": last["functions"],
    }


def get(conn: http.client.HTTPConnection, times: int) -> None:
    for _ in range(times):
        conn.request("GET", "/api/x", headers=HEADERS)
        response = conn.getresponse()
        response.read()
        if response.status != 200:
            raise RuntimeError(f"GET /api/x answered {response.status}")


def mark(proc: Any, out: Path, conn: http.client.HTTPConnection, reports: int) -> int:
    """Ask for a report and wait for it: the handler runs once the server's loop runs Python
    again, so a request to /lb-health wakes it (one request more in the window: counted in
    the division's error, 0.1 % at 1000 requests)."""
    proc.send_signal(signal.SIGUSR1)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        conn.request("GET", "/lb-health")
        conn.getresponse().read()
        if out.exists() and len(out.read_text().splitlines()) >= reports:
            return reports
        time.sleep(0.1)
    raise RuntimeError("the counting server wrote no report")


def bench(args: argparse.Namespace, procs: Processes, tmp: Path, stamp: str) -> None:
    upstream, _nginx = start_nginx(procs, tmp)
    urls = {var: upstream for var in URL_VARS}
    subjects = [("service", "service.app", lb_env(urls))]
    if args.baseline:
        subjects.append(("baseline", "service.app", lb_env(urls, repo=Path(args.baseline))))
    if not Mode.smoke and BARE_SANIC.is_file():
        subjects.append(("bare sanic", "minimal_sanic_proxy:app",
                         clean_env({**urls, "PYTHONPATH": str(PEERS)})))  # fmt: skip
    results = {}
    for label, app, env in subjects:
        results[label] = count(procs, tmp, label.replace(" ", "-"), app, env, args.requests)
    print(f"\nper proxied GET /api/x, {args.requests} requests counted:")
    print(f"{'':<12} {'instructions':>12} {'calls':>7}")
    for label, result in results.items():
        print(f"{label:<12} {result['opcodes']:>12,.0f} {result['calls']:>7.1f}")
    print(f"\nthis service's {args.top} functions by instructions per request (calls):")
    for name, (ops, calls) in list(results["service"]["functions"].items())[: args.top]:
        print(f"  {ops / args.requests:>7.1f} ({calls / args.requests:4.1f})  {name}")
    save("hot-path-ops", stamp, {k: {**v, "functions": dict(list(v["functions"].items())[:60])}
                                 for k, v in results.items()})  # fmt: skip


def main() -> int:
    parser = bench_parser(__doc__ or "")
    parser.add_argument("--requests", type=int, default=1000, help="requests counted (1000)")
    parser.add_argument("--top", type=int, default=30, help="functions listed (30)")
    parser.add_argument("--baseline", help="another checkout of the project, counted beside")
    args = parser.parse_args()
    return run_bench("hot-path-ops", args, bench, {"requests": 20, "top": 5})


if __name__ == "__main__":
    sys.exit(main())
