"""What one replica publishes: its identity and its cumulative figures, as one document."""

from __future__ import annotations

import socket
import time
from dataclasses import dataclass
from typing import Any

from service.metrics import HostFigures


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
    def parse(cls, replica: str, data: dict[str, Any]) -> Published:
        """Raises ``ValueError``, ``TypeError``, ``KeyError`` or ``AttributeError`` if
        malformed."""
        return cls(
            id=replica,
            host=str(data.get("host", "")),
            published_at=float(data["published_at"]),
            figures=HostFigures.from_wire(data["figures"]),
        )
