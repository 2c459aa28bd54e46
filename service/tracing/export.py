"""Spans leave in batches, off the request path, through a bounded queue (OTLP/HTTP).

Imported only when export is configured. :meth:`Exporter.add` is all a request does: one
append to a list, or, when :data:`MAX_QUEUE` spans wait already, one count of a dropped
span. A background task (:class:`~service.background.Background`) takes up to
:data:`BATCH` spans every :data:`INTERVAL` seconds, or at once when a batch is full,
encodes them (``service.tracing.encoding``, a few spans at a time between yields to the
event loop) and posts them with its own httpx client. A collector that is down, slow or
answers an error costs the batch (counted as dropped), never a request: nothing waits on
it but this task, and while it waits the queue fills and drops. The first failed export is
logged, and the first success after failures; nothing in between.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os

import httpx

from service.background import Background
from service.settings import TracingSettings
from service.sharedmem import Region, WorkerRow
from service.tracing.encoding import Encoder
from service.tracing.trace import Span

log = logging.getLogger("service.tracing")

MAX_QUEUE = 2048  # the SDKs' OTEL_BSP_MAX_QUEUE_SIZE default
BATCH = 512  # OTEL_BSP_MAX_EXPORT_BATCH_SIZE
INTERVAL = 1.0  # seconds; the SDKs' OTEL_BSP_SCHEDULE_DELAY is 5
TIMEOUT = 10.0  # seconds for one export (OTEL_EXPORTER_OTLP_TIMEOUT)
SLICE = 32  # spans encoded between two yields to the event loop
EXPORTED, DROPPED = range(2)  # this worker's counters in its row of the shared block
WIDTH = 2


class Counters:
    """This worker's span counters, in its row (``/stats`` and ``/metrics`` sum the rows),
    and the host's one word saying whether exporting fails now (``state``, shared)."""

    def __init__(self, row: WorkerRow, region: Region, state: Region) -> None:
        self._mem = row.block.mem
        self._at = row.at + region.at
        self._state = state.at

    def add(self, which: int, count: int) -> None:
        self._mem[self._at + which] += count

    def news(self, failing: bool) -> bool:
        """Record whether exporting fails; True when that is news for the host, so the
        failure and the recovery are logged once per host, not once per worker. (Two
        workers changing it in the same microsecond may both log: a read and a write
        with no await between them, across processes.)"""
        was = self._mem[self._state] != 0.0
        if was == failing:
            return False
        self._mem[self._state] = 1.0 if failing else 0.0
        return True


def resource_of(settings: TracingSettings) -> list[tuple[str, str | int]]:
    """The resource's attributes: OTEL_RESOURCE_ATTRIBUTES, with OTEL_SERVICE_NAME's
    ``service.name`` over any given there (the specification's precedence), and the
    worker's ``process.pid`` (each worker exports its own spans)."""
    pairs: dict[str, str | int] = dict(settings.resource_attributes)
    pairs["service.name"] = settings.service_name
    pairs["process.pid"] = os.getpid()
    return sorted(pairs.items())


class Exporter:
    """This worker's span queue and its export task."""

    def __init__(
        self,
        settings: TracingSettings,
        counters: Counters,
        *,
        interval: float = INTERVAL,
        timeout: float = TIMEOUT,
    ) -> None:
        self._url = settings.export_url
        self._headers = {**dict(settings.headers), "content-type": "application/x-protobuf"}
        self._counters = counters
        self._encoder = Encoder(resource_of(settings))
        self._interval = interval
        self._client = httpx.AsyncClient(trust_env=False, timeout=timeout)
        self._queue: list[Span] = []
        self._full = asyncio.Event()
        self._task = Background(self._run)

    def add(self, span: Span) -> None:
        queue = self._queue
        if len(queue) >= MAX_QUEUE:
            self._counters.add(DROPPED, 1)
            return
        queue.append(span)
        if len(queue) == BATCH:
            self._full.set()

    def start(self) -> None:
        self._task.start()

    async def close(self) -> None:
        """Stop the task; what is queued gets one last, short try."""
        await self._task.stop()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.flush(), 2.0)
        await self._client.aclose()

    async def flush(self) -> None:
        """Export what is queued, batch after batch, until the queue is empty or an
        export fails (the rest waits for the next turn)."""
        while self._queue:
            batch, self._queue = self._queue[:BATCH], self._queue[BATCH:]
            if not await self._export(batch):
                return

    async def _run(self) -> None:
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._full.wait(), self._interval)
            self._full.clear()
            await self.flush()

    async def _export(self, batch: list[Span]) -> bool:
        encoded = []
        for start in range(0, len(batch), SLICE):
            encoded += map(self._encoder.span, batch[start : start + SLICE])
            await asyncio.sleep(0)
        body = self._encoder.request(encoded)
        try:
            response = await self._client.post(self._url, content=body, headers=self._headers)
            await response.aclose()
            failure = "" if 200 <= response.status_code < 300 else f"HTTP {response.status_code}"
        except httpx.HTTPError as exc:
            failure = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
        if failure:
            self._counters.add(DROPPED, len(batch))
            if self._counters.news(failing=True):
                log.warning(
                    "span export to %s failed (%s): spans are dropped (and counted, "
                    "lb_tracing_spans_dropped_total) until it works again", self._url, failure,
                )  # fmt: skip
            return False
        self._counters.add(EXPORTED, len(batch))
        if self._counters.news(failing=False):
            log.warning("span export to %s works again", self._url)
        return True
