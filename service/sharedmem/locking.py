"""Holding the block's lock between processes, with a deadline: a writer that cannot get it
within ``timeout_s`` raises ``TimeoutError`` naming what it guards, rather than waiting on a
holder that may never let go."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

LOCK_TIMEOUT_S = 2.0


@contextmanager
def held(lock: Any, what: str, timeout_s: float = LOCK_TIMEOUT_S) -> Iterator[None]:
    """``lock`` (a ``multiprocessing.Lock``) held for the block; None: one process is alone,
    nothing to hold."""
    if lock is None:
        yield
        return
    if not lock.acquire(timeout=timeout_s):
        raise TimeoutError(f"{what}'s lock was not free within {timeout_s:g} s")
    try:
        yield
    finally:
        lock.release()
