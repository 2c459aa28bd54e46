"""The Redis side of sharing limits between replicas: one stream and one hash, one round
trip per exchange. Imported only when ``LB_CLUSTER_REDIS_URL`` is set and a rate limit is
configured.

- ``<name>:admission``: a stream; each entry is one replica's publication (its admissions
  per key since its previous one, and its cumulative counts per limit). Trimmed to about
  :data:`STREAM_LENGTH` entries, so Redis memory is bounded whatever the traffic.
- ``<name>:admission-replicas``: a hash, replica id -> when it last exchanged (wall clock):
  how many replicas share the limits, and so each one's share when Redis goes away.
"""

from __future__ import annotations

from service.redisconn import RedisConnection

STREAM_LENGTH = 10_000
READ_COUNT = 1_000  # entries read per exchange at most (the rest come next time)
KEY_TTL_S = 24 * 3600


class SyncStore(RedisConnection):
    """One worker's connection to the admission keys; failures become
    :class:`~service.redisconn.RedisUnavailable`. The next exchange is the retry."""

    def __init__(self, url: str, name: str, timeout: float) -> None:
        # a reason short enough for the shared block's REASON_BYTES
        super().__init__(url, timeout, reason_width=100)
        self.stream = f"{name}:admission"
        self.members = f"{name}:admission-replicas"

    async def latest_id(self) -> bytes:
        """The stream's newest entry id: where a new reader starts (older entries are
        consumption already past)."""
        newest = await self._run(self._client.xrevrange(self.stream, count=1))
        return newest[0][0] if newest else b"0-0"

    async def exchange(
        self,
        replica: str,
        payload: bytes | None,
        after: bytes,
        now_wall: float,
        forget: list[str],
    ) -> tuple[list[tuple[bytes, dict[bytes, bytes]]], dict[bytes, bytes]]:
        """Publish ``payload`` (if any), say this replica is alive, read every entry after
        ``after`` and every replica's last exchange; ``forget`` replicas gone for good."""
        async with self._client.pipeline(transaction=False) as pipe:
            if payload is not None:
                pipe.xadd(
                    self.stream, {b"r": replica.encode(), b"p": payload},
                    maxlen=STREAM_LENGTH, approximate=True,
                )  # fmt: skip
            pipe.hset(self.members, replica, repr(now_wall))
            if forget:
                pipe.hdel(self.members, *forget)
            pipe.expire(self.stream, KEY_TTL_S)
            pipe.expire(self.members, KEY_TTL_S)
            pipe.xread({self.stream: after}, count=READ_COUNT)
            pipe.hgetall(self.members)
            results = await self._run(pipe.execute())
        read, members = results[-2], results[-1]
        entries: list[tuple[bytes, dict[bytes, bytes]]] = []
        for _stream, items in read or []:
            entries.extend(items)
        return entries, members

    async def forget(self) -> None:
        """Delete this cluster's admission keys (tests and benchmarks only)."""
        await self._run(self._client.delete(self.stream, self.members))
