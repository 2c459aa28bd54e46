"""Admission control in one process: the settings, the real client address, the shared
table's GCRA and its bounds, the RateLimit fields. The real processes (``--workers 2``,
distinct loopback clients, Redis) are in test_admission_limits.py and
test_admission_cluster.py."""

from __future__ import annotations

import multiprocessing
import os
import time
from ipaddress import ip_network
from types import SimpleNamespace

import pytest

from service.admission import reserve
from service.admission.gate import Gate
from service.frontdoor.client import ClientAddresses, parse_address
from service.admission.layout import LOCK_WAIT_S, NEIGHBOURHOOD, TAT, AdmissionLayout
from service.admission.policy import compile_limits, key_hash, policy_item, route_plans
from service.admission.table import ClientTable, RateTable
from service.errors import RateLimited
from service.settings import SettingsError, load_settings
from service.settings.model import STATS_ROUTE
from service.sharedmem import Plan, SharedBlock, SharedLock
from tests.support import REPO

TOML = (REPO / "config" / "defaults.toml").read_text()


def settings_with(tmp_path, limits: str = "", **env: str):
    config = tmp_path / "lb.toml"
    config.write_text(TOML + "\n" + limits)
    return load_settings(env={"LB_CONFIG": str(config), **env})


# ---------------------------------------------------------------------------- settings


def test_nothing_is_limited_by_default() -> None:
    settings = load_settings(env={})
    assert settings.limits == () and settings.admission.rate_limit is None
    assert settings.admission.trusted_proxies == ()
    assert settings.admission.max_client_requests == 0
    assert {u.max_requests for u in settings.upstreams} == {0}


def test_the_shorthand_is_one_per_client_limit_on_every_route_and_stats() -> None:
    spec = load_settings(env={"LB_RATE_LIMIT": "50/s burst=100"}).admission.rate_limit
    assert spec is not None
    assert (spec.name, spec.rate, spec.burst, spec.per, spec.dry_run) == (
        "default", 50.0, 100, "client", False,
    )  # fmt: skip
    assert STATS_ROUTE in spec.routes and "api-gateway" in spec.routes
    per_minute = load_settings(env={"LB_RATE_LIMIT": "120/min, dry_run=true"}).admission
    assert per_minute.rate_limit is not None
    assert per_minute.rate_limit.rate == 2.0 and per_minute.rate_limit.dry_run
    assert per_minute.rate_limit.burst == 2  # one second's worth by default


@pytest.mark.parametrize(
    "value", ["50", "50/h", "0/s", "-1/s", "50/s burst=0", "50/s burst=x", "50/s size=3"]
)
def test_a_bad_shorthand_names_the_variable(value: str) -> None:
    with pytest.raises(SettingsError, match="LB_RATE_LIMIT"):
        load_settings(env={"LB_RATE_LIMIT": value})


def test_limits_tables(tmp_path) -> None:
    settings = settings_with(
        tmp_path,
        """
[[limits]]
name = "writes"
rate = "10/min"
burst = 3
per = "header:X-Api-Key"
routes = ["api-gateway", "stats"]
methods = ["post", "PUT"]
path_prefix = "/api/orders/"
dry_run = true
""",
        BLOG_SERVICE_MAX_REQUESTS="7",
    )
    (spec,) = settings.limits
    assert spec.rate == pytest.approx(1 / 6) and spec.burst == 3
    assert spec.per == "header:X-Api-Key" and spec.methods == ("POST", "PUT")
    assert spec.path_prefix == "/api/orders" and spec.dry_run
    assert settings.upstream("blog-service").max_requests == 7


@pytest.mark.parametrize(
    ("table", "message"),
    [
        ('name = "a"\nrate = "1/s"\nroutes = ["nowhere"]', "not routes"),
        ('name = "a"\nrate = "fast"', "rate"),
        ('name = "a"\nrate = "1/s"\nper = "cookie"', "per"),
        ('name = "a b"\nrate = "1/s"', "name"),
        ('name = "a"\nrate = "1/s"\nmethods = ["BREW"]', "methods"),
        ('name = "a"\nrate = "1/s"\nburst = 0', "burst"),
        ('name = "a"\nrate = "1/s"\nratee = 2', "unknown key"),
        ('name = "default"\nrate = "1/s"', "used twice"),
    ],
)
def test_a_bad_limit_stops_start_up_naming_it(tmp_path, table: str, message: str) -> None:
    with pytest.raises(SettingsError, match=message):
        settings_with(tmp_path, f"[[limits]]\n{table}\n", LB_RATE_LIMIT="5/s")


def test_route_plans_only_for_routes_something_covers(tmp_path) -> None:
    settings = settings_with(
        tmp_path, '[[limits]]\nname = "api"\nrate = "5/s"\nroutes = ["api-gateway"]\n'
    )
    plans = route_plans(settings, compile_limits(settings))
    assert set(plans) == {"api-gateway"}
    everywhere = load_settings(env={"LB_RATE_LIMIT": "5/s"})
    assert STATS_ROUTE in route_plans(everywhere, compile_limits(everywhere))


