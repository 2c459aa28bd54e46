"""A route's two decisions beyond its prefix: does this request match (``matcher``), and
which backend takes it (:class:`WeightedChoice`).

Both are built once per routing table (start-up, reload) from the settings, so that a
request pays only for what its route uses: a route without ``match`` has no matcher to call,
a route with one upstream no draw to make.
"""

from __future__ import annotations

import random
from bisect import bisect_right
from collections.abc import Callable, Sequence
from typing import Any, Generic, Protocol, TypeVar

from service.settings import RouteMatch

T = TypeVar("T")


class Asked(Protocol):
    """What a match reads of a request (a Sanic ``Request`` is one)."""

    method: str

    @property
    def headers(self) -> Any: ...  # a case-insensitive multidict: ``getall(name, default)``

    @property
    def cookies(self) -> Any: ...  # ``getlist(name)``

    def get_args(self, keep_blank_values: bool = ...) -> Any: ...  # ``getlist(name)``


Matcher = Callable[[Asked], bool]


def matcher(match: RouteMatch) -> Matcher:
    """A test of ``match`` on a request: the method first (free), then headers, cookies and
    the query (parsed only when the route asks for it). A name given several times (two
    ``X-Canary`` fields, ``?v=1&v=2``) matches when one of its values is the value."""
    methods = frozenset(match.methods)
    headers, cookies, query = match.headers, match.cookies, match.query

    def test(request: Asked) -> bool:
        if methods and request.method not in methods:
            return False
        if headers:
            fields = request.headers
            if any(value not in fields.getall(name, ()) for name, value in headers):
                return False
        if cookies:
            jar = request.cookies
            if any(value not in jar.getlist(name) for name, value in cookies):
                return False
        if query:
            args = request.get_args(keep_blank_values=True)
            if any(value not in args.getlist(name) for name, value in query):
                return False
        return True

    return test


class WeightedChoice(Generic[T]):
    """One of ``choices`` per call, each with the probability of its weight over the sum
    (one uniform draw and a binary search over the cumulative weights; a weight of 0 is
    never drawn). Each worker draws on its own generator: over many requests the shares
    are the weights', whichever workers serve them."""

    __slots__ = ("_choices", "_cumulative", "_random", "_total")

    def __init__(self, choices: Sequence[tuple[T, int]]) -> None:
        kept = [(choice, weight) for choice, weight in choices if weight > 0]
        if not kept:
            raise ValueError("at least one weight must be above 0")
        # the last one twice: a draw that rounds up to the total still finds a choice
        self._choices = (*(choice for choice, _ in kept), kept[-1][0])
        cumulative, total = [], 0
        for _, weight in kept:
            total += weight
            cumulative.append(total)
        self._cumulative = tuple(cumulative)
        self._total = total
        self._random = random.Random().random

    def pick(self) -> T:
        return self._choices[bisect_right(self._cumulative, self._random() * self._total)]
