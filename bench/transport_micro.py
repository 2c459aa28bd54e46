#!/usr/bin/env python
"""CPU cost of one proxied exchange per transport, without Sanic: a quick, noise-robust check.

Runs the proxy's upstream half in one process on uvloop: ``--concurrency`` tasks each build
an ``httpx.Request`` the way ``service/blueprints/proxy.py`` does, ``client.send(stream=True)``
it, read the body with ``aiter_raw`` and close the response. Reports CPU microseconds per
exchange (``time.process_time``, so other load on the machine barely moves it) and wall-clock
exchanges per second. ``--direct`` calls the transport itself instead of ``client.send``.

    /work/venv/bin/python bench/transport_micro.py http://127.0.0.1:PORT [--requests N]
        [--transport httpcore,aiohttp,h1] [--direct]

Needs an upstream; ``bench/proxy_bench.py`` is the end-to-end measurement.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import httpx
import uvloop

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.variant_transports import FACTORIES
from service.settings import ProxySettings
from service.transport import build_client, limits_of

HEADERS = [
    ("Host", "127.0.0.1:7100"),
    ("User-Agent", "wrk"),
    ("Accept", "*/*"),
    ("Accept-Encoding", "gzip"),
    ("X-Forwarded-For", "127.0.0.1"),
    ("X-Forwarded-Proto", "http"),
    ("X-Forwarded-Host", "127.0.0.1:7100"),
]


async def run(
    url: str, name: str, requests: int, concurrency: int, direct: bool
) -> tuple[float, float]:
    proxy = ProxySettings()
    upstream = SimpleNamespace(name="bench", url=url)  # all build_client reads of an Upstream
    transport = FACTORIES[name](limits_of(proxy))
    client = build_client(upstream, proxy, transport=transport)  # type: ignore[arg-type]
    timeout = client.timeout.as_dict()
    left = requests

    async def worker() -> None:
        nonlocal left
        while left > 0:
            left -= 1
            request = httpx.Request(
                "GET", url + "/api/x", headers=HEADERS, extensions={"timeout": timeout}
            )
            if direct:
                response = await transport.handle_async_request(request)
                stream = response.stream
                try:
                    async for _ in stream:  # type: ignore[union-attr]
                        pass
                finally:
                    await stream.aclose()  # type: ignore[union-attr]
            else:
                response = await client.send(request, stream=True)
                try:
                    async for _ in response.aiter_raw():
                        pass
                finally:
                    await response.aclose()
            assert response.status_code == 200

    await asyncio.gather(*(worker() for _ in range(concurrency)))  # warm-up: pool filled
    left = requests
    cpu, wall = time.process_time(), time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
    await client.aclose()
    return cpu / requests * 1e6, requests / wall


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("url")
    parser.add_argument("--requests", type=int, default=20000)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--transport", default="httpcore,aiohttp,h1")
    parser.add_argument("--direct", action="store_true")
    args = parser.parse_args()
    for name in args.transport.split(","):
        figures = [
            uvloop.run(run(args.url, name, args.requests, args.concurrency, args.direct))
            for _ in range(args.repeats)
        ]
        cpu = statistics.median(f[0] for f in figures)
        rate = statistics.median(f[1] for f in figures)
        mode = "transport" if args.direct else "client.send"
        print(f"{name:<14} via {mode:<11} {cpu:7.1f} µs CPU/exchange  {rate:9,.0f} exchanges/s")


if __name__ == "__main__":
    main()
