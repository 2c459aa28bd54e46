#!/usr/bin/env python
"""Configuration reload: how soon a new file serves, what reloading costs, what it leaves.

1. **Switch**: a 2-worker load balancer whose ``/probe`` pool is one Python upstream ("old")
   in one file and another ("new") in the other; probes on fresh connections (so both
   workers answer) ask ``/probe`` back to back; per switch, the time from ``SIGHUP`` to the
   first answer from the new target, and to the moment every worker has answered from it.
2. **Throughput**: two 1-worker load balancers on one core, loaded at once by wrk
   (``/api/x`` to nginx), one of them reloaded every second (the two files differ in a route,
   the api pool's passive health, a timeout and a weight, so each reload rebuilds the hot
   pool), side by side in both orders (bench/harness.py, ``side_by_side``); with
   ``--control``, an A/A pair of two that are never reloaded.
3. **Leaks**: ``--reloads`` reloads in a row of the 2-worker one under load (four client
   threads): every answer must be a 200; descriptors and RSS of the process tree after 20
   warm-up reloads and at the end.

    .venv/bin/python bench/reload_cost.py [--switches 20] [--duration 30] [--pair-repeats 2]
        [--reloads 200] [--control] [--no-pin]
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import re
import signal
import statistics
import sys
import threading
import time
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a script: make ``bench`` (and ``tests``) importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.harness import (
    Case,
    LoadBalancer,
    Processes,
    bench_env,
    bench_parser,
    control_wanted,
    launch_lb,
    machine_load,
    percentile,
    print_pairs,
    run_bench,
    save,
    side_by_side,
    start_nginx_ports,
    warm,
)
from tests.support import UpstreamServer, open_fds, rss_kib

RUNS = re.compile(r"worker (\d+) runs configuration generation (\d+) ")


def toml(pools: dict[str, str], routes: dict[str, str], extra: str = "", api: str = "") -> str:
    """A whole file: ``pools`` (name -> url list), ``routes`` (prefix -> pool), the api
    pool's extra keys ``api``, then ``extra`` (scalar sections) first."""
    lines = [extra]
    for name, url in pools.items():
        variable = f"BENCH_{name.upper().replace('-', '_')}_URL"
        lines += ["[[upstreams]]", f'name = "{name}"', f'url_env = "{variable}"', f'url = "{url}"']
        if name == "api-gateway":
            lines.append(api)
    for prefix, pool in routes.items():
        lines += ["[[routes]]", f'prefix = "{prefix}"', f'upstream = "{pool}"']
    return "\n".join(lines) + "\n"


def generation_everywhere(lb: LoadBalancer, generation: int, workers: int) -> bool:
    found = (RUNS.search(line) for line in list(lb.output))
    return len({m.group(1) for m in found if m and m.group(2) == str(generation)}) >= workers


def reload(
    lb: LoadBalancer, path: Path, text: str, generation: int, workers: int
) -> tuple[float, float]:
    """Write ``text``, SIGHUP, wait until every worker says it runs ``generation``: when the
    signal was sent (monotonic clock), and the seconds until the last worker's line was read."""
    path.write_text(text)
    started = time.monotonic()
    os.kill(lb.process.pid, signal.SIGHUP)
    while not generation_everywhere(lb, generation, workers):
        if time.monotonic() - started > 10:
            raise RuntimeError(f"generation {generation} not applied by every worker in 10 s")
        time.sleep(0.002)
    return started, time.monotonic() - started


# ------------------------------------------------------------------------------ 1. switch


class Probes:
    """Threads asking ``/probe/x`` back to back, each on a fresh connection: (when the
    answer came, the worker that answered (its request-id prefix), the upstream's name)."""

    def __init__(self, port: int, threads: int = 2) -> None:
        self.port = port
        self.samples: list[tuple[float, str, str]] = []
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._ask, daemon=True) for _ in range(threads)]
        for thread in self._threads:
            thread.start()

    def _ask(self) -> None:
        while not self._stop.is_set():
            conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=5)
            try:
                conn.request("GET", "/probe/x", headers={"Connection": "close"})
                response = conn.getresponse()
                body = response.read()
                worker = (response.getheader("x-request-id") or "-").rsplit("-", 1)[0]
                name = json.loads(body).get("upstream", "?") if response.status == 200 else "!"
                self.samples.append((time.monotonic(), worker, name))
            except (OSError, http.client.HTTPException, ValueError):
                self.samples.append((time.monotonic(), "-", "!"))
            finally:
                conn.close()

    def stop(self) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(10)


