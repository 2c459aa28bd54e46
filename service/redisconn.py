"""One worker's connection to Redis, as the cluster figures and the admission sync use it.

Both talk to Redis from a background task that must never wait long and never fail loudly:
a Redis that is slow, gone or refusing is an expected state (``/stats`` reports it, the
admission limits fall back to this replica's share), not an error. So a connection here has
bounded socket timeouts and no retries (the caller's next round is the retry), every call is
bounded by a deadline, and every failure (a timeout, a refused or reset socket, an error
reply, a URL that does not parse) becomes one exception, :class:`RedisUnavailable`, whose
``reason`` is short enough for ``/stats`` and the shared block.

Imported only by the modules that are themselves imported only when ``LB_CLUSTER_REDIS_URL``
is set, so a host without a cluster never loads redis-py.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import redis.asyncio as redis_asyncio
from redis.backoff import NoBackoff
from redis.exceptions import RedisError
from redis.retry import Retry

TIMEOUT_REASON = "redis: timeout"


class RedisUnavailable(Exception):
    """Redis could not be used; ``reason`` is short enough for ``/stats``."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def failure_reason(exc: BaseException, width: int) -> str:
    """``redis: <the first line of the error>``, at most ``width`` characters of it."""
    if isinstance(exc, TimeoutError):
        return TIMEOUT_REASON
    text = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    return f"redis: {text[:width]}"


class RedisConnection:
    """A client for ``url`` whose connect and every read or write time out after
    ``timeout`` seconds, and which never retries by itself.

    Subclasses hold the keys and say what each round trip does; they send every round trip
    through :meth:`_run` and bound each exchange (one or more round trips) with
    :meth:`deadline`. ``reason_width``: how much of an error's text a reason keeps.
    """

    def __init__(self, url: str, timeout: float, *, reason_width: int) -> None:
        self.timeout = timeout
        self._reason_width = reason_width
        self._client = redis_asyncio.Redis.from_url(
            url,
            socket_timeout=timeout,
            socket_connect_timeout=timeout,
            retry=Retry(NoBackoff(), 0),  # the caller's next round is the retry
            health_check_interval=0,
        )

    @asynccontextmanager
    async def deadline(self) -> AsyncIterator[None]:
        """Bound what runs inside by the timeout as a whole (a round trip's socket timeouts
        do not bound several round trips, nor the work between them); running out of time
        raises :class:`RedisUnavailable` too, like every other failure."""
        try:
            async with asyncio.timeout(self.timeout):
                yield
        except TimeoutError as exc:
            raise RedisUnavailable(TIMEOUT_REASON) from exc

    async def aclose(self) -> None:
        await self._client.aclose()

    async def _run(self, awaitable: Any) -> Any:
        """Await one round trip; any way it fails becomes :class:`RedisUnavailable`."""
        try:
            return await awaitable
        except (RedisError, OSError, TimeoutError, ValueError) as exc:
            raise RedisUnavailable(failure_reason(exc, self._reason_width)) from exc
