"""The OpenTelemetry samplers by their standard names (``OTEL_TRACES_SAMPLER``).

The decision is made once per request, for its SERVER span, and its children follow it:
it sets the sampled flag sent upstream and, with export on, whether the request's spans are
recorded. ``parentbased_*`` follow a valid incoming ``traceparent``'s flag (so a sampled
parent, ``-01``, is always recorded and an unsampled one, ``-00``, never) and apply their
root sampler to new traces; the others ignore the parent. ``traceidratio`` keeps a trace
when the lower 64 bits of its id fall under ``ratio * 2**64``, as the SDKs do, so every
hop that uses it with the same ratio makes the same decision.
"""

from __future__ import annotations

from collections.abc import Callable

Decide = Callable[[str, "bool | None"], bool]  # (trace id, the parent's flag or None) -> sampled

_MAX = 2**64 - 1


def sampler(name: str, ratio: float) -> Decide:
    """The decision function of sampler ``name`` (one of ``model.SAMPLERS``)."""
    bound = round(ratio * _MAX)

    def by_ratio(trace_id: str) -> bool:
        return int(trace_id[16:], 16) < bound

    root: Callable[[str], bool]
    if name.endswith("always_on"):
        root = _yes
    elif name.endswith("always_off"):
        root = _no
    else:
        root = by_ratio
    if not name.startswith("parentbased_"):
        return lambda trace_id, parent: root(trace_id)

    def parent_based(trace_id: str, parent: bool | None) -> bool:
        return root(trace_id) if parent is None else parent

    return parent_based


def _yes(trace_id: str) -> bool:
    return True


def _no(trace_id: str) -> bool:
    return False