def switch_times(
    lb: LoadBalancer, path: Path, files: dict[str, str], switches: int
) -> dict[str, Any]:
    probes = Probes(lb.port)
    firsts, everywhere, workers_seen, failures = [], [], [], 0
    generation = 1
    try:
        time.sleep(0.5)
        for i in range(switches):
            name = "new" if i % 2 == 0 else "old"
            generation += 1
            mark = len(probes.samples)
            started, _ = reload(lb, path, files[name], generation, 2)
            time.sleep(0.3)  # samples after every worker has switched, for the "everywhere" time
            after = [s for s in probes.samples[mark:] if s[0] >= started]
            failures += sum(1 for s in after if s[2] == "!")
            new = [s for s in after if s[2] == name]
            if not new:
                raise RuntimeError(f"switch {i + 1}: no answer from {name!r}")
            firsts.append(new[0][0] - started)
            first_per_worker: dict[str, float] = {}
            for when, worker, _ in new:
                first_per_worker.setdefault(worker, when - started)
            workers_seen.append(len(first_per_worker))
            everywhere.append(max(first_per_worker.values()))
            print(
                f"  switch {i + 1:>3}/{switches}: first answer from {name!r} after "
                f"{1000 * firsts[-1]:6.1f} ms, every worker ({len(first_per_worker)}) after "
                f"{1000 * everywhere[-1]:6.1f} ms",
                flush=True,
            )
    finally:
        probes.stop()
    return {
        "first_ms": [1000 * t for t in firsts],
        "everywhere_ms": [1000 * t for t in everywhere],
        "workers_seen": workers_seen,
        "probe_failures": failures,
        "probes": len(probes.samples),
    }


# --------------------------------------------------------------------------- 3. leaks


def reloads_in_a_row(
    lb: LoadBalancer, path: Path, files: dict[str, str], reloads: int, generation: int
) -> dict[str, Any]:
    statuses: dict[int, int] = {}
    stop = threading.Event()

    def load() -> None:
        conn = http.client.HTTPConnection("127.0.0.1", lb.port, timeout=10)
        while not stop.is_set():
            try:
                conn.request("GET", "/api/load")
                response = conn.getresponse()
                response.read()
                statuses[response.status] = statuses.get(response.status, 0) + 1
            except (OSError, http.client.HTTPException):
                statuses[0] = statuses.get(0, 0) + 1
                conn.close()
                conn = http.client.HTTPConnection("127.0.0.1", lb.port, timeout=10)
        conn.close()

    def tree() -> tuple[int, int]:
        pids = lb.pids()
        return sum(open_fds(p) for p in pids), sum(rss_kib(p) for p in pids)

    threads = [threading.Thread(target=load, daemon=True) for _ in range(4)]
    for thread in threads:
        thread.start()
    took = []
    names = ("new", "old")
    try:
        for i in range(min(20, reloads)):  # warm-up
            generation += 1
            reload(lb, path, files[names[i % 2]], generation, 2)
        time.sleep(1.0)
        fds_before, rss_before = tree()
        for i in range(reloads):
            generation += 1
            took.append(reload(lb, path, files[names[i % 2]], generation, 2)[1])
            if (i + 1) % 50 == 0:
                fds, rss = tree()
                print(f"  {i + 1:>4} reloads: {fds} descriptors, RSS {rss:,} KiB", flush=True)
        time.sleep(1.0)  # a retired client is closed once idle (looked at every 0.5 s)
        fds_after, rss_after = tree()
    finally:
        stop.set()
        for thread in threads:
            thread.join(10)
    return {
        "reloads": reloads,
        "apply_ms_median": 1000 * statistics.median(took),
        "apply_ms_p99": 1000 * percentile(took, 99),
        "statuses": statuses,
        "fds": (fds_before, fds_after),
        "rss_kib": (rss_before, rss_after),
    }


# -------------------------------------------------------------------------------- main


