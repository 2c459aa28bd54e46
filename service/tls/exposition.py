"""TLS' ``/metrics`` family, from ``load-balancer.tls``."""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING

from service.features import Figures, family_of_section

if TYPE_CHECKING:
    from prometheus_client.core import Metric

ORDER = 10  # first after the core families (as published)


EXPIRY = (
    "lb_tls_certificate_expiry_seconds",
    "Seconds until the served TLS certificate expires (negative: expired).",
    ["subject"],
)


def families(report: Figures) -> Iterable[Metric]:
    """``lb_tls_certificate_expiry_seconds`` of the served certificate."""
    return family_of_section(
        report,
        "tls",
        "gauge",
        EXPIRY,
        lambda tls: ([tls["subject"]], tls["expires_in_s"]),
    )
