"""DNS discovery against what a real DNS server answers besides A records: AAAA targets, each
record's TTL against ``LB_RESOLVER_VALID`` and its 1 s floor, one lookup per name per host,
SERVFAIL, REFUSED and NODATA, and ``LB_RESOLVER_MAX_TARGETS``.

One dnsmasq answers every name from its command line (``--host-record`` with a TTL each)
and logs every query it receives to a file, which a thread reads as it grows: the test counts
and times the load balancer's real queries. Names it does not know are forwarded, with
DNSSEC validation on, to a second dnsmasq: it answers ``servfail.test`` unsigned, which fails
validation (SERVFAIL), and refuses every other name (no catch-all, no upstream of its own):
REFUSED. One load balancer with two workers serves the whole module; the timing test reads
the queries logged since it started.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.support import Knob, LoadBalancer, UpstreamServer, env_for, knobs_on_one_port, wait_for
from tests.support.dns import DnsServer

VALID = 3  # LB_RESOLVER_VALID
MAX_TARGETS = 4
# name -> record TTL (dnsmasq's --host-record): below the floor, below VALID, above VALID
TTLS = {"ttl0.test": 0, "ttl2.test": 2, "ttl60.test": 60}
MANY = [f"127.0.0.{n}" for n in range(11, 17)]  # six addresses for many.test
ROOT_ANCHOR = "20326,8,2,E06D44B80B8F1D39A95C0B0D7C65D08458E880409BBC683457104237C7F8EC8D"


class QueryLog:
    """The queries dnsmasq logged (``query[A] name from ...``), each with the monotonic time
    this reader saw it (every 20 ms)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.seen: list[tuple[float, str, str]] = []  # (time, type, name)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        offset, partial = 0, ""
        while not self._stop.is_set():
            if self.path.exists():
                with open(self.path) as file:
                    file.seek(offset)
                    text = file.read()
                    offset = file.tell()
                lines = (partial + text).split("\n")
                partial = lines.pop()
                now = time.monotonic()
                for line in lines:
                    if ": query[" in line:
                        kind, name = line.split(": query[", 1)[1].split("] ", 1)
                        self.seen.append((now, kind, name.split(" ", 1)[0]))
            time.sleep(0.02)

    def times(self, name: str, kind: str = "A", since: float = 0.0) -> list[float]:
        return [t for t, k, n in list(self.seen) if n == name and k == kind and t >= since]

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(2)


@pytest.fixture(scope="module")
def validator(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DnsServer]:
    """The upstream of servfail.test: answers it, unsigned (and NODATA for AAAA)."""
    server = DnsServer(
        {}, catch_all=False,
        args=["--host-record=servfail.test,127.0.0.7", "--address=/servfail.test/"],
    )  # fmt: skip
    yield server
    server.close()


@pytest.fixture(scope="module")
def dns_server(
    tmp_path_factory: pytest.TempPathFactory, validator: DnsServer
) -> Iterator[tuple[DnsServer, QueryLog]]:
    log = tmp_path_factory.mktemp("dns") / "queries.log"
    # each name known here gets NODATA for the record type it lacks (--address=/name/ with
    # a record of the name), not REFUSED
    records = [f"--host-record={name},127.0.0.2,{ttl}" for name, ttl in TTLS.items()]
    records += ["--host-record=v6.test,::1"]
    records += [f"--host-record=many.test,{address}" for address in MANY]
    records += ["--txt-record=nodata.test,no address here"]
    local = [*TTLS, "v6.test", "many.test", "nodata.test"]
    args = [
        *records, *(f"--address=/{name}/" for name in local),
        # the default server (dnsmasq validates only what it forwards there, not to a
        # --server=/domain/): every name not known here but refused.test's, which the
        # upstream refuses in turn
        f"--server={validator.address.replace(':', '#')}",
        "--dnssec", f"--trust-anchor=.,{ROOT_ANCHOR}",
    ]  # fmt: skip
    server = DnsServer({}, ttl=1, catch_all=False, args=args, log=log)
    queries = QueryLog(log)
    yield server, queries
    queries.stop()
    server.close()


@pytest.fixture(scope="module")
def knobs() -> Iterator[dict[str, Knob]]:
    """One Knob on [::1] and one on 127.0.0.2, on the same port (retried until free on both)."""
    started = knobs_on_one_port(("::1", "127.0.0.2"))
    yield started
    for knob in started.values():
        knob.stop()


@pytest.fixture(scope="module")
def lb(
    upstreams: dict[str, UpstreamServer],
    knobs: dict[str, Knob],
    dns_server: tuple[DnsServer, QueryLog],
) -> Iterator[LoadBalancer]:
    port = knobs["::1"].port

    def resolved(*names: str) -> str:
        return ", ".join(f"http://{name}:{port};resolve" for name in names)

    env = env_for(
        upstreams,
        API_GATEWAY_URL=resolved("v6.test"),
        BLOG_SERVICE_URL=resolved(*TTLS),
        USER_SERVICE_URL=resolved("many.test"),
        AUTH_SERVICE_URL=resolved("servfail.test", "refused.test", "nodata.test"),
        LB_RESOLVER=dns_server[0].address,
        LB_RESOLVER_VALID=str(VALID),
        LB_RESOLVER_MAX_TARGETS=str(MAX_TARGETS),
        LB_RESOLVER_TIMEOUT="1",
        LB_STATS_CACHE_TTL="0",
        LB_ACCESS_LOG="false",
    )
    balancer = LoadBalancer(env, workers=2)
    balancer.started_at = time.monotonic()  # type: ignore[attr-defined]
    yield balancer
    balancer.stop()


