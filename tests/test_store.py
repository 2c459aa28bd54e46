"""The shared-memory metrics store alone, with an injected clock."""

from __future__ import annotations

import math
import multiprocessing
import os
import random

import pytest

from service.metrics import RequestSample
from service.metrics.store import HIST_BINS, bin_value, histogram_bin
from service.metrics import MetricsLayout, SharedMemoryStore
from service.sharedmem import Plan, SharedBlock

ROUTES = ("api-gateway", "dashboard-ui", "local")


class Clock:
    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


class Host:
    """One host's shared block, laid out for the metrics store alone."""

    def __init__(self, clock: Clock, rows: int = 4) -> None:
        self.plan = Plan(rows=rows)
        self.layout = MetricsLayout(self.plan, ROUTES)
        self.block = SharedBlock(self.plan.allocate(clock), self.plan)
        self.clock = clock

    def store(self, pid: int) -> SharedMemoryStore:
        """The store of the worker ``pid``, on the row it claims."""
        return SharedMemoryStore(self.block.claim(pid), self.layout, clock=self.clock)


def make_store(clock: Clock, rows: int = 4, pid: int | None = None) -> SharedMemoryStore:
    return Host(clock, rows).store(pid or os.getpid())


def real(duration: float = 0.01, status: int = 200) -> RequestSample:
    return RequestSample("api-gateway", True, status, duration)


def test_counts_every_request_and_only_real_ones_in_the_window() -> None:
    clock = Clock()
    store = make_store(clock)
    for _ in range(50):
        store.record(real())
    for _ in range(30):
        store.record(RequestSample("dashboard-ui", False, 200, 0.002))
    snap = store.snapshot()
    assert snap.total_requests == 80
    assert snap.window_count == 50
    assert snap.real_count == 50
    assert snap.by_route["dashboard-ui"]["2xx"] == 30
    assert snap.by_route["api-gateway"]["2xx"] == 50


def test_window_edge_is_exact_to_the_bucket() -> None:
    clock = Clock(1000.0)
    store = make_store(clock)
    store.record(real())  # at t = 1000.0
    clock.now = 1000.0 + 9.9
    assert store.snapshot().window_count == 1  # still inside the 10 s window
    clock.now = 1000.0 + 10.05
    assert store.snapshot().window_count == 0  # one fine bucket (50 ms) past the edge


def test_window_counts_at_every_position_within_half_a_percent() -> None:
    """One request every 10 ms for 30 s; at any instant the window holds 1000 +- 5."""
    clock = Clock(5000.0)
    store = make_store(clock)
    worst = 0.0
    for step in range(3000):
        clock.now = 5000.0 + step * 0.01
        store.record(real())
        if step >= 1000 and step % 37 == 0:
            count = store.snapshot().window_count
            worst = max(worst, abs(count - 1000) / 1000)
    assert worst <= 0.005


def test_average_and_success_rate() -> None:
    clock = Clock()
    store = make_store(clock)
    for duration, status in ((0.1, 200), (0.3, 500), (0.2, 302), (0.4, 404)):
        store.record(real(duration, status))
    snap = store.snapshot()
    assert snap.window_duration_s / snap.window_count == pytest.approx(0.25)
    assert snap.real_success == 2  # 200 and 302; 404 and 500 are failures
    assert snap.status_classes == {"1xx": 0, "2xx": 1, "3xx": 1, "4xx": 1, "5xx": 1}


def test_old_traffic_leaves_the_window_but_not_the_lifetime_figures() -> None:
    clock = Clock()
    store = make_store(clock)
    store.record(real(0.1))
    clock.now += 60.0
    store.record(real(0.3))
    snap = store.snapshot()
    assert snap.window_count == 1
    assert snap.window_duration_s == pytest.approx(0.3)
    assert snap.real_count == 2
    assert snap.real_duration_s == pytest.approx(0.4)


def test_ring_reuse_after_a_long_gap_does_not_resurrect_old_counts() -> None:
    clock = Clock()
    store = make_store(clock)
    for _ in range(10):
        store.record(real())
    # exactly one ring period later the same slots come round again
    clock.now += 12.8 * 5
    store.record(real())
    assert store.snapshot().window_count == 1


@pytest.mark.parametrize("q", [0.5, 0.9, 0.95, 0.99])
def test_percentiles_within_five_percent(q: float) -> None:
    clock = Clock()
    store = make_store(clock)
    rng = random.Random(7)
    values = sorted(rng.lognormvariate(math.log(0.02), 1.0) for _ in range(5000))
    for value in values:
        store.record(real(value))
    exact = values[math.ceil(q * len(values)) - 1] * 1000
    estimate = store.snapshot().percentile_ms(q)
    assert abs(estimate - exact) / exact <= 0.05


def test_histogram_bins_bound_the_relative_error() -> None:
    for value in (2e-5, 1e-4, 0.00123, 0.05, 0.2, 1.7, 30.0):
        assert abs(bin_value(histogram_bin(value)) - value) / value <= 0.04
    assert histogram_bin(1e9) == HIST_BINS - 1


def test_two_workers_rows_merge_and_percentiles_come_from_merged_histograms() -> None:
    clock = Clock()
    host = Host(clock, rows=4)
    fast = host.store(os.getpid())
    # a second, live process id for the other row (the parent is certainly alive)
    slow = host.store(os.getppid())
    for _ in range(90):
        fast.record(real(0.001))
    for _ in range(10):
        slow.record(real(1.0))
    snap = fast.snapshot()
    assert snap.window_count == 100
    assert snap.workers == 2
    # merged p95 is the slow worker's latency; averaging per-worker p95s would give ~0.5 s
    assert snap.percentile_ms(0.95) == pytest.approx(1000, rel=0.05)
    assert snap.percentile_ms(0.50) == pytest.approx(1, rel=0.05)


def test_a_restarted_worker_takes_over_the_dead_rows_totals() -> None:
    clock = Clock()
    host = Host(clock, rows=2)
    dead = multiprocessing.Process(target=lambda: None)
    dead.start()
    dead.join()
    first = host.store(dead.pid)
    for _ in range(5):
        first.record(real())
    host.store(os.getppid())  # fills row 2
    replacement = host.store(os.getpid())
    replacement.record(real())
    assert replacement.snapshot().total_requests == 6


def test_full_store_refuses_a_new_worker_clearly() -> None:
    clock = Clock()
    host = Host(clock, rows=1)
    host.store(os.getppid())
    with pytest.raises(RuntimeError, match="full"):
        host.store(os.getpid())


def test_heartbeat_and_sockets() -> None:
    clock = Clock()
    store = make_store(clock)
    assert store.snapshot().heartbeat_age_s is None
    store.socket_opened()
    store.socket_opened()
    store.socket_closed()
    clock.now += 3.0
    snap = store.snapshot()
    assert snap.ws_connections == 1
    assert snap.heartbeat_age_s == pytest.approx(3.0)


def _rss_kib() -> int:
    for line in open("/proc/self/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


def test_memory_does_not_grow_with_a_million_records() -> None:
    """A store that kept per-request samples would grow by tens of MiB here."""
    clock = Clock()
    store = make_store(clock)
    sample = real(0.004)
    for _ in range(10_000):  # warm up every bucket of both rings
        clock.now += 0.002
        store.record(sample)
    before = _rss_kib()
    for _ in range(1_000_000):
        clock.now += 0.0001
        store.record(sample)
    assert _rss_kib() - before < 2048
    assert store.snapshot().total_requests == 1_010_000
