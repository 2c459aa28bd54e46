"""TLS' ``/metrics`` family, from ``load-balancer.tls``."""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client.core import GaugeMetricFamily, Metric

from service.features import Figures

ORDER = 10  # first after the core families (as published)


def families(report: Figures) -> Iterator[Metric]:
    """``lb_tls_certificate_expiry_seconds`` of the served certificate."""
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