# ---------------------------------------------------------------------- client address

TRUSTED = ClientAddresses([ip_network("10.0.0.0/8"), ip_network("127.0.0.1/32")])


@pytest.mark.parametrize(
    ("peer", "forwarded", "client"),
    [
        ("203.0.113.5", ["198.51.100.1"], "203.0.113.5"),  # forged by an untrusted peer
        ("127.0.0.1", ["198.51.100.1"], "198.51.100.1"),  # one trusted proxy
        ("127.0.0.1", ["198.51.100.1, 203.0.113.9, 10.1.2.3"], "203.0.113.9"),  # chained
        ("127.0.0.1", ["198.51.100.1", "203.0.113.9, 10.1.2.3"], "203.0.113.9"),  # two lines
        ("127.0.0.1", ["10.0.0.1, 10.0.0.2"], "10.0.0.1"),  # all trusted: the leftmost
        ("127.0.0.1", ["garbage, 203.0.113.8"], "203.0.113.8"),  # left of the client: unread
        ("127.0.0.1", ["203.0.113.8, garbage"], "127.0.0.1"),  # malformed where read: peer
        ("127.0.0.1", ["not-an-ip"], "127.0.0.1"),
        ("127.0.0.1", [""], "127.0.0.1"),
        ("127.0.0.1", ["203.0.113.8,"], "127.0.0.1"),
        ("127.0.0.1", [], "127.0.0.1"),
        ("127.0.0.1", ["[2001:db8::1]:443, 10.0.0.9"], "2001:db8::1"),
        ("127.0.0.1", ["203.0.113.4:5555"], "203.0.113.4"),
        ("::ffff:127.0.0.1", ["::ffff:203.0.113.6"], "203.0.113.6"),
    ],
)
def test_the_client_is_the_rightmost_untrusted_address(
    peer: str, forwarded: list[str], client: str
) -> None:
    assert TRUSTED.resolve(peer, forwarded) == client


def test_without_trusted_proxies_the_peer_is_the_client() -> None:
    assert ClientAddresses(()).resolve("127.0.0.1", ["198.51.100.1"]) == "127.0.0.1"


def test_parse_address_refuses_what_is_not_one() -> None:
    assert parse_address("unknown") is None and parse_address("1.2.3") is None
    assert str(parse_address(" 192.0.2.1 ")) == "192.0.2.1"


# ---------------------------------------------------------------------- the shared table


def table_of(keys: int, limits: int = 1) -> tuple[RateTable, memoryview]:
    plan = Plan()
    layout = AdmissionLayout(plan, limits=limits, pools=1, keys=keys, client_slots=0, cluster=False)
    block = SharedBlock(plan.allocate(), plan)
    return RateTable(block.mem, block.mem.cast("B"), layout), block.mem


def take(table: RateTable, mem: memoryview, at: int, now: float, interval: float, burst: int):
    """A slot's state moved as a GCRA decision would (the table's tests use it to make keys
    busy; the gate's own decisions are tested through the gate, below)."""
    tat = max(mem[at + TAT], now)
    if tat + interval - now > burst * interval + 1e-9:
        return False
    mem[at + TAT] = tat + interval
    return True


def gate_of(settings, clock) -> Gate:
    """The gate as a worker opens it (``service.admission.startup``), alone in this process
    (no host lock), reading ``clock``."""
    plan = Plan()
    layout = reserve(plan, settings)
    assert layout is not None
    block = SharedBlock(plan.allocate(), plan)
    row = block.claim(os.getpid())
    mem = block.mem
    limits = compile_limits(settings)
    return Gate(
        mem=mem, layout=layout, lock=HostLock(None, mem, layout.lock_holder.at, process_alive),
        table=RateTable(mem, mem.cast("B"), layout),
        clients=ClientTable(mem, mem.cast("B"), layout),
        plans=route_plans(settings, limits), limits=limits,
        pool_names=[u.name for u in settings.upstreams], client_addresses=ClientAddresses(()),
        row_at=row.at, column=row.index, row_offsets=list(block.rows()),
        max_client_requests=settings.admission.max_client_requests, send_fields=True, clock=clock,
    )  # fmt: skip


