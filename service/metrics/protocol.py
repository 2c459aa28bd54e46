"""The narrow seam between whoever records figures and whoever reads them.

Callers see three things: a :class:`~service.metrics.sample.RequestSample` (one finished
request), the :class:`MetricsStore` protocol (``record``, heartbeat calls, ``snapshot``) and
the :class:`~service.metrics.store.Snapshot` it returns. The shared-memory store
(``service.metrics.shared``) is the one backend today; another can replace it behind the
same protocol without touching a caller.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from service.metrics.figures import HostFigures
from service.metrics.sample import RequestSample
from service.metrics.store import Snapshot


class MetricsStore(Protocol):
    """Where measurements go; one instance per worker, all of them seeing the same totals.

    ``record`` and the heartbeat calls are O(1) and never block on another worker;
    ``snapshot`` reads everything every worker recorded, and with ``history=True`` also
    the last 15 minutes (:class:`~service.metrics.history.History`).
    """

    def record(self, sample: RequestSample) -> None: ...

    def heartbeat(self) -> None: ...

    def socket_opened(self) -> None: ...

    def socket_closed(self) -> None: ...

    def snapshot(self, *, history: bool = False) -> Snapshot: ...

    def name_routes(self, names: Sequence[str]) -> None:
        """Routes a reload added (in an order every worker shares): counted from now on."""
        ...

    def figures(self) -> HostFigures:
        """The additive raw figures the snapshot is computed from, for other hosts to merge
        (``service.metrics.figures``)."""
        ...
