"""The one Redis connection the cluster figures and the admission sync share: every way a
round trip fails, and running out of the deadline, become one exception with a short reason,
and the connection never waits past its timeout."""

from __future__ import annotations

import asyncio
import time

from service.redisconn import RedisConnection, RedisUnavailable
from tests.support import free_port
from tests.support.redis import RedisServer


async def _failure(conn: RedisConnection, awaitable: object) -> str:
    try:
        async with conn.deadline():
            await conn._run(awaitable)
    except RedisUnavailable as exc:
        return exc.reason
    finally:
        await conn.aclose()
    raise AssertionError("no failure")


def test_a_refused_connection_is_a_short_reason() -> None:
    conn = RedisConnection(f"redis://127.0.0.1:{free_port()}/0", 1.0, reason_width=12)
    reason = asyncio.run(_failure(conn, conn._client.ping()))
    assert reason.startswith("redis: ") and len(reason) <= len("redis: ") + 12, reason


def test_an_error_reply_is_a_reason_not_an_exception_of_redis_py() -> None:
    server = RedisServer()
    try:
        conn = RedisConnection(server.url, 1.0, reason_width=100)
        reason = asyncio.run(_failure(conn, conn._client.execute_command("NO-SUCH-COMMAND")))
        assert reason.startswith("redis: ") and "unknown command" in reason.lower(), reason
    finally:
        server.close()


def test_a_slow_exchange_ends_at_the_deadline() -> None:
    conn = RedisConnection(f"redis://127.0.0.1:{free_port()}/0", 0.2, reason_width=100)
    started = time.monotonic()
    reason = asyncio.run(_failure(conn, asyncio.sleep(5)))
    assert reason == "redis: timeout"
    assert time.monotonic() - started < 2.0
