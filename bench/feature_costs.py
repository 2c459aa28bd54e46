#!/usr/bin/env python
"""What each feature costs when configured, against the default configuration, in one
invocation and measured the same way (issue 23).

One 1-worker load balancer per configuration, all in front of the same nginx, all started
side by side: the default configuration (the baseline) and each feature configured on its
own: the access log as text and as JSON (written to a file: ``bench/_logfile.py``), one rate
limit that admits everything the load sends (``bench/admission_cost.py``'s), TLS (wrk talks
HTTPS; an ECDSA P-256 certificate made here), a pool resolved from DNS (``;resolve``,
answered by dnsmasq as in ``bench/discovery_cost.py``), cluster figures shared through Redis
(as in ``bench/cluster_cost.py``), and tracing exporting every request's spans (to
``bench/tracing_cost.py``'s sink). Every configuration is loaded once per repeat, one at a
time, the order rotated each repeat; the table gives medians, and each configuration's
req/s and CPU per request over the baseline's in the same repeat (median, min-max).

Not here: the PROXY protocol, whose load must come through HAProxy, so its baseline is not
this one (``bench/proxy_protocol_cost.py``).

How it measures (wrk, pinning, CPU per request, other load, results): bench/harness.py.

    .venv/bin/python bench/feature_costs.py [--duration 5] [--repeats 3] [--smoke]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack, contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a script: make ``bench`` (and ``tests``) importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.admission_cost import ONE_LIMIT
from bench.cluster_cost import CLUSTER
from bench.discovery_cost import NAME
from bench.harness import (
    URL_VARS,
    Case,
    Processes,
    WrkRun,
    bench_certificate,
    bench_env,
    bench_parser,
    get_json,
    interleaved,
    launch_lb,
    machine_load,
    median,
    ratio,
    run_bench,
    save,
    start_nginx,
)
from bench.tls_cost import negotiated
from bench.tracing_cost import Sink
from tests.support.dns import DnsServer
from tests.support.redis import RedisServer

SERVICE, LOGFILE = "service.app:app", "bench._logfile:app"
BASELINE = "default (baseline)"


@dataclass
class Config:
    """One configuration: its label, the app it runs and its settings beyond the default."""

    label: str
    env: dict[str, str] = field(default_factory=dict)
    app: str = SERVICE
    tls: bool = False
    check: Callable[[Case], str] | None = None  # after the runs: what shows it was on


@contextmanager
def helpers() -> Iterator[tuple[DnsServer, RedisServer, Sink]]:
    """dnsmasq (the resolved pool's name), Redis (the cluster) and the OTLP sink, stopped at
    the end whatever happens."""
    with ExitStack() as stack:
        dns = DnsServer({NAME: ["127.0.0.1"]}, ttl=5)
        stack.callback(dns.close)
        store = RedisServer()
        stack.callback(store.close)
        sink = Sink()
        stack.callback(sink.stop)
        yield dns, store, sink


def access_lines(path: Path) -> Callable[[Case], str]:
    def check(case: Case) -> str:
        lines = sum(1 for line in path.open("rb") if b"service.access" in line)
        if not lines:
            raise RuntimeError(f"{case.label}: no access line in {path}")
        return f"{lines:,} access lines in the file"

    return check


def rate_decided(case: Case) -> str:
    rate = get_json(case.lb.url, "/stats")["load-balancer"]["limits"]["rate"]["default"]
    if not rate["admitted"] or rate["limited"]:
        raise RuntimeError(f"{case.label}: the limit admitted {rate['admitted']}, limited some")
    return f"admitted {rate['admitted']:,}, limited {rate['limited']}"


def cluster_status(case: Case) -> str:
    cluster = get_json(case.lb.url, "/stats")["load-balancer"].get("cluster", {})
    if cluster.get("status") != "ok":
        raise RuntimeError(f"{case.label}: /stats cluster is {cluster}")
    return f"cluster status {cluster['status']}, replicas {cluster.get('replicas')}"


def configs(
    tmp: Path, upstream: str, tls: tuple[str, str], dns: DnsServer, store: RedisServer, sink: Sink
) -> list[Config]:
    """The baseline and each feature on its own; ``tls``: certificate and key paths."""
    cert, key = tls
    port = upstream.rsplit(":", 1)[1]

    def logged(fmt: str) -> Config:
        path = tmp / f"access-{fmt}.log"
        env = {"LB_ACCESS_LOG": "true", "LB_LOG_FORMAT": fmt, "BENCH_STDOUT": str(path)}
        label = f"access log, {'JSON' if fmt == 'json' else fmt}, to a file"
        return Config(label, env, LOGFILE, check=access_lines(path))

    def exported(case: Case) -> str:
        if not sink.requests:
            raise RuntimeError(f"{case.label}: the sink got no export request")
        return f"{sink.requests:,} export requests to the sink"

    return [
        Config(BASELINE),
        logged("text"),
        logged("json"),
        Config("rate limit (admits all)", ONE_LIMIT, check=rate_decided),
        Config("TLS (wrk over HTTPS)", {"LB_TLS_CERT": cert, "LB_TLS_KEY": key}, tls=True),
        Config(
            "resolved pool (DNS)",
            {"API_GATEWAY_URL": f"http://{NAME}:{port};resolve", "LB_RESOLVER": dns.address},
        ),
        Config(
            "cluster figures (Redis)",
            {"LB_CLUSTER_REDIS_URL": store.url, "LB_CLUSTER_NAME": CLUSTER},
            check=cluster_status,
        ),
        Config(
            "tracing export (every request)",
            {"OTEL_EXPORTER_OTLP_ENDPOINT": sink.url},
            check=exported,
        ),
    ]


def bench(args: argparse.Namespace, procs: Processes, tmp: Path, stamp: str) -> None:
    with helpers() as (dns, store, sink):
        _bench(args, procs, tmp, stamp, dns, store, sink)


def _bench(
    args: argparse.Namespace,
    procs: Processes,
    tmp: Path,
    stamp: str,
    dns: DnsServer,
    store: RedisServer,
    sink: Sink,
) -> None:
    upstream, nginx = start_nginx(procs, tmp)
    urls = {var: upstream for var in URL_VARS}
    cert, key, trust = bench_certificate(tmp / "tls")
    wanted = configs(tmp, upstream, (cert, key), dns, store, sink)

    def start(index: int, config: Config) -> Case:
        lb = launch_lb(
            procs, name=f"feature-{index}", app=config.app, env=bench_env(urls, config.env),
            tls=trust if config.tls else None,
        )  # fmt: skip
        return Case(config.label, lb)

    started = time.monotonic()
    with ThreadPoolExecutor(len(wanted)) as pool:  # the starts overlap: a smoke run stays short
        cases = list(pool.map(start, range(len(wanted)), wanted))
    print(f"{len(cases)} load balancers started in {time.monotonic() - started:.1f} s")
    tls_case = next(case for case, config in zip(cases, wanted, strict=True) if config.tls)
    print(f"{tls_case.label}: {negotiated(tls_case.lb.url, trust)}")
    print(
        f"wrk -t1 -c{args.connections} -d{args.duration:g}s --latency, {args.repeats} repeats, "
        f"every configuration once per repeat, order rotated; 1 worker each, pinning "
        f"{'on' if procs.pin else 'off'}; {machine_load()}"
    )
    also = [p for p in (store.process, dns.process) if p is not None]
    results = interleaved(
        cases, repeats=args.repeats, duration=args.duration, connections=args.connections,
        pin=procs.pin, nginx=nginx, also=also, warm_up=not args.smoke,
    )  # fmt: skip
    for case, config in zip(cases, wanted, strict=True):
        if config.check is not None:
            print(f"  {case.label}: {config.check(case)}")
    rows = table(cases, results)
    print_table(rows, args)
    save("feature-costs", stamp, {
        "load": machine_load(),
        "args": vars(args),
        "runs": {label: [asdict(r) for r in runs] for label, runs in results.items()},
        "table": rows,
    })  # fmt: skip


@dataclass
class Row:
    label: str
    rps: float
    cpu_us: float
    rps_ratios: list[float]  # this configuration's req/s over the baseline's, per repeat
    cpu_ratios: list[float]  # its CPU µs per request over the baseline's, per repeat
    other_load: float
    errors: int


def table(cases: list[Case], results: dict[str, list[WrkRun]]) -> list[dict[str, Any]]:
    base = results[BASELINE]
    rows = []
    for case in cases:
        runs = results[case.label]
        rows.append(asdict(Row(
            case.label, median(runs, "rps"), median(runs, "server_cpu_us"),
            [ratio(x.rps, b.rps) for x, b in zip(runs, base, strict=True)],
            [ratio(x.server_cpu_us, b.server_cpu_us) for x, b in zip(runs, base, strict=True)],
            median(runs, "other_load"), sum(r.errors for r in runs),
        )))  # fmt: skip
    return rows


def spread(values: list[float]) -> str:
    return f"{statistics.median(values):.3f} ({min(values):.3f}-{max(values):.3f})"


def print_table(rows: list[dict[str, Any]], args: argparse.Namespace) -> None:
    print(
        "\n| configuration | req/s | CPU µs/req | req/s / baseline | CPU/req / baseline "
        "| other load | errors |\n|---|---:|---:|---:|---:|---:|---:|"
    )
    for row in rows:
        print(
            f"| {row['label']} | {row['rps']:,.0f} | {row['cpu_us']:.1f} "
            f"| {spread(row['rps_ratios'])} | {spread(row['cpu_ratios'])} "
            f"| {row['other_load']:.2f} | {row['errors']} |"
        )
    print(
        f"\nreq/s, CPU µs/req (the load balancer's process tree per request), other load (CPUs "
        f"busy outside the run): medians of {args.repeats}; X / baseline: this configuration's "
        "figure over the baseline's in the same repeat, median (min-max)."
    )


def main() -> int:
    parser = bench_parser(__doc__ or "")
    parser.add_argument("--duration", type=float, default=5.0, help="seconds per wrk run (5)")
    parser.add_argument("--repeats", type=int, default=3, help="runs per configuration (3)")
    smoke = {"duration": 0.1, "repeats": 1}
    return run_bench("feature-costs", parser.parse_args(), bench, smoke)


if __name__ == "__main__":
    sys.exit(main())
