#!/usr/bin/env python
"""TLS: proxied throughput and p50 over HTTPS against plain HTTP, and against nginx
terminating TLS on the same core, in one invocation.

Four fronts, each one process (one worker) pinned to the load balancer's core, in front of
the same nginx upstream (``return 200``, on the other core): the load balancer over plain
HTTP, the load balancer over HTTPS (``LB_TLS_CERT``, an ECDSA P-256 certificate made here),
and nginx as a TLS-terminating reverse proxy with Mozilla's intermediate settings and
upstream keep-alive, over HTTPS and over plain HTTP. wrk keeps its connections alive, so the
figures are the cost of TLS records on requests, not of handshakes. Interleaved runs
(medians), then side by side on the one core (bench/harness.py): HTTPS against plain HTTP,
and the load balancer's HTTPS against nginx's.

    .venv/bin/python bench/tls_cost.py [--duration 5] [--repeats 3] [--pair-repeats 2]
"""

from __future__ import annotations

import argparse
import ssl
import socket
import subprocess
import sys
from dataclasses import asdict, dataclass
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make ``bench`` (and ``tests``) importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.harness import (
    LB_CPUS,
    NGINX_HEAD,
    URL_VARS,
    Case,
    Processes,
    add_run_options,
    bench_certificate,
    bench_env,
    bench_parser,
    free_port,
    interleaved,
    launch_lb,
    machine_load,
    median,
    print_pairs,
    run_bench,
    save,
    side_by_side,
    require,
    start_nginx,
    wait_http,
)
from service.tls.contexts import MOZILLA_INTERMEDIATE

NGINX_FRONT = """\
    upstream backend {{
        server {upstream};
        keepalive 64;
    }}
    server {{
        listen 127.0.0.1:{tls_port} ssl;
        listen 127.0.0.1:{plain_port};
        ssl_certificate {cert};
        ssl_certificate_key {key};
        ssl_protocols TLSv1.2 TLSv1.3;
        ssl_ciphers {ciphers};
        ssl_prefer_server_ciphers off;
        ssl_session_cache shared:SSL:10m;
        location / {{
            proxy_pass http://backend;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_set_header X-Forwarded-Proto $scheme;
        }}
    }}
}}
"""


@dataclass
class Front:
    """A serving process that is not the load balancer (nginx), shaped like one for Case."""

    url: str
    proc: subprocess.Popen[bytes]


def start_nginx_front(
    procs: Processes, tmp: Path, upstream: str, cert: str, key: str
) -> tuple[Front, Front]:
    """nginx (one worker, on the load balancer's core) proxying to ``upstream``: its HTTPS
    and its plain-HTTP front."""
    folder = tmp / "front"
    folder.mkdir()
    tls_port, plain_port = free_port(), free_port()
    conf = folder / "nginx.conf"
    conf.write_text(
        NGINX_HEAD.format(tmp=folder)
        + NGINX_FRONT.format(
            upstream=upstream.removeprefix("http://"),
            tls_port=tls_port,
            plain_port=plain_port,
            cert=cert,
            key=key,
            ciphers=MOZILLA_INTERMEDIATE,
        )
    )
    proc = procs.start("nginx-front", ["nginx", "-p", str(folder), "-c", str(conf)], cpus=LB_CPUS)
    wait_http(f"http://127.0.0.1:{plain_port}/api/x", proc)  # one process: both ports are up
    return (
        Front(f"https://127.0.0.1:{tls_port}", proc),
        Front(f"http://127.0.0.1:{plain_port}", proc),
    )


def negotiated(url: str, trust: ssl.SSLContext) -> str:
    """The protocol and cipher a default client gets from ``url`` (what wrk gets too)."""
    port = int(url.rsplit(":", 1)[1])
    raw = socket.create_connection(("127.0.0.1", port))
    with trust.wrap_socket(raw, server_hostname="127.0.0.1") as tls:
        cipher = tls.cipher()
        return f"{tls.version()} {cipher[0] if cipher else '?'}"


