"""Tracing's ``/stats`` section and ``/metrics`` family (only while spans are exported)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

from service.features import Entry, Figures

if TYPE_CHECKING:
    from prometheus_client.core import Metric

ORDER = 60  # after admission's (the last published before it)


def families(report: Figures) -> Iterator[Metric]:
    """``lb_tracing_spans_dropped_total``: spans a full queue or a failed export cost."""
    from prometheus_client.core import CounterMetricFamily  # at the first scrape

    tracing = report.sections.get("tracing")
    if tracing is None:
        return
    dropped = CounterMetricFamily(
        "lb_tracing_spans_dropped_total",
        "Spans not exported: the queue was full, or their export failed (this host).",
    )
    dropped.add_metric([], tracing["spans_dropped"])
    yield dropped


def section(url: str, sampler: str, exported: int, dropped: int) -> Entry:
    return {
        "endpoint": url,
        "sampler": sampler,
        "spans_exported": exported,
        "spans_dropped": dropped,
    }
