"""The 15-minute history in the shared block: 5 s buckets, merged across workers (and, for
the cluster store, across replicas), only completed buckets, bounded memory."""

from __future__ import annotations

import os

import pytest

from service.metrics import MetricsLayout, RequestSample, SharedMemoryStore
from service.metrics.bins import COARSE_BINS, coarse_bin, coarse_quantile_ms
from service.metrics.history import RING, History
from service.sharedmem import Plan, SharedBlock

ROUTES = ("api-gateway", "dashboard-ui", "local")
EPOCH = 360_000_000  # a wall-clock epoch of 5 s buckets: 1,800,000,000 s


class Clock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


class Host:
    """One host's block; every store on it shares one monotonic and one wall clock."""

    def __init__(self, rows: int = 4) -> None:
        self.clock = Clock(1000.0)
        self.wall = Clock(EPOCH * 5.0)
        self.plan = Plan(rows=rows)
        self.layout = MetricsLayout(self.plan, ROUTES)
        self.block = SharedBlock(self.plan.allocate(self.clock), self.plan)

    def store(self, pid: int) -> SharedMemoryStore:
        return SharedMemoryStore(
            self.block.claim(pid), self.layout, clock=self.clock, wall_clock=self.wall
        )

    def advance(self, seconds: float) -> None:
        self.clock.now += seconds
        self.wall.now += seconds


def api(status: int = 200, duration: float = 0.002) -> RequestSample:
    return RequestSample("api-gateway", True, status, duration)


def page(status: int = 200) -> RequestSample:
    return RequestSample("dashboard-ui", False, status, 0.001)


def history(store: SharedMemoryStore) -> History:
    found = store.snapshot(history=True).history
    assert found is not None
    return found


def test_the_bucket_still_filling_is_not_shown_and_stats_pays_nothing() -> None:
    host = Host()
    store = host.store(os.getpid())
    store.record(api())
    assert history(store).buckets == ()  # the current 5 s are not complete yet
    assert store.snapshot().history is None  # /stats does not ask for it
    host.advance(5.0)
    (bucket,) = history(store).buckets
    assert bucket.epoch == EPOCH and bucket.requests == 1


def test_buckets_count_every_request_errors_and_real_api_latency() -> None:
    host = Host()
    store = host.store(os.getpid())
    for _ in range(8):
        store.record(api(200, 0.002))
    store.record(api(404, 0.002))
    store.record(api(502, 0.2))
    store.record(page(200))
    store.record(page(0))  # never answered: a server-side error too
    host.advance(5.0)
    (bucket,) = history(store).buckets
    assert (bucket.requests, bucket.server_errors) == (12, 2)
    assert (bucket.real_requests, bucket.real_failures) == (10, 2)
    assert bucket.real_duration_s == pytest.approx(10 * 0.002 + 0.198)
    doc = bucket.document()
    assert doc["t"] == EPOCH * 5.0
    assert doc["requests_per_second"] == pytest.approx(12 / 5)
    assert doc["real_requests_per_second"] == pytest.approx(2.0)
    assert doc["error_rate"] == pytest.approx(100 * 2 / 12, abs=0.001)
    assert doc["real_failure_rate"] == pytest.approx(20.0)
    assert doc["p50_ms"] == pytest.approx(2.0, rel=0.13)
    assert doc["p99_ms"] == pytest.approx(200.0, rel=0.13)


def test_two_workers_buckets_merge_by_epoch() -> None:
    host = Host()
    first = host.store(os.getpid())
    second = host.store(os.getppid())  # a live pid for the other row
    for second_of_span in range(3):  # three spans of 5 s
        for _ in range(2 + second_of_span):
            first.record(api(duration=0.001))
        second.record(api(duration=1.0))
        host.advance(5.0)
    buckets = history(second).buckets
    assert [b.epoch for b in buckets] == [EPOCH, EPOCH + 1, EPOCH + 2]
    assert [b.requests for b in buckets] == [3, 4, 5]
    # percentiles come from the merged histogram: the slow worker's request is the p99
    assert buckets[0].document()["p99_ms"] == pytest.approx(1000.0, rel=0.13)
    assert buckets[2].document()["p50_ms"] == pytest.approx(1.0, rel=0.13)


def test_a_quiet_span_is_absent_and_history_ends_after_fifteen_minutes() -> None:
    host = Host()
    store = host.store(os.getpid())
    store.record(api())
    host.advance(20.0)
    store.record(api())
    host.advance(5.0)
    assert [b.epoch for b in history(store).buckets] == [EPOCH, EPOCH + 4]
    host.advance(900.0 - 25.0)  # the first bucket is the oldest of the last 15 minutes
    assert [b.epoch for b in history(store).buckets] == [EPOCH, EPOCH + 4]
    host.advance(5.0)
    assert [b.epoch for b in history(store).buckets] == [EPOCH + 4]
    host.advance(20.0)
    assert history(store).buckets == ()


def test_a_worker_writing_round_the_ring_keeps_exactly_fifteen_minutes() -> None:
    host = Host(rows=1)
    store = host.store(os.getpid())
    for _ in range(RING.slots * 2):  # round the ring twice: buckets are reused, not added
        store.record(api())
        host.advance(5.0)
    buckets = history(store).buckets
    assert len(buckets) == 180  # 15 minutes of 5 s
    assert {b.requests for b in buckets} == {1}


def test_replicas_merge_like_workers() -> None:
    """The cluster store's merge: two hosts' histories, bucket by bucket."""
    one, two = Host(), Host()
    a, b = one.store(os.getpid()), two.store(os.getpid())
    a.record(api(200))
    b.record(api(500))
    one.advance(5.0)
    two.advance(5.0)
    b.record(api(200))
    two.advance(5.0)
    merged = history(a).merged(history(b))
    assert [(x.epoch, x.requests, x.server_errors) for x in merged.buckets] == [
        (EPOCH, 2, 1),
        (EPOCH + 1, 1, 0),
    ]
    assert merged.document()["buckets"][0]["error_rate"] == 50.0


def test_memory_is_fixed_by_the_layout() -> None:
    """The history costs a fixed 184 x 66 doubles per worker row, whatever the traffic."""
    without = Plan(rows=4)
    with_history = Plan(rows=4)
    MetricsLayout(with_history, ROUTES)
    assert RING.size == 184 * (1 + 5 + COARSE_BINS)
    assert with_history.row_size - without.row_size >= RING.size
    assert RING.size * 8 < 100 * 1024


@pytest.mark.parametrize("seconds", [5e-5, 1e-3, 0.0123, 0.8, 30.0])
def test_coarse_bins_are_within_thirteen_percent(seconds: float) -> None:
    counts = [0] * COARSE_BINS
    counts[coarse_bin(seconds)] = 1
    estimate = coarse_quantile_ms(counts, 0.5)
    if seconds >= 1e-4:
        assert estimate == pytest.approx(seconds * 1000, rel=0.13)
    else:  # everything under 100 µs shares the first bin
        assert estimate < 0.12
    assert coarse_quantile_ms([0] * COARSE_BINS, 0.5) == 0.0
