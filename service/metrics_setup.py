"""Wiring of the shared metrics store into Sanic's process model.

``main_process_start`` allocates the block once, for every worker to share; each worker then
claims its row in ``before_server_start``. Where ``main_process_start`` never runs
(``--single-process``, sanic-testing) the worker allocates a block of its own there.
"""

from __future__ import annotations

import multiprocessing

from sanic import Sanic

from service.shared_store import Layout, SharedMemoryStore, allocate

# Rows for worker processes; a restarted worker reuses its predecessor's row.
MAX_WORKER_ROWS = 64


def layout_for(app: Sanic) -> Layout:
    routes = (*(u.name for u in app.ctx.settings.upstreams), "local")
    return Layout(routes=routes, rows=MAX_WORKER_ROWS)


def register(app: Sanic) -> None:
    @app.main_process_start
    async def allocate_shared_block(app: Sanic) -> None:
        app.shared_ctx.metrics_block = allocate(layout_for(app))
        app.shared_ctx.metrics_lock = multiprocessing.Lock()

    @app.before_server_start
    async def open_store(app: Sanic) -> None:
        layout = layout_for(app)
        block = getattr(app.shared_ctx, "metrics_block", None)
        lock = getattr(app.shared_ctx, "metrics_lock", None)
        if block is None:
            block, lock = allocate(layout), None
        app.ctx.metrics = SharedMemoryStore(block, layout, claim_lock=lock)
