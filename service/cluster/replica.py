"""What one replica publishes: its identity and its cumulative figures, as one document."""

from __future__ import annotations

import math
import socket
import time
from dataclasses import dataclass
from typing import Any

from service.metrics import HostFigures

# How far ahead of ours another replica's clock may be: a document published later than
# this would count as live for ever (and is never reaped), so it is skipped.
CLOCK_SKEW_S = 30.0


def replica_id(started_wall: float) -> str:
    """One id per running host (all its workers share it, so a lease handover does not make
    a second replica): the host name and when its shared block was made, to the µs."""
    return f"{socket.gethostname()}-{started_wall:.6f}"


def document(replica: str, started_wall: float, figures: HostFigures) -> dict[str, Any]:
    return {
        "id": replica,
        "host": socket.gethostname(),
        "started_at": started_wall,
        "published_at": time.time(),
        "figures": figures.to_wire(),
    }


@dataclass(frozen=True, slots=True)
class Published:
    """Another replica's document, as read back."""

    id: str
    host: str
    published_at: float
    figures: HostFigures

    @classmethod
    def parse(cls, replica: str, data: Any, now_wall: float | None = None) -> Published:
        """Raises ``ValueError``, ``TypeError``, ``KeyError`` or ``AttributeError`` if
        malformed (the message says why)."""
        if not isinstance(data, dict):
            raise TypeError(f"the document is a {type(data).__name__}, not an object")
        published_at = data["published_at"]
        if type(published_at) not in (int, float) or not math.isfinite(published_at):
            raise TypeError(f"published_at is {published_at!r}, not a time")
        now_wall = time.time() if now_wall is None else now_wall
        if published_at > now_wall + CLOCK_SKEW_S:
            raise ValueError(f"published_at is {published_at - now_wall:.0f} s in the future")
        figures = data["figures"]
        if not isinstance(figures, dict):
            raise TypeError(f"figures is a {type(figures).__name__}, not an object")
        return cls(
            id=replica,
            host=str(data.get("host", "")),
            published_at=float(published_at),
            figures=HostFigures.from_wire(figures),
        )
