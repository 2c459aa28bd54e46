"""The one shared-memory facility: a block with shared fields, per-worker rows and time rings.

``startup(app)`` allocates the block in the main process (or, where ``main_process_start``
never runs — ``--single-process``, sanic-testing — in the worker itself) and claims this
worker's row onto the worker context. The layout (``app.ctx.lb.plan``) was reserved by the
features when the app was built, so nothing here depends on their listeners.
"""

from __future__ import annotations

import multiprocessing

from sanic import Sanic

from service.sharedmem.block import (
    MAX_WORKER_ROWS,
    Plan,
    Region,
    SharedBlock,
    WorkerRow,
    process_alive,
)
from service.sharedmem.lease import LEASE_WIDTH, Lease
from service.sharedmem.locking import held
from service.sharedmem.rings import TimeRing

__all__ = [
    "LEASE_WIDTH",
    "MAX_WORKER_ROWS",
    "Lease",
    "Plan",
    "Region",
    "SharedBlock",
    "TimeRing",
    "WorkerRow",
    "held",
    "process_alive",
    "startup",
]


def startup(app: Sanic) -> None:
    @app.main_process_start
    async def allocate_block(app: Sanic) -> None:
        app.shared_ctx.block = app.ctx.lb.plan.allocate()
        app.shared_ctx.block_lock = multiprocessing.Lock()

    @app.before_server_start
    async def claim_row(app: Sanic) -> None:
        lb = app.ctx.lb
        raw = getattr(app.shared_ctx, "block", None)
        lock = getattr(app.shared_ctx, "block_lock", None)
        if raw is None:
            raw, lock = lb.plan.allocate(), None
        lb.row = SharedBlock(raw, lb.plan).claim(lock=lock)
