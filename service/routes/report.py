"""``load-balancer.routes`` of ``/stats`` (and the status page's routes table): every route in
the order it is tried, its ``match``, and its backends with their weights and requests."""

from __future__ import annotations

from typing import Any

from service.proxying import Router
from service.routes.counters import RouteCounters

Entry = dict[str, Any]


def describe(router: Router, counters: RouteCounters) -> list[Entry]:
    """The router this worker runs, with the host's counts (``requests``: since the host
    started, all workers; ``None`` for a pair the counters had no room for)."""
    counts = counters.requests()
    entries: list[Entry] = []
    by_route: dict[int, Entry] = {}
    for (route, backend), requests in zip(router.pairs, counts, strict=True):
        entry = by_route.get(id(route))
        if entry is None:
            entry = {
                "prefix": route.prefix,
                "match": route.match.document() if route.match is not None else None,
                "redirect_bare": route.redirect_bare,
                "requests": 0,
                "backends": [],
            }
            by_route[id(route)] = entry
            entries.append(entry)
        entry["backends"].append(
            {"upstream": backend.upstream, "weight": backend.weight, "requests": requests}
        )
        entry["requests"] += requests or 0
    return entries
