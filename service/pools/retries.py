"""When a failed attempt may be tried again on another target, and how often at most.

nginx's default ``proxy_next_upstream error timeout`` with its ``non_idempotent`` rule, and
Envoy's retry budget on top. What is a failure is the pool's to say (``PassiveHealth``): not
getting an answer, or an answer whose status the operator listed in ``FAIL_STATUSES``. Then:

- a request whose connection could not be made is retried whatever its method: nothing
  reached the upstream;
- otherwise only idempotent requests are retried (RFC 9110 §9.2.2), and only while nothing
  of the response has reached the client;
- a request whose body has started to stream is never retried: the body cannot be replayed;
- a pool retries up to ``RETRIES`` times, each time after a wait drawn by :func:`backoff`;
- retries are at most ``RETRY_BUDGET`` percent of the pool's requests of the last 10 s, with
  3 in flight always allowed (:class:`RetryBudget`).
"""

from __future__ import annotations

import random
import time
from dataclasses import dataclass
from typing import Protocol

from service.errors import UpstreamConnectTimeout, UpstreamError, UpstreamRefused

IDEMPOTENT = frozenset({"GET", "HEAD", "OPTIONS", "PUT", "DELETE", "TRACE"})


class Replayable(Protocol):
    """What the rule needs of a request body: whether any of it was taken yet."""

    started: bool


@dataclass(frozen=True, slots=True)
class RetryRule:
    """The rule for one request. A WebSocket upgrade is not ``idempotent``: once the
    handshake reached a target, the target may have acted on it."""

    idempotent: bool
    body: Replayable | None = None

    @classmethod
    def for_method(cls, method: str, body: Replayable | None) -> RetryRule:
        if body is None:  # most requests: one of two shared rules, nothing built
            return _NO_BODY_IDEMPOTENT if method in IDEMPOTENT else _NO_BODY_OTHER
        return cls(idempotent=method in IDEMPOTENT, body=body)

    def after_error(self, error: UpstreamError) -> bool:
        if self.body is not None and self.body.started:
            return False
        if isinstance(error, UpstreamRefused | UpstreamConnectTimeout):
            return True
        return self.idempotent

    def after_failed_answer(self) -> bool:
        """After an answer whose status the pool counts as a failure: the target may have
        acted on the request, so only an idempotent one whose body was not taken is sent on."""
        return self.idempotent and not (self.body is not None and self.body.started)


_NO_BODY_IDEMPOTENT = RetryRule(idempotent=True)
_NO_BODY_OTHER = RetryRule(idempotent=False)


BACKOFF_CAP = 10  # the longest wait, in bases (Envoy: 25 ms base, 250 ms at most)


def backoff(retry: int, base: float, rng: random.Random) -> float:
    """Seconds to wait before retry number ``retry`` (1, 2, ...): full jitter (AWS's
    "Exponential Backoff and Jitter"), uniform in [0, base x 2^(retry-1)], never above
    ``BACKOFF_CAP`` bases, so clients that failed together do not retry together."""
    if base <= 0:
        return 0.0
    return rng.uniform(0.0, base * min(2 ** (retry - 1), BACKOFF_CAP))


class RetryBudget:
    """Retries may be at most ``ratio`` of the requests of the last ``window_s`` seconds.

    Envoy's retry budget: an outage cannot turn every request into two. ``floor`` retries in
    flight are always allowed (Envoy's ``min_retry_concurrency``), so that a quiet service,
    or a lone client, can still retry at all: a retry is in flight from :meth:`try_spend`
    until :meth:`ended`. Counts are kept in one-second buckets, so memory does not depend on
    the traffic. Each pool has its own (``RETRY_BUDGET`` percent), per worker.
    """

    def __init__(self, ratio: float = 0.2, window_s: int = 10, floor: int = 3) -> None:
        self._ratio, self._window, self._floor = ratio, window_s, floor
        self.in_flight = 0
        self._buckets: dict[int, list[int]] = {}  # second -> [requests, retries]
        self._second, self._bucket = -1, [0, 0]  # the current second's bucket, at hand

    def _current(self, now: float | None) -> list[int]:
        second = int(time.monotonic() if now is None else now)
        if second == self._second:
            return self._bucket
        if second not in self._buckets:
            for old in [s for s in self._buckets if s <= second - self._window]:
                del self._buckets[old]
            self._buckets[second] = [0, 0]
        self._second, self._bucket = second, self._buckets[second]
        return self._bucket

    def request(self, now: float | None = None) -> None:
        self._current(now)[0] += 1

    def try_spend(self, now: float | None = None) -> bool:
        current = self._current(now)
        if self.in_flight >= self._floor:
            requests = sum(b[0] for b in self._buckets.values())
            retries = sum(b[1] for b in self._buckets.values())
            if retries >= self._ratio * requests:
                return False
        current[1] += 1
        self.in_flight += 1
        return True

    def ended(self) -> None:
        """A retry that :meth:`try_spend` allowed is over (answered, failed or dropped)."""
        self.in_flight -= 1
