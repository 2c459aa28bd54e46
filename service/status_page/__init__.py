"""The status page's content: its static assets and the JSON document it polls.

The page (``static/``: HTML, one script, one stylesheet, an icon; no library, no CDN, the
charts are hand-drawn SVG) is served by ``service.blueprints.status`` and reads
:func:`status_document` from ``/lb-status/data`` every 2 s. The document is built from the
same :class:`~service.stats.Report` as ``/stats``, so the page's numbers are ``/stats``'
numbers, plus the history the charts draw.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, NamedTuple

from service.stats import Report

STATIC = Path(__file__).resolve().parent / "static"


class Asset(NamedTuple):
    body: bytes
    content_type: str


_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".svg": "image/svg+xml",
}


def load_assets() -> dict[str, Asset]:
    """Every file of ``static/`` by name, read once when the blueprint is built."""
    return {
        path.name: Asset(path.read_bytes(), _TYPES[path.suffix])
        for path in sorted(STATIC.iterdir())
        if path.suffix in _TYPES
    }


def status_document(
    report: Report, generated_at: float, panels: Iterable[tuple[str, Callable[[], Any]]] = ()
) -> dict[str, Any]:
    """What the page draws: ``/stats``' load-balancer entry (figures and pools), each
    service's reachability, and the history (``report`` must have been built with it);
    ``panels``: the features' (``service.features.Show.panel``: admission's chart of limited
    and overloaded requests)."""
    snapshot = report.snapshot
    document = {
        "generated_at": generated_at,
        "load-balancer": report.load_balancer_entry(),
        "responses_by_route": snapshot.by_route,
        "services": {
            key: {
                "online": entry.get("service_status") == "online"
                or entry.get("status") == "healthy",
                "error": entry.get("error"),
            }
            for key, entry in report.services.items()
        },
        "history": snapshot.history.document() if snapshot.history is not None else None,
    }
    document.update((key, read()) for key, read in panels)
    return document