def bench(args: argparse.Namespace, procs: Processes, tmp: Path, stamp: str) -> None:
    print(machine_load())
    upstream, nginx = start_nginx(procs, tmp)
    cert, key, trust = bench_certificate(tmp / "tls")
    urls = {var: upstream for var in URL_VARS}
    plain = Case("lb http", launch_lb(procs, name="http", app="service.app", env=bench_env(urls)))
    tls_env = bench_env(urls, {"LB_TLS_CERT": cert, "LB_TLS_KEY": key})
    secure = Case(
        "lb https", launch_lb(procs, name="https", app="service.app", env=tls_env, tls=trust)
    )
    fronts = []
    print(f"lb https: {negotiated(secure.lb.url, trust)}")
    if require("nginx"):  # a smoke run without nginx measures the load balancer alone
        nginx_tls, nginx_plain = start_nginx_front(procs, tmp, upstream, cert, key)
        fronts = [Case("nginx https", nginx_tls), Case("nginx http", nginx_plain)]  # type: ignore[arg-type]
        print(f"nginx https: {negotiated(nginx_tls.url, trust)}")
    cases = [plain, secure, *fronts]

    print(f"\n{args.repeats} interleaved runs of {args.duration:g} s, /api/x (11 bytes), "
          f"{args.connections} keep-alive connections:")  # fmt: skip
    results = interleaved(
        cases, repeats=args.repeats, duration=args.duration, connections=args.connections,
        pin=procs.pin, nginx=nginx,
    )  # fmt: skip
    base_rps = median(results["lb http"], "rps")
    print(f"\n{'front':<12} {'req/s':>8} {'p50 ms':>7} {'p99 ms':>7} {'/lb http':>8} "
          f"{'CPU µs/req':>10}  runs (req/s)")  # fmt: skip
    for case in cases:
        runs = results[case.label]
        rps = median(runs, "rps")
        print(
            f"{case.label:<12} {rps:>8,.0f} {median(runs, 'p50_ms'):>7.2f} "
            f"{median(runs, 'p99_ms'):>7.2f} {rps / base_rps:>8.3f} "
            f"{median(runs, 'server_cpu_us'):>10.1f}  "
            + " ".join(f"{r.rps:,.0f}" for r in runs)
            + (f"  ERRORS {sum(r.errors for r in runs)}" if any(r.errors for r in runs) else "")
        )
    pairs = {}
    if args.pair_repeats:
        print(f"\nside by side on one core, {args.pair_repeats} x both orders:")
        pairs.update(side_by_side(
            plain, [secure], repeats=args.pair_repeats, duration=args.pair_duration,
            connections=args.connections, pin=procs.pin,
        ))  # fmt: skip
        print_pairs(plain, [secure], pairs)
        if fronts:
            pairs.update(side_by_side(
                fronts[0], [Case("lb https vs nginx", secure.lb)],  # type: ignore[list-item]
                repeats=args.pair_repeats, duration=args.pair_duration,
                connections=args.connections, pin=procs.pin,
            ))  # fmt: skip
            print_pairs(fronts[0], [Case("lb https vs nginx", secure.lb)], pairs)
    save("tls", stamp, {
        "load": machine_load(),
        "runs": {label: [asdict(r) for r in runs] for label, runs in results.items()},
        "pairs": {label: asdict(pair) for label, pair in pairs.items()},
    })  # fmt: skip


def main() -> int:
    parser = bench_parser(__doc__ or "")
    add_run_options(parser, duration=5.0, repeats=3, what="front")
    smoke = {"duration": 0.2, "repeats": 1, "pair_repeats": 1, "pair_duration": 0.2}
    return run_bench("tls", parser.parse_args(), bench, smoke)


if __name__ == "__main__":
    sys.exit(main())
