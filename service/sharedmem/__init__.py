"""The one shared-memory facility: a block with shared fields, per-worker rows and time rings,
and the primitives every feature keeps its shared state with: :class:`SharedLock` (the only
lock in the block; a dead holder's is taken back), :class:`Seqlock` (writers under a lock,
readers free) and :class:`Texts` (text in the block).

``startup(app)`` allocates the block in the main process (or, where ``main_process_start``
never runs — ``--single-process``, sanic-testing — in the worker itself) and claims this
worker's row onto the worker context. The layout (``app.ctx.lb.plan``) was reserved by the
features when the app was built, so nothing here depends on their listeners.
"""

from __future__ import annotations

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
from service.sharedmem.lock import LockTimeout, SharedLock
from service.sharedmem.rings import RingCursor, TimeRing
from service.sharedmem.seqlock import Seqlock, Turn
from service.sharedmem.text import Texts, cut

__all__ = [
    "LEASE_WIDTH",
    "MAX_WORKER_ROWS",
    "Lease",
    "LockTimeout",
    "Plan",
    "Region",
    "RingCursor",
    "Seqlock",
    "SharedBlock",
    "SharedLock",
    "Texts",
    "TimeRing",
    "Turn",
    "WorkerRow",
    "cut",
    "process_alive",
    "startup",
]


def startup(app: Sanic) -> None:
    @app.main_process_start
    async def allocate_block(app: Sanic) -> None:
        app.shared_ctx.block = app.ctx.lb.plan.allocate()  # its locks and secret with it

    @app.before_server_start
    async def claim_row(app: Sanic) -> None:
        lb = app.ctx.lb
        raw = getattr(app.shared_ctx, "block", None)
        if raw is None:
            raw = lb.plan.allocate()
        lb.row = SharedBlock(raw, lb.plan).claim()
