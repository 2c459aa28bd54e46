"""Polling instead of fixed sleeps: wait for the condition itself, then assert exactly."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Generic, NamedTuple, TypeVar

T = TypeVar("T")


class Waited(NamedTuple, Generic[T]):
    """What :func:`wait_for` saw: the predicate's (truthy) value and the seconds it took."""

    value: T
    elapsed: float


def wait_for(predicate: Callable[[], T], timeout: float = 5.0, step: float = 0.05) -> Waited[T]:
    """Call ``predicate()`` every ``step`` seconds until it returns a truthy value.

    Returns that value and the seconds it took (a ``Waited``, itself always true, so
    ``assert wait_for(...)`` reads as it should); raises ``AssertionError`` with the last value
    after ``timeout`` seconds. ``step=0`` polls back to back (for predicates that send a
    request each time).
    """
    start = time.monotonic()
    while not (value := predicate()):
        if time.monotonic() - start > timeout:
            raise AssertionError(f"condition not met within {timeout} s (last: {value!r})")
        time.sleep(step)
    return Waited(value, time.monotonic() - start)
