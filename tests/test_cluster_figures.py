"""Figures that add across hosts: one host's figures give back its own snapshot, two hosts'
add up, stale buckets leave the window, and only live hosts' gauges count."""

from __future__ import annotations

import dataclasses
import time

import orjson
import pytest

from service import metrics, sharedmem
from service.metrics import HostFigures, RequestSample, SharedMemoryStore, merge, to_snapshot
from service.metrics.figures import WINDOW_RING, Ring
from service.settings import load_settings


def _store() -> SharedMemoryStore:
    settings = load_settings(env={})
    plan = sharedmem.Plan(rows=4)
    layout = metrics.reserve(plan, settings)
    row = sharedmem.SharedBlock(plan.allocate(), plan).claim()
    return SharedMemoryStore(row, layout)


def _traffic(store: SharedMemoryStore, count: int, seed: int) -> None:
    for i in range(count):
        status = 503 if (i + seed) % 9 == 0 else 200
        duration = 0.001 * (1 + (i * 7 + seed) % 40)
        store.record(RequestSample("api-gateway", i % 4 != 0, status, duration, status == 503))


def _wire(figures: HostFigures) -> HostFigures:
    return HostFigures.from_wire(orjson.loads(orjson.dumps(figures.to_wire())))


def test_one_hosts_figures_give_back_its_own_snapshot() -> None:
    store = _store()
    _traffic(store, 300, seed=1)
    store.socket_opened()
    figures = _wire(store.figures())
    local = store.snapshot()
    merged = to_snapshot(merge([figures], live=[figures]), time.time(), local)
    for field in dataclasses.fields(local):
        if field.name == "heartbeat_age_s":
            assert merged.heartbeat_age_s == pytest.approx(local.heartbeat_age_s, abs=0.05)
        elif field.name.endswith("duration_s"):
            assert getattr(merged, field.name) == pytest.approx(getattr(local, field.name))
        else:
            assert getattr(merged, field.name) == getattr(local, field.name), field.name


def test_two_hosts_add_up_and_gauges_count_only_live_hosts() -> None:
    a, b = _store(), _store()
    _traffic(a, 150, seed=2)
    _traffic(b, 50, seed=3)
    a.socket_opened()
    b.socket_opened()
    fa, fb = _wire(a.figures()), _wire(b.figures())
    both = to_snapshot(merge([fa, fb], live=[fa, fb]), time.time(), a.snapshot())
    sa, sb = a.snapshot(), b.snapshot()
    assert both.total_requests == 200
    assert both.window_count == sa.window_count + sb.window_count
    assert both.real_success == sa.real_success + sb.real_success
    assert both.proxy_502 + both.proxy_504 == sa.proxy_502 + sb.proxy_502
    assert both.window_histogram == tuple(
        x + y for x, y in zip(sa.window_histogram, sb.window_histogram)
    )
    assert both.by_route["api-gateway"]["5xx"] == (
        sa.by_route["api-gateway"]["5xx"] + sb.by_route["api-gateway"]["5xx"]
    )
    assert both.ws_connections == 2 and both.workers == 2
    # b stopped publishing: its lifetime counters still count, its open sockets do not
    gone = to_snapshot(merge([fa, fb], live=[fa]), time.time(), sa)
    assert gone.total_requests == 200
    assert gone.ws_connections == 1 and gone.workers == 1


def test_buckets_older_than_the_window_do_not_count() -> None:
    res = 0.05
    now = 1_800_000_000.0
    newest = int(now / res)
    ring = Ring(res, {newest: {0: 3, 1: 0.3}, newest - 199: {0: 2, 1: 0.2}, newest - 200: {0: 7}})
    figures = HostFigures(counters={"total": 12}, rings={WINDOW_RING: ring})
    base = _store().snapshot()
    snapshot = to_snapshot(merge([figures], live=[figures]), now, base)
    assert snapshot.window_count == 5
    assert snapshot.window_duration_s == pytest.approx(0.5)
    later = to_snapshot(merge([figures], live=[figures]), now + 10.0, base)
    assert later.window_count == 0 and later.total_requests == 12


@pytest.mark.parametrize(
    "document",
    [
        {"counters": {"total": "many"}},
        {"rings": {"window": {"resolution_s": 0.05, "buckets": [[1, ["0"], [1.0]]]}}},
        {"rings": {"window": {"resolution_s": 0.05, "buckets": [[1, [0, 1], [1.0]]]}}},
        {"rings": {"window": {"resolution_s": 0.05, "buckets": [["x", [0], [1.0]]]}}},
        {"rings": {"window": {"resolution_s": 0.05, "buckets": {"1": {"0": 1}}}}},
    ],
)
def test_a_malformed_document_is_refused(document: dict[str, object]) -> None:
    with pytest.raises((ValueError, TypeError, KeyError, AttributeError)):
        HostFigures.from_wire(document)
