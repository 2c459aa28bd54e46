"""Tracing's ``/stats`` section and ``/metrics`` family (only while spans are exported)."""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING

from service.features import Entry, Figures, family_of_section

if TYPE_CHECKING:
    from prometheus_client.core import Metric

ORDER = 60  # after admission's (the last published before it)


DROPPED = (
    "lb_tracing_spans_dropped_total",
    "Spans not exported: the queue was full, or their export failed (this host).",
    [],
)


def families(report: Figures) -> Iterable[Metric]:
    """``lb_tracing_spans_dropped_total``: spans a full queue or a failed export cost."""
    return family_of_section(
        report, "tracing", "counter", DROPPED, lambda t: ([], t["spans_dropped"])
    )


def section(url: str, sampler: str, exported: int, dropped: int) -> Entry:
    return {
        "endpoint": url,
        "sampler": sampler,
        "spans_exported": exported,
        "spans_dropped": dropped,
    }
