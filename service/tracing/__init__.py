"""Tracing: W3C Trace Context on every proxied request, and spans exported over OTLP.

- ``context``: ``traceparent``/``tracestate`` read strictly, ids made (always on);
- ``sampling``: the standard samplers (``OTEL_TRACES_SAMPLER``);
- ``trace``: one request's trace (``Tracing.begin``), its ``traceparent`` per attempt and,
  when recorded, its SERVER and CLIENT spans;
- ``export`` and ``encoding``: the bounded queue, the batches and their OTLP/HTTP encoding
  (opentelemetry-proto). Imported only when an endpoint is configured: a default
  configuration loads neither them nor protobuf;
- ``exposition``: ``load-balancer.tracing`` of ``/stats`` and
  ``lb_tracing_spans_dropped_total``, while spans are exported.

``startup(app)`` puts this worker's :class:`Tracing` on ``app.ctx.lb.tracing``; the proxy
asks it for each request's trace (``blueprints/proxy.py``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from sanic import Sanic

from service.features import CheckLines, Entry, RestartOnly
from service.settings import Settings
from service.sharedmem import Plan, Region
from service.tracing import exposition
from service.tracing.sampling import sampler
from service.tracing.trace import RequestTrace, Tracing, error_type_of

if TYPE_CHECKING:
    from service.tracing.export import Exporter

__all__ = ["RESTART_ONLY", "RequestTrace", "Tracing", "check_lines", "error_type_of", "startup"]

# the exporter, its queue and its counters' place in the shared block are built at start-up
RESTART_ONLY = RestartOnly(sections=("tracing",))


def reserve(plan: Plan, settings: Settings) -> tuple[Region, Region] | None:
    """This feature's counters in every worker row, and the host's export state (failing
    or not), when spans are exported."""
    if not settings.tracing.export_url:
        return None
    from service.tracing.export import WIDTH

    return plan.per_worker(WIDTH), plan.shared(1)


def check_lines(settings: Settings) -> CheckLines:
    """A line when spans are exported (trace context alone has nothing to configure)."""
    tracing = settings.tracing
    if not tracing.export_url:
        return CheckLines()
    ratio = f" {tracing.sampler_arg:g}" if tracing.sampler.endswith("traceidratio") else ""
    line = (
        f"tracing: spans of {tracing.service_name!r} exported to {tracing.export_url} "
        f"(OTLP/HTTP protobuf), sampler {tracing.sampler}{ratio}"
    )
    return CheckLines(lines=(line,), order=30)


def startup(app: Sanic) -> None:
    lb = app.ctx.lb
    tracing = lb.settings.tracing
    decide = sampler(tracing.sampler, tracing.sampler_arg)
    lb.tracing = Tracing(decide)
    regions = reserve(lb.plan, lb.settings)
    if regions is None:
        return
    region, state = regions
    running: list[Exporter] = []

    def read() -> Entry:
        block = lb.row.block
        rows = block.claimed_rows()
        exported = sum(block.mem[at + region.at] for at in rows)
        dropped = sum(block.mem[at + region.at + 1] for at in rows)
        return exposition.section(tracing.export_url, tracing.sampler, int(exported), int(dropped))

    lb.show.section("tracing", read)
    lb.show.metric_families(exposition.families, order=exposition.ORDER)

    @app.before_server_start
    async def build_exporter(app: Sanic) -> None:
        from service.tracing.export import Counters, Exporter

        exporter = Exporter(tracing, Counters(lb.row, region, state))
        running.append(exporter)
        lb.tracing = Tracing(decide, exporter)

    @app.after_server_start
    async def start_exporter(app: Sanic) -> None:
        for exporter in running:
            exporter.start()

    @app.after_server_stop
    async def stop_exporter(app: Sanic) -> None:
        while running:
            await running.pop().close()
