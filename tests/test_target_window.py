"""Per-target window figures: average and p50/p95/p99 of the last 10 s, all workers."""

from __future__ import annotations

import os

import pytest

from service.metrics.bins import coarse_quantile_ms
from service.pools import PoolLayout, PoolState
from service.sharedmem import Plan, SharedBlock


class Clock:
    def __init__(self) -> None:
        self.now = 5000.0

    def __call__(self) -> float:
        return self.now


def test_target_percentiles_merge_every_worker_and_age_out() -> None:
    clock = Clock()
    plan = Plan(rows=2)
    layout = PoolLayout(plan, targets=2)
    block = SharedBlock(plan.allocate(clock), plan)
    mine = PoolState(block.claim(os.getpid()), layout, clock=clock)
    other = PoolState(block.claim(os.getppid()), layout, clock=clock)
    for _ in range(90):
        mine.started(0)
        mine.finished(0, 0.003, failed=False)
    for _ in range(10):
        other.started(0)
        other.finished(0, 0.4, failed=True)
    other.started(1)
    other.finished(1, 0.05, failed=False)

    figures = mine.figures(0)
    assert (figures.requests, figures.failures, figures.window_count) == (100, 10, 100)
    assert coarse_quantile_ms(figures.window_histogram, 0.50) == pytest.approx(3.0, rel=0.13)
    # the slow worker's requests are the tail: merged histograms, not averaged percentiles
    assert coarse_quantile_ms(figures.window_histogram, 0.95) == pytest.approx(400, rel=0.13)
    assert sum(mine.figures(1).window_histogram) == 1  # targets do not mix

    clock.now += 11.0  # past the 10 s window
    figures = mine.figures(0)
    assert figures.window_count == 0 and sum(figures.window_histogram) == 0
    assert figures.requests == 100  # lifetime counters stay
