"""Configuration reload: a new ``LB_CONFIG`` file taken while serving, all or nothing.

- ``region``: the text every worker runs, its generation and the outcomes of reloading, in
  a bounded region of the shared block;
- ``signals``: SIGHUP, in the main process or any worker, asks for a reload;
- ``source``: reading the file, and watching its content (``LB_CONFIG_WATCH``);
- ``leader``: the one worker (a lease) that validates a file with the start-up loader and
  publishes it; ``changes``: what must wait for a restart; ``targets``: the file's targets in
  the slot table (``service.pools.slots``), so a target that stays keeps its state;
- ``worker``: each worker follows the published generation; ``apply``: swaps its objects.

``startup(app)`` reserves the region and a lease on the block's plan when the app is built,
pins the start-up text for the worker processes and takes SIGHUP in the main process, and in
every worker applies the published generation before serving and follows it while serving.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from sanic import Sanic

from service import handover
from service.reload import exposition, signals
from service.reload.region import ConfigLayout, ConfigRegion
from service.reload.worker import ConfigReload
from service.settings import CONFIG_ENV, DEFAULTS_FILE, STARTUP_FILE_ENV
from service.sharedmem import LEASE_WIDTH, Lease, SharedBlock

__all__ = ["ConfigRegion", "ConfigReload", "startup"]


@dataclass(eq=False)
class _Running:
    """This worker's reloading, once it is built (before the server starts)."""

    reload: ConfigReload | None = None
    remove_handler: Callable[[], None] | None = None


def startup(app: Sanic) -> None:
    lb = app.ctx.lb
    layout = ConfigLayout(lb.plan)  # reserved at build time, like every feature's
    lease_region = lb.plan.shared(LEASE_WIDTH)
    running = _Running()
    lb.show.section("config", lambda: running.reload.describe() if running.reload else None)
    lb.show.metric_families(exposition.families, order=exposition.ORDER)

    @app.main_process_start
    async def take_sighup(app: Sanic) -> None:
        source = app.ctx.lb.settings.source
        if source is not None:
            # Workers load their settings when they import the app. A replacement for a dead
            # worker must lay out the shared block as this process did, whatever the file
            # says by then: it starts from this text, then applies the published generation.
            # A file, whatever its size (an environment variable holds at most 128 KiB).
            text = handover.put(handover.create(app), "startup.toml", source.text.encode())
            os.environ[STARTUP_FILE_ENV] = str(text)
        block = SharedBlock(app.shared_ctx.block, app.ctx.lb.plan)
        signals.in_main_process(ConfigRegion(block, layout))

    @app.main_process_stop
    async def remove_the_start_up_text(app: Sanic) -> None:
        os.environ.pop(STARTUP_FILE_ENV, None)
        handover.remove(app)

    @app.before_server_start
    async def follow_the_published_configuration(app: Sanic) -> None:
        lb = app.ctx.lb
        block = lb.row.block
        region = ConfigRegion(block, layout)
        source = lb.settings.source
        path = Path(source.path if source else os.environ.get(CONFIG_ENV) or DEFAULTS_FILE)
        running.reload = ConfigReload(
            app, region, Lease(block, lease_region), lb.slots, path, os.environ
        )
        running.reload.start()
        running.remove_handler = signals.in_worker(asyncio.get_running_loop(), region)

    @app.after_server_start
    async def start_following(app: Sanic) -> None:
        if running.reload is not None:
            running.reload.following.start()

    @app.before_server_stop
    async def stop_following(app: Sanic) -> None:
        if running.remove_handler is not None:
            running.remove_handler()
            running.remove_handler = None
        if running.reload is not None:
            await running.reload.following.stop()
