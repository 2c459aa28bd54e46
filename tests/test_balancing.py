"""Target choice, passive health and the retry budget, on the pool alone (no network)."""

from __future__ import annotations

import heapq
import os
import random
from collections import Counter

import pytest

from service.pools import Pool, PoolLayout, PoolState, RetryBudget
from service.pools.balancing import LeastRequest, RoundRobin
from service.pools.state import EJECTED_UNTIL
from service.sharedmem import Plan, SharedBlock
from service.settings import PassiveHealth, TargetSpec, Upstream


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def make_pool(
    weights: list[int], balance: str = "least_request", **passive: float
) -> tuple[Pool, Clock]:
    clock = Clock()
    upstream = Upstream(
        name="api",
        url_env="API_GATEWAY_URL",
        targets=tuple(
            TargetSpec(url=f"http://10.0.0.{i}:80", weight=w) for i, w in enumerate(weights)
        ),
        balance=balance,
        passive=PassiveHealth(**passive),  # type: ignore[arg-type]
    )
    block, layout = host_block(len(weights))
    state = PoolState(block.claim(os.getpid()), layout, clock=clock)
    # a seeded generator: every run draws the same numbers
    return Pool(upstream, 0, state, rng=random.Random(len(weights))), clock


def host_block(targets: int) -> tuple[SharedBlock, PoolLayout]:
    """A shared block of two worker rows, laid out for ``targets`` pool targets."""
    plan = Plan(rows=2)
    layout = PoolLayout(plan, targets)
    return SharedBlock(plan.allocate(), plan), layout


def spread(pool: Pool, n: int) -> Counter[int]:
    counts: Counter[int] = Counter()
    for _ in range(n):
        target = pool.choose()
        pool.started(target)
        pool.finished(target, 0.001, failed=False)
        counts[target.position] += 1
    return counts


@pytest.mark.parametrize("balance", ["least_request", "round_robin"])
def test_three_equal_targets_share_ten_thousand_requests_within_five_percent(balance: str) -> None:
    pool, _ = make_pool([1, 1, 1], balance)
    counts = spread(pool, 10_000)
    for position in range(3):
        assert abs(counts[position] - 10_000 / 3) <= 0.05 * 10_000 / 3


@pytest.mark.parametrize("balance", ["least_request", "round_robin"])
def test_weights_are_honoured(balance: str) -> None:
    pool, _ = make_pool([3, 1, 1], balance)
    counts = spread(pool, 10_000)
    assert counts[0] / 10_000 == pytest.approx(0.6, abs=0.03)
    assert counts[1] / 10_000 == pytest.approx(0.2, abs=0.03)


def test_round_robin_is_smooth() -> None:
    pool, _ = make_pool([5, 1, 1], "round_robin")
    order = [pool.choose().position for _ in range(7)]
    assert order == [0, 0, 1, 0, 2, 0, 0]


def test_a_stats_read_does_not_move_the_balancer() -> None:
    """``/stats`` asks ``peek()``; the smooth round-robin order is the same with or without."""
    pool, _ = make_pool([5, 1, 1], "round_robin")
    order = []
    for _ in range(7):
        assert pool.peek().position == 0  # the first available target, every time
        order.append(pool.choose().position)
    assert order == [0, 0, 1, 0, 2, 0, 0]


def test_peek_skips_an_ejected_target() -> None:
    pool, _ = make_pool([1, 1])
    pool.started(pool.targets[0])
    pool.finished(pool.targets[0], 0.01, failed=True)
    assert pool.targets[0].ejected()
    assert pool.peek().position == 1


def test_least_request_avoids_a_ten_times_slower_target() -> None:
    """Discrete-event run: 32 clients in a closed loop, target 2 takes 10x as long."""
    pool, clock = make_pool([1, 1, 1])
    service_time = {0: 0.01, 1: 0.01, 2: 0.1}
    finishing: list[tuple[float, int, int]] = []
    counts: Counter[int] = Counter()
    seq = 0
    for _ in range(32):
        target = pool.choose()
        pool.started(target)
        heapq.heappush(finishing, (clock.now + service_time[target.position], seq, target.position))
        seq += 1
    for _ in range(10_000):
        clock.now, _, position = heapq.heappop(finishing)
        pool.finished(pool.targets[position], service_time[position], failed=False)
        counts[position] += 1
        target = pool.choose()
        pool.started(target)
        heapq.heappush(finishing, (clock.now + service_time[target.position], seq, target.position))
        seq += 1
    assert counts[2] < 0.1 * sum(counts.values())  # an equal share would be a third


