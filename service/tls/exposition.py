"""TLS' ``/metrics`` family, from ``load-balancer.tls``."""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

from service.features import Figures

if TYPE_CHECKING:
    from prometheus_client.core import Metric

ORDER = 10  # first after the core families (as published)


def families(report: Figures) -> Iterator[Metric]:
    """``lb_tls_certificate_expiry_seconds`` of the served certificate."""
    from prometheus_client.core import GaugeMetricFamily  # at the first scrape

    tls = report.sections.get("tls")
    if tls is None:
        return
    expiry = GaugeMetricFamily(
        "lb_tls_certificate_expiry_seconds",
        "Seconds until the served TLS certificate expires (negative: expired).",
        labels=["subject"],
    )
    expiry.add_metric([tls["subject"]], tls["expires_in_s"])
    yield expiry
