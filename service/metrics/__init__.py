"""What is measured and where it is kept: the sample and its classification (``sample``),
the store protocol (``protocol``) and the snapshot (``store``), the shared-memory backend
(``shared``).

``startup(app)`` opens this worker's store on its row of the shared block.
"""

from __future__ import annotations

from sanic import Sanic

from service.metrics.figures import HostFigures, merge, to_snapshot
from service.metrics.sample import LOCAL, RequestSample, is_real_api_traffic
from service.metrics.shared import MetricsLayout, SharedMemoryStore
from service.metrics.history import History
from service.metrics.protocol import MetricsStore
from service.metrics.store import WINDOW_S, Snapshot
from service.settings import Settings
from service.sharedmem import Plan


__all__ = [
    "LOCAL",
    "WINDOW_S",
    "History",
    "HostFigures",
    "MetricsLayout",
    "MetricsStore",
    "RequestSample",
    "SharedMemoryStore",
    "Snapshot",
    "is_real_api_traffic",
    "merge",
    "reserve",
    "startup",
    "to_snapshot",
]


# Routes a reload may add while serving (as many as the slot table has spare pools).
SPARE_ROUTES = 8


def reserve(plan: Plan, settings: Settings) -> MetricsLayout:
    """The store's space in the shared block: counters for every route, "local", and
    :data:`SPARE_ROUTES` more for upstreams a reload adds."""
    routes = (*(u.name for u in settings.upstreams), LOCAL)
    return MetricsLayout(plan, routes, spare=SPARE_ROUTES)


def startup(app: Sanic) -> None:
    @app.before_server_start
    async def open_store(app: Sanic) -> None:
        lb = app.ctx.lb
        lb.metrics = SharedMemoryStore(lb.row, lb.metrics_layout)
