"""A task an object owns: started with it, cancelled with it.

Every concern that works in the background (the pools' slot sync and health checks, DNS
lookups, the access log's flushes, the reload loop, admission's housekeeping, the cluster's
publisher, the certificate watch) holds its task in a :class:`Background`, built with the
object and ended by it, as aiohttp's ``cleanup_ctx`` keeps a resource's setup and teardown
together. Start-up starts the objects the features built once the server serves; a reload
starts the ones it builds and cancels the ones it replaces; stopping cancels what is left.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, Protocol


class Running(Protocol):
    """An object with background work: ``start()`` once the worker serves, ``cancel()`` when
    it is replaced or the worker stops."""

    def start(self) -> None: ...

    def cancel(self) -> None: ...


class Background:
    """One task: ``run()`` started by :meth:`start`, cancelled by :meth:`cancel` or
    :meth:`stop`. Starting twice is starting once; a task that is not running cancels as
    nothing."""

    __slots__ = ("_run", "_task")

    def __init__(self, run: Callable[[], Coroutine[Any, Any, None]]) -> None:
        self._run = run
        self._task: asyncio.Task[None] | None = None

    @classmethod
    def every(
        cls, seconds: float | Callable[[], float], turn: Callable[[], Awaitable[None] | None]
    ) -> Background:
        """Forever: ``turn()`` (awaited when it returns an awaitable), then ``seconds`` of
        pause. A turn that must survive a failure catches it itself: what it may meet, and
        how loudly, is its own business."""

        async def loop() -> None:
            while True:
                done = turn()
                if done is not None:
                    await done
                await asyncio.sleep(seconds() if callable(seconds) else seconds)

        return cls(loop)

    @property
    def running(self) -> bool:
        return self._task is not None and not self._task.done()

    def start(self) -> None:
        if not self.running:
            self._task = asyncio.create_task(self._run())

    def cancel(self) -> None:
        """End the task now, without waiting for it (a reload swaps between requests)."""
        if self._task is not None:
            self._task.cancel()

    async def stop(self) -> None:
        """End the task and wait until it has (at the worker's stop)."""
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
