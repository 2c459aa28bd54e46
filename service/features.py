"""What a feature is to the composition root, and what it hands it.

A feature is a package with ``startup(app)``; ``service.factory.FEATURES`` lists them, in
the order their listeners run. In ``startup`` a feature builds its own objects and registers
with :class:`Show` (``app.ctx.lb.show``) what it shows: its ``/stats`` section, its
``/metrics`` families, its status-page panel. It may also define, at module level,
``check_lines(settings)`` (``python -m service --check``) and ``RESTART_ONLY`` (which of its
settings a reload keeps as the host started with them: ``service.reload.changes``). The
root and the report then know no feature by name (sanic-ext's bootstrap loops over its
extensions the same way, each rendering its own part).

This module imports no feature: ``service.context`` and ``service.stats`` read these types,
and every feature imports them.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, NamedTuple, Protocol

from sanic import Request

from service.metrics import Snapshot
from service.settings import Settings

if TYPE_CHECKING:
    from prometheus_client.core import Metric

Entry = dict[str, Any]
# a ``/stats`` section: a table, or a list of them (``load-balancer.routes``)
Section = Entry | list[Entry]


class Figures(Protocol):
    """What ``/metrics`` families read: one report (``service.stats.Report``)."""

    @property
    def pools(self) -> dict[str, Entry]: ...

    @property
    def sections(self) -> dict[str, Section]: ...


Families = Callable[[Figures], Iterable["Metric"]]


def family_of_section(
    report: Figures,
    name: str,
    kind: str,
    metric: tuple[str, str, list[str]],
    sample: Callable[[Any], tuple[list[str], float]],
) -> Iterable[Metric]:
    """The one family a feature shows in ``/metrics``, made from its ``/stats`` section
    ``name`` (none when the section is absent: the feature is not configured): a ``kind``
    (``"gauge"`` or ``"counter"``) family with ``metric`` (its name, help and label names)
    and one sample, ``sample(section)`` (the labels' values and the value).
    prometheus_client is imported here, at the first scrape: a worker that is never
    scraped never loads it."""
    section = report.sections.get(name)
    if section is None:
        return ()
    from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

    make = {"gauge": GaugeMetricFamily, "counter": CounterMetricFamily}[kind]
    family = make(*metric[:2], labels=metric[2])
    family.add_metric(*sample(section))
    return (family,)


# (history) -> this host's figures merged with other replicas', and the section saying how
ReadFigures = Callable[[bool], Awaitable[tuple[Snapshot, Entry]]]


class CheckLines(NamedTuple):
    """A feature's part of ``--check``: a line about how it listens (after ``listen:``),
    and lines after the pools. ``order`` places the latter among the features' (the
    output's order is the one people read and diff)."""

    listen: tuple[str, ...] = ()
    lines: tuple[str, ...] = ()
    order: int = 0


class RestartOnly(NamedTuple):
    """Settings a reload keeps as the host started with them: whole ``sections`` of the
    model, single ``fields`` (section, key), and ``keep(new, started)`` for the rest (it
    returns ``new`` with its values as started, and the variables that differed)."""

    sections: tuple[str, ...] = ()
    fields: tuple[tuple[str, str], ...] = ()
    keep: Callable[[Settings, Settings], tuple[Settings, list[str]]] | None = None


class Admitted(Protocol):
    """A request let in: the fields it answers with; :meth:`release` at its end."""

    fields: dict[str, str]
    raw_fields: list[tuple[bytes, bytes]]

    def release(self) -> None: ...


class Gatekeeper(Protocol):
    """Admission control on a request's path (``service.admission.Gate``)."""

    def admit(self, request: Request, route: str) -> Admitted | None: ...

    def replan(self, settings: Settings) -> None: ...


class Traces(Protocol):
    """W3C Trace Context and span export (``service.tracing.Tracing``): each proxied
    request's trace, begun once at its start."""

    def begin(self, request: Request) -> Any: ...


class Lookups(Protocol):
    """This worker's DNS lookups (``service.discovery.Discovery``)."""

    def start(self) -> None: ...

    def cancel(self) -> None: ...


@dataclass(eq=False)
class Show:
    """What the features show, in the order they registered (``FEATURES``' order)."""

    sections: list[tuple[str, Callable[[], Section | None]]] = field(default_factory=list)
    pool_details: list[Callable[[dict[str, Entry]], None]] = field(default_factory=list)
    families: list[tuple[int, Families]] = field(default_factory=list)
    panels: list[tuple[str, Callable[[], Any]]] = field(default_factory=list)
    figures: tuple[str, ReadFigures] | None = None

    def section(self, key: str, read: Callable[[], Section | None]) -> None:
        """``load-balancer.<key>`` of ``/stats`` (left out while ``read()`` is None)."""
        self.sections.append((key, read))

    def pool_detail(self, add: Callable[[dict[str, Entry]], None]) -> None:
        """``add(pools)`` completes ``load-balancer.upstreams``' entries."""
        self.pool_details.append(add)

    def metric_families(self, families: Families, *, order: int) -> None:
        """``/metrics`` families, written after the core ones by ``order`` (the exposition's
        order is published: dashboards and diffs read it)."""
        self.families.append((order, families))

    def panel(self, key: str, read: Callable[[], Any]) -> None:
        """``<key>`` of the status page's document (``/lb-status/data``)."""
        self.panels.append((key, read))

    def figures_from(self, key: str, read: ReadFigures) -> None:
        """The host's figures are read by ``read`` (with other replicas'), while the
        services are asked; its section is ``load-balancer.<key>``, first of the sections."""
        self.figures = (key, read)

    def ordered_families(self) -> list[Families]:
        return [families for _, families in sorted(self.families, key=lambda f: f[0])]