def test_the_gate_admits_the_burst_then_one_request_per_interval(tmp_path) -> None:
    """GCRA as the gate decides it, on a clock the test moves: 10/s with a burst of 3."""
    limit = '[[limits]]\nname = "api"\nrate = "10/s"\nburst = 3\nroutes = ["api-gateway"]\n'
    now = [100.0]
    gate = gate_of(settings_with(tmp_path, limit), lambda: now[0])

    def ask(client: str = "127.0.0.2") -> str:
        """The request's RateLimit field if admitted, else ``429 <Retry-After>``."""
        request = SimpleNamespace(
            ip=client, method="GET", path="/api/x", headers={}, ctx=SimpleNamespace()
        )
        try:
            admission = gate.admit(request, "api-gateway")  # type: ignore[arg-type]
        except RateLimited as refused:
            return f"429 {refused.retry_after}"
        assert admission is not None
        return admission.fields["ratelimit"]

    # the burst at once, then refusals that consume nothing
    assert [ask() for _ in range(5)] == [
        '"api";r=2;t=1', '"api";r=1;t=1', '"api";r=0;t=1', "429 1", "429 1",
    ]  # fmt: skip
    assert ask("127.0.0.3") == '"api";r=2;t=1'  # another client: a budget of its own
    now[0] = 100.1  # one interval later: one more, and no more
    assert [ask(), ask()] == ['"api";r=0;t=1', "429 1"]
    now[0] = 100.4  # the whole burst back
    assert [ask() for _ in range(4)] == [
        '"api";r=2;t=1', '"api";r=1;t=1', '"api";r=0;t=1', "429 1",
    ]  # fmt: skip


def test_a_key_keeps_its_slot_and_its_state() -> None:
    table, mem = table_of(64)
    fp = key_hash("api", "client-a")
    at = table.find(0, fp, "client-a", now=100.0)
    assert table.find(0, fp, "client-a", now=100.0) == at
    assert table.key_at(at) == "client-a"
    mem[at + TAT] = 123.0
    assert table.find(0, fp, "client-a", now=100.0) == at and mem[at + TAT] == 123.0


def test_a_flood_of_new_keys_never_evicts_a_heavy_hitter() -> None:
    table, mem = table_of(256)
    heavy = key_hash("api", "heavy")
    at = table.find(0, heavy, "heavy", now=0.0)
    for _ in range(10):
        take(table, mem, at, 0.0, 1.0, 3)  # the heavy hitter is over its budget
    now = 0.0
    overflow = 0
    for n in range(100_000):  # a flood of distinct keys, each using its slot
        now += 0.00001
        key = f"flood-{n}"
        slot = table.find(0, key_hash("api", key), key, now)
        overflow += slot == table.fixed(0)
        take(table, mem, slot, now, 1.0, 3)
    assert overflow > 0  # the table filled up: the newest keys shared the overflow bucket
    assert table.find(0, heavy, "heavy", now) == at  # still there, state intact
    assert mem[at + TAT] > now


def test_a_decayed_slot_is_reused_and_the_table_never_grows() -> None:
    table, mem = table_of(NEIGHBOURHOOD)  # one neighbourhood: every key competes
    size = len(mem)
    slots = set()
    for n in range(NEIGHBOURHOOD):
        slot = table.find(0, key_hash("api", f"k{n}"), f"k{n}", 0.0)
        take(table, mem, slot, 0.0, 1.0, 1)
        slots.add(slot)
    assert len(slots) == NEIGHBOURHOOD and table.fixed(0) not in slots
    assert table.find(0, key_hash("api", "late"), "late", 0.5) == table.fixed(0)  # all busy
    reused = table.find(0, key_hash("api", "late"), "late", 1.5)  # all decayed by now
    assert reused in slots and table.key_at(reused) == "late"
    assert len(mem) == size


# ---------------------------------------------------------------------- the fields


def test_rate_limit_policy_item() -> None:
    assert policy_item("default", 100, 1 / 50) == '"default";q=100;w=2'
    assert policy_item("slow", 1, 60.0) == '"slow";q=1;w=60'


# ---------------------------------------------------------------------- the host lock


def _admission_lock(block: SharedBlock, layout: AdmissionLayout) -> SharedLock:
    return block.lock(layout.lock, "admission host", LOCK_WAIT_S)


def _die_holding(block: SharedBlock, layout: AdmissionLayout) -> None:
    assert _admission_lock(block, layout).acquire()
    os._exit(0)  # dead while holding it, as far as anyone can tell


def test_a_lock_whose_holder_died_is_taken_back(caplog: pytest.LogCaptureFixture) -> None:
    context = multiprocessing.get_context("fork")
    plan = Plan()
    layout = AdmissionLayout(plan, limits=1, pools=1, keys=64, client_slots=0, cluster=False)
    block = SharedBlock(plan.allocate(), plan)
    lock = _admission_lock(block, layout)
    child = context.Process(target=_die_holding, args=(block, layout))
    child.start()
    child.join()
    assert child.exitcode == 0
    started = time.monotonic()
    assert lock.acquire()  # taken back, and had
    assert time.monotonic() - started < 1.0
    assert lock.recovered == 1  # it died holding the lock
    assert "died holding it" in caplog.text
    lock.release()
    assert lock.acquire(0) and lock.recovered == 1  # free again: an ordinary acquisition
    lock.release()