def discovery(lb: LoadBalancer, pool: str) -> dict[str, dict[str, Any]]:
    """The pool's ``discovery`` entries by name, as the answering worker sees them."""
    with httpx.Client(base_url=lb.url, trust_env=False, timeout=10) as client:
        entries = client.get("/stats").json()["load-balancer"]["upstreams"][pool]["discovery"]
    return {entry["name"]: entry for entry in entries}


def pool_targets(lb: LoadBalancer, pool: str) -> list[str]:
    with httpx.Client(base_url=lb.url, trust_env=False, timeout=10) as client:
        pool_entry = client.get("/stats").json()["load-balancer"]["upstreams"][pool]
    return sorted(target["url"] for target in pool_entry["targets"])


# ------------------------------------------------------------------------ the tests


def test_an_aaaa_record_is_a_target_reached_over_ipv6(
    lb: LoadBalancer, knobs: dict[str, Knob]
) -> None:
    port = knobs["::1"].port
    wait_for(lambda: pool_targets(lb, "api-gateway") == [f"http://[::1]:{port}"], timeout=5)
    entry = discovery(lb, "api-gateway")["v6.test"]
    assert entry["addresses"] == ["::1"] and entry["error"] is None
    before = knobs["::1"].total()
    answers = [lb.client.get("/api/six").status_code for _ in range(10)]
    assert answers == [200] * 10
    assert knobs["::1"].total() == before + 10  # every one over IPv6, to [::1]


def test_servfail_refused_and_nodata_are_told_apart(lb: LoadBalancer) -> None:
    def settled() -> dict[str, Any] | None:
        entries = discovery(lb, "auth-service")
        return entries if all(e["error"] for e in entries.values()) else None

    entries = wait_for(settled, timeout=5).value
    assert {name: e["error"] for name, e in entries.items()} == {
        "servfail.test": "servfail",
        "refused.test": "refused",
        "nodata.test": "nodata",
    }
    assert all(e["addresses"] == [] for e in entries.values())
    # SERVFAIL and REFUSED are failures (the last set kept: none), NODATA an answer: no target
    assert pool_targets(lb, "auth-service") == []
    assert {e["lookups"]["ok"] for e in entries.values()} == {0}
    output = "".join(lb.output)
    assert "lookup of servfail.test failed (SERVFAIL from the DNS server)" in output
    assert "lookup of refused.test failed (refused by the DNS server)" in output
    assert "nodata.test has no address (NODATA)" in output


def test_max_targets_keeps_the_first_addresses_with_one_warning(lb: LoadBalancer) -> None:
    entry = wait_for(lambda: discovery(lb, "user-service")["many.test"], timeout=5).value
    assert entry["addresses"] == MANY[:MAX_TARGETS]  # the first in sorted order
    assert len(pool_targets(lb, "user-service")) == MAX_TARGETS
    # looked up again every second (TTL 1): still one warning, from one worker
    wait_for(lambda: discovery(lb, "user-service")["many.test"]["lookups"]["ok"] >= 3, timeout=5)
    warned = [line for line in list(lb.output) if "many.test has 6 addresses" in line]
    assert len(warned) == 1, warned
    assert "keeping the first 4 (LB_RESOLVER_MAX_TARGETS)" in warned[0]


def test_each_name_is_looked_up_once_per_host_at_its_ttl_floored_and_capped(
    lb: LoadBalancer, dns_server: tuple[DnsServer, QueryLog]
) -> None:
    """Two workers, one lookup per name: the queries dnsmasq received come at the record's
    TTL (2 s), at ``LB_RESOLVER_VALID`` (3 s) when the TTL is longer, and at 1 s at least
    when the TTL is 0. Were both workers looking up, the gaps would halve."""
    queries = dns_server[1]
    since = lb.started_at  # type: ignore[attr-defined]
    wait_for(lambda: len(queries.times("ttl60.test", since=since)) >= 3, timeout=12, step=0.2)
    for name, expected in (("ttl0.test", 1.0), ("ttl2.test", 2.0), ("ttl60.test", float(VALID))):
        times = queries.times(name, since=since)
        gaps = [round(b - a, 2) for a, b in zip(times, times[1:])]
        assert len(gaps) >= 2, (name, times)
        # due at the interval after the answer, seen on the next 0.1 s tick; the reader
        # notices a line within 0.02 s
        assert all(expected - 0.1 <= gap <= expected + 0.4 for gap in gaps), (name, gaps)
        # and AAAA with each A, in the same lookup
        assert len(queries.times(name, "AAAA", since=since)) >= len(times) - 1
