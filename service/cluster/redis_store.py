"""The cluster's keys in Redis and the three things done with them, each one round trip.

Imported only when ``LB_CLUSTER_REDIS_URL`` is set, so a host without a cluster never loads
redis-py. Layout, under the prefix ``LB_CLUSTER_NAME``:

- ``<name>:replicas``: a hash, one field per replica (its id), holding that replica's
  document: its cumulative figures and when it published them. A replica overwrites its own
  field with cumulative values, so a retried or repeated write never double-counts, and a
  Redis that lost its data is whole again after every live replica's next publication.
- ``<name>:retired``: a hash, one field per replica that stopped publishing more than
  ``retention`` seconds ago, holding only its lifetime counters (its time buckets are gone
  from the window anyway). The reaper moves a silent replica there in one Lua script, so no
  reader sees it twice or not at all. A replica that was only cut off and publishes again
  deletes its retired field in the same round trip as it writes its own, so it is never
  counted twice either.

Both keys expire a day after the last publication, so a cluster that is gone for good leaves
nothing behind.
"""

from __future__ import annotations

from typing import Any

import orjson

from service.redisconn import RedisConnection

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
    local published = ok and type(doc) == 'table' and tonumber(doc['published_at'])
    if not published then
      redis.call('HDEL', KEYS[1], id)
    elseif published < cutoff then
      local figures = doc['figures']
      if type(figures) == 'table' and type(figures['counters']) == 'table' then
        redis.call('HSET', KEYS[2], id, cjson.encode(figures['counters']))
      end
      redis.call('HDEL', KEYS[1], id)
      reaped = reaped + 1
    end
  end
end
return reaped
"""


def _by_id(fields: dict[bytes, bytes]) -> dict[str, bytes]:
    return {k.decode("utf-8", "replace"): v for k, v in fields.items()}


class RedisStore(RedisConnection):
    """One worker's connection to the cluster's keys. Every call is bounded by the client's
    socket timeouts and by the caller's deadline; failures become
    :class:`~service.redisconn.RedisUnavailable`. The next publication is the retry.
    """

    def __init__(self, url: str, name: str, timeout: float) -> None:
        super().__init__(url, timeout, reason_width=160)
        self.replicas_key = f"{name}:replicas"
        self.retired_key = f"{name}:retired"
        self.history_key = f"{name}:history"  # each replica's 15-minute history (status page)
        self._reap = self._client.register_script(_REAP)

    async def publish(
        self, replica: str, document: dict[str, Any], history: list[Any] | None = None
    ) -> None:
        """Overwrite this replica's field, and its history's when given (one round trip)."""
        async with self._client.pipeline(transaction=False) as pipe:
            pipe.hset(self.replicas_key, replica, orjson.dumps(document))
            if history is not None:
                pipe.hset(self.history_key, replica, orjson.dumps(history))
                pipe.expire(self.history_key, KEY_TTL_S)
            pipe.hdel(self.retired_key, replica)  # reaped while cut off: live again
            pipe.expire(self.replicas_key, KEY_TTL_S)
            pipe.expire(self.retired_key, KEY_TTL_S)
            await self._run(pipe.execute())

    async def read(
        self, *, history: bool = False
    ) -> tuple[dict[str, bytes], dict[str, bytes], dict[str, bytes]]:
        """Every replica's document and every retired replica's counters, atomically (one
        round trip); with ``history``, every replica's history too (else an empty dict)."""
        async with self._client.pipeline(transaction=True) as pipe:
            pipe.hgetall(self.replicas_key)
            pipe.hgetall(self.retired_key)
            if history:
                pipe.hgetall(self.history_key)
            replicas, retired, *histories = await self._run(pipe.execute())
        return _by_id(replicas), _by_id(retired), _by_id(histories[0]) if histories else {}

    async def reap(self, replica: str, now_wall: float, retention: float) -> int:
        """Move replicas silent for ``retention`` seconds to the retired hash."""
        keys = [self.replicas_key, self.retired_key]
        return int(await self._run(self._reap(keys=keys, args=[now_wall, retention, replica])))

    async def forget(self) -> None:
        """Delete every key of this cluster (tests and benchmarks only)."""
        await self._run(self._client.delete(self.replicas_key, self.retired_key, self.history_key))
