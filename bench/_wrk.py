"""wrk's stand-in in a smoke run (``--smoke`` without wrk installed): wrk's arguments and output.

``python -m bench._wrk -t1 -c32 -d2s --latency [--timeout 5s] [-s SCRIPT] [-H HEADER] URL``
sends ``GET URL`` on up to two keep-alive connections for the duration, each at most
:data:`RATE` requests a second, and prints what :func:`bench.harness.parse_wrk` reads
(requests, Requests/sec, the 50 % and 99 % latencies, non-2xx answers, socket errors). A Lua
``-s`` script is not run: every request is the plain GET. Smoke runs check that a benchmark
still starts and measures, not how fast: paced, the load costs the suite little CPU (at full
speed every smoke run kept both cores busy for each second of load).
"""

from __future__ import annotations

import argparse
import http.client
import ssl
import threading
import time
import urllib.parse
from dataclasses import dataclass, field

MAX_CONNECTIONS = 2
RATE = 100  # requests a second per connection


@dataclass
class Tally:
    latencies: list[float] = field(default_factory=list)
    non_2xx: int = 0
    errors: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)


def seconds(text: str) -> float:
    units = {"ms": 1e-3, "s": 1.0, "m": 60.0}
    for unit in ("ms", "s", "m"):
        if text.endswith(unit):
            return float(text[: -len(unit)]) * units[unit]
    return float(text)


def connect(url: urllib.parse.SplitResult, timeout: float) -> http.client.HTTPConnection:
    if url.scheme == "https":
        return http.client.HTTPSConnection(
            url.hostname, url.port, timeout=timeout, context=ssl._create_unverified_context()
        )
    return http.client.HTTPConnection(url.hostname, url.port, timeout=timeout)


def load(
    url: urllib.parse.SplitResult, headers: dict[str, str], until: float, timeout: float,
    tally: Tally,
) -> None:  # fmt: skip
    """One connection's requests, back to back, reopened after an error."""
    path = url.path or "/"
    if url.query:
        path += "?" + url.query
    conn = connect(url, timeout)
    while time.monotonic() < until:
        started = time.monotonic()
        try:
            conn.request("GET", path, headers=headers)
            response = conn.getresponse()
            response.read()
        except (OSError, http.client.HTTPException):
            with tally.lock:
                tally.errors += 1
            conn.close()
            conn = connect(url, timeout)
            time.sleep(0.01)
            continue
        with tally.lock:
            tally.latencies.append(time.monotonic() - started)
            tally.non_2xx += not 200 <= response.status < 400
        time.sleep(max(0.0, started + 1 / RATE - time.monotonic()))
    conn.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("-t", default="1")
    parser.add_argument("-c", type=int, default=10)
    parser.add_argument("-d", default="10s")
    parser.add_argument("-s", default="")
    parser.add_argument("-H", action="append", default=[])
    parser.add_argument("--latency", action="store_true")
    parser.add_argument("--timeout", default="2s")
    parser.add_argument("url")
    args = parser.parse_args()
    url = urllib.parse.urlsplit(args.url)
    headers = dict(h.split(":", 1) for h in args.H)
    tally = Tally()
    started = time.monotonic()
    until = started + seconds(args.d)
    threads = [
        threading.Thread(target=load, args=(url, headers, until, seconds(args.timeout), tally))
        for _ in range(min(args.c, MAX_CONNECTIONS))
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    elapsed = time.monotonic() - started
    ordered = sorted(tally.latencies) or [0.0]

    def at(p: float) -> str:
        return f"{ordered[min(len(ordered) - 1, int(p * len(ordered)))] * 1e3:.2f}ms"

    print(f"Running {args.d} test @ {args.url} (bench._wrk, wrk's stand-in)")
    print("  Latency Distribution")
    for p in (50, 75, 90, 99):
        print(f"     {p}%   {at(p / 100)}")
    print(f"  {len(tally.latencies)} requests in {elapsed:.2f}s, 0.00MB read")
    if tally.errors:
        print(f"  Socket errors: connect 0, read {tally.errors}, write 0, timeout 0")
    if tally.non_2xx:
        print(f"  Non-2xx or 3xx responses: {tally.non_2xx}")
    print(f"Requests/sec: {len(tally.latencies) / elapsed:10.2f}")


if __name__ == "__main__":
    main()
