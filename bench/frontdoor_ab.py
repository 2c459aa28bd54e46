#!/usr/bin/env python
"""What the front door costs: this checkout's load balancer against another commit's, side by side.

Both run ``sanic service.app --workers 1`` on CPU 0 (one at a time under load), in front of
one nginx answering ``return 200`` on CPU 1, where wrk runs too (one thread, 32 keep-alive
connections, 5-s runs). The two are interleaved (the order flips every repeat) on
``/api/x`` (proxied) and ``/lb-health`` (the framework's ceiling, where a per-request cost
shows most); the medians and their ratio are printed. ``--base`` is a directory holding the
other commit's tree, e.g. ``git archive 9f54b0a | tar -x -C /tmp/base``; it runs with this
checkout's virtualenv. Everything on 127.0.0.1.

    .venv/bin/python bench/frontdoor_ab.py --base /tmp/base [--repeats 6]
"""

from __future__ import annotations

import argparse
import re
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make ``bench`` (and ``tests``) importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.harness import LB_CPUS, LOAD_CPUS, Processes, bench_env, start_nginx_ports
from tests.support import REPO, SANIC, URL_VARS, free_port

PATHS = ("/api/x", "/lb-health")


def start_lb(procs: Processes, name: str, tree: Path, upstream: str) -> str:
    port = free_port()
    argv = [SANIC, "service.app", "--host", "127.0.0.1", "--port", str(port), "--workers", "1"]
    env = bench_env({var: upstream for var in URL_VARS.values()})
    with open(procs.logs / f"{name}.log", "wb") as log:
        proc = subprocess.Popen(
            ["taskset", "-c", LB_CPUS, *argv, "--no-access-logs"],
            cwd=tree,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    procs._started.append(proc)  # stopped (with its session) by procs.close()
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url + "/api/x", timeout=1):
                return url
        except OSError:
            time.sleep(0.1)
    raise RuntimeError(f"{name} did not answer in 30 s")


def wrk_rps(url: str) -> float:
    argv = ["taskset", "-c", LOAD_CPUS, "wrk", "-t1", "-c32", "-d5s", url]
    out = subprocess.run(argv, capture_output=True, text=True, check=True).stdout
    match = re.search(r"Requests/sec:\s+([\d.]+)", out)
    if match is None:
        raise RuntimeError(f"wrk printed no rate:\n{out}")
    return float(match.group(1))


def main() -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--base", type=Path, required=True, help="the other commit's tree")
    parser.add_argument("--repeats", type=int, default=6)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-frontdoor-ab-") as tmp:
        procs = Processes(pin=True, logs=Path(tmp))
        try:
            (upstream,), _ = start_nginx_ports(procs, Path(tmp), 1)
            urls = {
                "this": start_lb(procs, "this", REPO, upstream),
                "base": start_lb(procs, "base", args.base.resolve(), upstream),
            }
            rates: dict[tuple[str, str], list[float]] = {}
            for repeat in range(args.repeats):
                order = list(urls) if repeat % 2 == 0 else list(urls)[::-1]
                for path in PATHS:
                    for name in order:
                        rate = wrk_rps(urls[name] + path)
                        rates.setdefault((name, path), []).append(rate)
                        print(f"  {repeat} {name:4} {path:10} {rate:8.0f} req/s", flush=True)
            for path in PATHS:
                this, base = (statistics.median(rates[(n, path)]) for n in ("this", "base"))
                pairs_below = sum(
                    t < b for t, b in zip(rates[("this", path)], rates[("base", path)], strict=True)
                )
                print(
                    f"{path}: this {this:.0f} req/s, base {base:.0f} req/s, ratio {this / base:.3f}"
                    f" (this below base in {pairs_below} of {args.repeats} pairs)"
                )
        finally:
            procs.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
