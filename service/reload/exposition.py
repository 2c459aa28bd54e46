"""The reload's ``/metrics`` families, from ``load-balancer.config``."""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

from service.features import Figures

if TYPE_CHECKING:
    from prometheus_client.core import Metric

ORDER = 30  # after the targets, before discovery (as published)


def families(report: Figures) -> Iterator[Metric]:
    """``lb_config_*``: the generation this worker runs and the host's reloads."""
    from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily  # at the first scrape

    config = report.sections.get("config")
    if config is None:
        return
    yield GaugeMetricFamily(
        "lb_config_generation",
        "Generation of the configuration this worker runs (1 at start, +1 per reload "
        "that changed it).",
        config["generation"],
    )
    reloads = CounterMetricFamily(
        "lb_config_reloads",
        "Reloads of the configuration file on this host, by result: applied, unchanged "
        "(the file was already running), failed (nothing changed).",
        labels=["result"],
    )
    for result, count in config["reloads"].items():
        reloads.add_metric([result], count)
    yield reloads
    yield GaugeMetricFamily(
        "lb_config_last_reload_successful",
        "0 while the last reload failed (see /stats load-balancer.config.last_error).",
        0.0 if config["last_error"] else 1.0,
    )
