"""The upstream part of ``GET /stats``: every service's own ``/stats``, asked in parallel.

Each call has a hard deadline (``stats.timeout``, 2 s by default) and a size cap, so one
hanging or misbehaving service delays nobody and hides nobody. Within a worker, concurrent
``/stats`` requests share one fan-out in flight, so fifty open dashboards polling together
cost the upstreams about what one does. A finished fan-out is not reused (an operator who
just restarted a service expects the truth on the next call) unless ``stats.cache_ttl``
is set above 0.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

import httpx
import orjson

from service.errors import (
    NoTargets,
    UpstreamBadPayload,
    UpstreamError,
    UpstreamTimeout,
    classify,
)
from service.settings import StatsSettings, Upstream

Entry = dict[str, Any]


class StatsAggregator:
    """``await collect()`` -> ``{stats_key: entry}`` for every aggregated upstream.

    ``url_for(name)`` gives the base URL to ask: for a pool, the target its balancer picks.
    """

    def __init__(
        self,
        upstreams: tuple[Upstream, ...],
        client_for: Callable[[str], httpx.AsyncClient],
        url_for: Callable[[str], str],
        settings: StatsSettings,
        clock: Callable[[], float] = time.monotonic,
        contacted: Callable[[str, str, bool], None] | None = None,
    ) -> None:
        """``contacted(name, url, ok)`` hears whether each asked target answered at all
        (a bad payload is an answer; refused, timed out or broken is not)."""
        self._upstreams = tuple(u for u in upstreams if u.stats_key)
        self._client_for = client_for
        self._url_for = url_for
        self._settings = settings
        self._clock = clock
        self._contacted = contacted
        self._in_flight: asyncio.Task[dict[str, Entry]] | None = None
        self._cached: dict[str, Entry] | None = None
        self._cached_at = float("-inf")
        self.fan_outs = 0  # how many times the upstreams were actually asked

    async def collect(self) -> dict[str, Entry]:
        if self._cached is not None and self._clock() - self._cached_at < self._settings.cache_ttl:
            return self._cached
        if self._in_flight is None:
            self._in_flight = asyncio.create_task(self._fan_out())
            self._in_flight.add_done_callback(self._finished)
        return await asyncio.shield(self._in_flight)

    def _finished(self, task: asyncio.Task[dict[str, Entry]]) -> None:
        self._in_flight = None
        if not task.cancelled() and task.exception() is None:
            self._cached, self._cached_at = task.result(), self._clock()

    async def _fan_out(self) -> dict[str, Entry]:
        self.fan_outs += 1
        entries = await asyncio.gather(*(self._entry(u) for u in self._upstreams))
        return {u.stats_key: entry for u, entry in zip(self._upstreams, entries, strict=True)}  # type: ignore[misc]

    async def _entry(self, upstream: Upstream) -> Entry:
        try:
            url = self._url_for(upstream.name)
        except NoTargets:  # its names resolve to nothing: nobody to ask
            return {"service_status": "offline", "error": "no_targets"}
        try:
            async with asyncio.timeout(self._settings.timeout):
                payload = await self._fetch(upstream, url)
        except TimeoutError:
            error: UpstreamError = UpstreamTimeout(upstream.name, "timeout")
        except UpstreamError as exc:
            error = exc
        else:
            self._seen(upstream.name, url, True)
            return unwrap(payload)
        self._seen(upstream.name, url, isinstance(error, UpstreamBadPayload))
        return {"service_status": "offline", "error": error.reason}

    def _seen(self, name: str, url: str, ok: bool) -> None:
        if self._contacted is not None:
            self._contacted(name, url, ok)

    async def _fetch(self, upstream: Upstream, url: str) -> dict[str, Any]:
        client = self._client_for(upstream.name)
        try:
            async with client.stream("GET", url + "/stats") as response:
                if not 200 <= response.status_code < 300:
                    raise UpstreamBadPayload(upstream.name, f"HTTP {response.status_code}")
                body = await self._read_capped(upstream, response)
        except httpx.HTTPError as exc:
            raise classify(upstream.name, exc) from exc
        try:
            payload = orjson.loads(body)
        except orjson.JSONDecodeError:
            raise UpstreamBadPayload(upstream.name, "invalid JSON") from None
        if not isinstance(payload, dict):
            raise UpstreamBadPayload(upstream.name, "not a JSON object")
        return payload

    async def _read_capped(self, upstream: Upstream, response: httpx.Response) -> bytes:
        cap = self._settings.max_payload
        if int(response.headers.get("content-length") or 0) > cap:
            raise UpstreamBadPayload(upstream.name, f"too large (over {cap} bytes)")
        body = bytearray()
        async for chunk in response.aiter_bytes():
            body += chunk
            if len(body) > cap:
                raise UpstreamBadPayload(upstream.name, f"too large (over {cap} bytes)")
        return bytes(body)


def unwrap(payload: dict[str, Any]) -> Entry:
    """``{"<name>": {...}}`` -> ``{...}``; any other object is the entry itself."""
    if len(payload) == 1:
        (value,) = payload.values()
        if isinstance(value, dict):
            return value
    return payload