def bench_reload(args: argparse.Namespace, procs: Processes, tmp: Path, stamp: str) -> None:
    print(machine_load())
    urls, _nginx = start_nginx_ports(procs, tmp, 2)
    nginx = urls[0]
    old, new = UpstreamServer("old").start(), UpstreamServer("new").start()
    document: dict[str, Any] = {"load": machine_load()}
    try:
        # 1 and 3: the 2-worker load balancer
        pools = {"api-gateway": nginx, "dashboard-ui": nginx}
        routes = {"/api": "api-gateway", "/probe": "probe", "/": "dashboard-ui"}
        files = {
            name: toml({**pools, "probe": server.url}, routes)
            for name, server in (("old", old), ("new", new))
        }
        path = tmp / "switch.toml"
        path.write_text(files["old"])
        lb = launch_lb(
            procs, name="switch", app="service.app:app", workers=2,
            env=bench_env({}, {"LB_CONFIG": str(path)}), ready=("/lb-health", "/probe/x"),
        )  # fmt: skip
        print(f"\n1. SIGHUP to the first request served by the new file, {args.switches} switches")
        switch = switch_times(lb, path, files, args.switches)
        document["switch"] = switch
        for key in ("first_ms", "everywhere_ms"):
            values = switch[key]
            print(
                f"  {key}: median {statistics.median(values):.1f} ms, p90 "
                f"{percentile(values, 90):.1f}, max {max(values):.1f} (n={len(values)})"
            )
        print(f"  probe answers {switch['probes']}, failed {switch['probe_failures']}")

        if args.reloads:
            print(f"\n3. {args.reloads} reloads in a row under load (2 workers)")
            leaks = reloads_in_a_row(lb, path, files, args.reloads, args.switches + 1)
            document["leaks"] = leaks
            print(
                f"  apply (SIGHUP to every worker running it): median "
                f"{leaks['apply_ms_median']:.1f} ms, p99 {leaks['apply_ms_p99']:.1f} ms; "
                f"answers {leaks['statuses']}; descriptors {leaks['fds'][0]} -> "
                f"{leaks['fds'][1]}; RSS {leaks['rss_kib'][0]:,} -> {leaks['rss_kib'][1]:,} KiB"
            )
        lb.stop()  # the 2-worker one is done: the pairs below get the machine

        # 2: two 1-worker load balancers on one core, one reloaded every second
        pools = {"api-gateway": nginx, "blog-service": urls[1], "dashboard-ui": nginx}
        routes = {"/api": "api-gateway", "/blog": "blog-service", "/": "dashboard-ui"}
        steady = toml(pools, routes)
        other = toml(
            {**pools, "blog-service": f"{urls[1]};weight=3"},
            {"/extra": "blog-service", **routes},
            extra="[proxy]\nread_timeout = 29.0\n",
            api="max_fails = 3",
        )
        cases = []
        labels = ["no reload", "reloaded every 1 s"]
        labels += ["no reload (A/A)"] if control_wanted(not args.control) else []
        for label in labels:
            file = tmp / f"{label.split()[0]}-{len(cases)}.toml"
            file.write_text(steady)
            balancer = launch_lb(
                procs, name=f"pair-{len(cases)}", app="service.app:app",
                env=bench_env({}, {"LB_CONFIG": str(file)}),
            )  # fmt: skip
            cases.append((Case(label, balancer), file))
        for case, _ in cases:
            warm(case.url, args.connections, procs.pin)  # warm-up
        (base, _), (reloaded, reloaded_file) = cases[0], cases[1]
        stop = threading.Event()

        def reloader() -> None:
            generation, texts = 1, (other, steady)
            while not stop.wait(1.0):
                generation += 1
                reloaded_file.write_text(texts[generation % 2])
                os.kill(reloaded.lb.process.pid, signal.SIGHUP)

        print(
            f"\n2. throughput, side by side on one core: {args.pair_repeats} repeat(s) x both "
            f"orders x {args.duration:g} s, wrk -t1 -c{args.connections}"
        )
        thread = threading.Thread(target=reloader, daemon=True)
        thread.start()
        try:
            others = [reloaded] + [case for case, _ in cases[2:]]
            pairs = side_by_side(
                base, others, repeats=args.pair_repeats, duration=args.duration,
                connections=args.connections, pin=procs.pin,
            )  # fmt: skip
        finally:
            stop.set()
            thread.join(5)
        applied = len([line for line in reloaded.lb.output if RUNS.search(line)])
        print_pairs(base, others, pairs)
        print(f"  the reloaded one applied {applied} generations during the pairs")
        document["pairs"] = {
            label: {"ratios": p.ratios, "rps": p.rps, "errors": p.errors}
            for label, p in pairs.items()
        }
        document["reloads_during_pairs"] = applied
        save("reload", stamp, document)
    finally:
        old.stop()
        new.stop()


def main() -> int:
    parser = bench_parser(__doc__ or "")
    parser.add_argument("--switches", type=int, default=20, help="SIGHUP switches timed (20)")
    parser.add_argument("--duration", type=float, default=30.0, help="seconds per pair run (30)")
    parser.add_argument("--pair-repeats", type=int, default=2, help="side-by-side repeats (2)")
    parser.add_argument("--reloads", type=int, default=200, help="reloads in a row, 0: skip (200)")
    parser.add_argument("--control", action="store_true", help="add an A/A pair (no reloads)")
    smoke = {"switches": 2, "duration": 0.2, "pair_repeats": 1, "reloads": 2}
    return run_bench("reload", parser.parse_args(), bench_reload, smoke)


if __name__ == "__main__":
    sys.exit(main())
