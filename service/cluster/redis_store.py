"""The cluster's keys in Redis and the three things done with them, each one round trip.

Imported only when ``LB_CLUSTER_REDIS_URL`` is set, so a host without a cluster never loads
redis-py. Layout, under the prefix ``LB_CLUSTER_NAME``:

- ``<name>:replicas``: a hash, one field per replica (its id), holding that replica's
  document: its cumulative figures and when it published them. A replica overwrites its own
  field with cumulative values, so a retried or repeated write never double-counts, and a
  Redis that lost its data is whole again after every live replica's next publication.
- ``<name>:retired``: a hash of lifetime counters of replicas that stopped publishing more
  than ``retention`` seconds ago. The reaper folds a silent replica's counters in and deletes
  its field in one Lua script, so the totals never count it twice or lose it.

Both keys expire a day after the last publication, so a cluster that is gone for good leaves
nothing behind.
"""

from __future__ import annotations

from typing import Any

import orjson
import redis.asyncio as redis_asyncio
from redis.backoff import NoBackoff
from redis.exceptions import RedisError
from redis.retry import Retry

KEY_TTL_S = 24 * 3600

# KEYS: replicas, retired. ARGV: now (wall clock), retention (s), the caller's own id.
_REAP = """
local fields = redis.call('HGETALL', KEYS[1])
local cutoff = tonumber(ARGV[1]) - tonumber(ARGV[2])
local reaped = 0
for i = 1, #fields, 2 do
  local id = fields[i]
  if id ~= ARGV[3] then
    local ok, doc = pcall(cjson.decode, fields[i + 1])
    local stale = ok and type(doc) == 'table' and tonumber(doc['published_at'])
    if not ok or not stale then
      redis.call('HDEL', KEYS[1], id)
    elseif stale < cutoff then
      local figures = doc['figures']
      if type(figures) == 'table' and type(figures['counters']) == 'table' then
        for name, value in pairs(figures['counters']) do
          if tonumber(value) and tonumber(value) ~= 0 then
            redis.call('HINCRBYFLOAT', KEYS[2], name, tostring(value))
          end
        end
      end
      redis.call('HDEL', KEYS[1], id)
      reaped = reaped + 1
    end
  end
end
return reaped
"""


class ClusterUnavailable(Exception):
    """Redis could not be used; ``reason`` is short enough for ``/stats``."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def _reason(exc: BaseException) -> str:
    if isinstance(exc, TimeoutError):
        return "redis: timeout"
    text = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    return f"redis: {text[:160]}"


class RedisStore:
    """One worker's connection to the cluster's keys. Every call is bounded by the client's
    socket timeouts and by the caller's deadline; failures become :class:`ClusterUnavailable`.
    """

    def __init__(self, url: str, name: str, timeout: float) -> None:
        self.replicas_key = f"{name}:replicas"
        self.retired_key = f"{name}:retired"
        self._client = redis_asyncio.Redis.from_url(
            url,
            socket_timeout=timeout,
            socket_connect_timeout=timeout,
            retry=Retry(NoBackoff(), 0),  # the next publication is the retry
            health_check_interval=0,
        )
        self._reap = self._client.register_script(_REAP)

    async def publish(self, replica: str, document: dict[str, Any]) -> None:
        """Overwrite this replica's field (one round trip)."""
        async with self._client.pipeline(transaction=False) as pipe:
            pipe.hset(self.replicas_key, replica, orjson.dumps(document))
            pipe.expire(self.replicas_key, KEY_TTL_S)
            pipe.expire(self.retired_key, KEY_TTL_S)
            await self._run(pipe.execute())

    async def read(self) -> tuple[dict[str, bytes], dict[str, float]]:
        """Every replica's document and the retired counters, atomically (one round trip)."""
        async with self._client.pipeline(transaction=True) as pipe:
            pipe.hgetall(self.replicas_key)
            pipe.hgetall(self.retired_key)
            replicas, retired = await self._run(pipe.execute())
        try:
            counters = {k.decode("utf-8", "replace"): float(v) for k, v in retired.items()}
        except ValueError:
            raise ClusterUnavailable(f"redis: {self.retired_key} is malformed") from None
        return {k.decode("utf-8", "replace"): v for k, v in replicas.items()}, counters

    async def reap(self, replica: str, now_wall: float, retention: float) -> int:
        """Fold replicas silent for ``retention`` seconds into the retired counters."""
        keys = [self.replicas_key, self.retired_key]
        return int(await self._run(self._reap(keys=keys, args=[now_wall, retention, replica])))

    async def forget(self) -> None:
        """Delete every key of this cluster (tests and benchmarks only)."""
        await self._run(self._client.delete(self.replicas_key, self.retired_key))

    async def aclose(self) -> None:
        await self._client.aclose()

    @staticmethod
    async def _run(awaitable: Any) -> Any:
        try:
            return await awaitable
        except (RedisError, OSError, TimeoutError, ValueError) as exc:
            raise ClusterUnavailable(_reason(exc)) from exc