def test_a_failure_ejects_the_target_and_the_cool_down_grows() -> None:
    pool, clock = make_pool([1, 1, 1], max_fails=1, fail_timeout=10.0, max_ejection=25.0)
    bad = pool.targets[0]
    pool.started(bad)
    pool.finished(bad, 0.01, failed=True)
    assert bad.ejected()
    assert 0 not in spread(pool, 300)
    clock.now += 10.01  # first cool-down over: tried again, fails again -> 20 s
    assert not bad.ejected()
    pool.started(bad)
    pool.finished(bad, 0.01, failed=True)
    assert bad.state.get(bad.index, EJECTED_UNTIL) == pytest.approx(clock.now + 20.0)
    clock.now += 20.01  # and again -> capped at 25 s
    pool.started(bad)
    pool.finished(bad, 0.01, failed=True)
    assert bad.state.get(bad.index, EJECTED_UNTIL) == pytest.approx(clock.now + 25.0)
    clock.now += 25.01  # recovers: a success resets the streak
    pool.started(bad)
    pool.finished(bad, 0.01, failed=False)
    pool.started(bad)
    pool.finished(bad, 0.01, failed=True)
    assert bad.state.get(bad.index, EJECTED_UNTIL) == pytest.approx(clock.now + 10.0)


def test_max_fails_counts_failures_within_the_fail_timeout_only() -> None:
    pool, clock = make_pool([1, 1], max_fails=3, fail_timeout=10.0)
    target = pool.targets[1]
    for _ in range(2):
        pool.started(target)
        pool.finished(target, 0.01, failed=True)
    clock.now += 11.0  # the first two fall out of the window
    pool.started(target)
    pool.finished(target, 0.01, failed=True)
    assert not target.ejected()
    for _ in range(2):
        pool.started(target)
        pool.finished(target, 0.01, failed=True)
    assert target.ejected()


def test_all_targets_down_still_picks_one_panic_mode() -> None:
    pool, _ = make_pool([1, 1], max_ejection_percent=100)
    for target in pool.targets:
        pool.started(target)
        pool.finished(target, 0.01, failed=True)
    assert all(t.ejected() for t in pool.targets)
    assert {pool.choose().position for _ in range(100)} == {0, 1}


@pytest.mark.parametrize(
    ("targets", "percent", "most"), [(2, 50, 1), (4, 50, 2), (3, 50, 1), (5, 0, 1), (3, 100, 3)]
)
def test_ejections_stop_at_max_ejection_percent(targets: int, percent: int, most: int) -> None:
    """Every target failing ejects no more than the cap (at least one may be out)."""
    pool, clock = make_pool([1] * targets, max_ejection_percent=percent)
    for _ in range(3):
        for target in pool.targets:
            pool.started(target)
            pool.finished(target, 0.01, failed=True)
    assert sum(t.ejected() for t in pool.targets) == most
    clock.now += 10.5  # the first ejection (fail_timeout 10 s) is over: another may go
    target = next(t for t in pool.targets if not t.ejected())
    pool.started(target)
    pool.finished(target, 0.01, failed=True)
    assert sum(t.ejected() for t in pool.targets) == 1


def test_a_retry_goes_to_a_target_not_yet_tried() -> None:
    pool, _ = make_pool([1, 1, 1])
    for _ in range(200):
        first = pool.choose()
        assert pool.choose(frozenset({first.position})).position != first.position


def test_ejection_in_one_worker_is_seen_by_another() -> None:
    clock = Clock()
    block, layout = host_block(2)
    upstream = Upstream(
        name="api", url_env="X_URL",
        targets=(TargetSpec(url="http://a:1"), TargetSpec(url="http://b:1")),
    )  # fmt: skip
    # two live processes' rows: this one and its parent
    worker_a = Pool(upstream, 0, PoolState(block.claim(os.getpid()), layout, clock=clock))
    worker_b = Pool(upstream, 0, PoolState(block.claim(os.getppid()), layout, clock=clock))
    worker_a.started(worker_a.targets[0])
    worker_a.finished(worker_a.targets[0], 0.01, failed=True)
    assert worker_b.targets[0].ejected()
    assert {worker_b.choose().position for _ in range(50)} == {1}


def test_retry_budget_caps_retries_at_a_fifth_of_requests() -> None:
    budget = RetryBudget(ratio=0.2, window_s=10, floor=3)
    allowed = 0
    for i in range(1000):
        now = 50.0 + i * 0.005  # 5 s of traffic, all failing
        budget.request(now)
        allowed += budget.try_spend(now)
    assert 190 <= allowed <= 203


def test_least_request_picker_uses_weights_for_ties() -> None:
    picker = LeastRequest(random.Random(3))
    pool, _ = make_pool([9, 1])
    counts = Counter(picker.pick(pool.targets).position for _ in range(2000))
    assert counts[0] > 0.85 * 2000


def test_round_robin_follows_the_weights_smoothly() -> None:
    """Weights 3:1 (nginx's smooth weighted round robin): three picks of the first target
    to one of the second in every run of four, the second never twice in a row."""
    pool, _ = make_pool([3, 1], balance="round_robin")
    picker = RoundRobin()
    order = [picker.pick(pool.targets).position for _ in range(12)]
    assert order == [0, 0, 1, 0] * 3
