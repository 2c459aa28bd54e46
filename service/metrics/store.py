"""What a reader of the figures gets: the :class:`Snapshot`, and the histogram's bins.

The store's protocol (``service.metrics.protocol``) returns it; ``service.metrics.figures``
computes it from the raw figures of one host or several.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from service.metrics.history import History

WINDOW_S = 10.0

# Latency histogram: log-scale bins from 10 µs up to 2 minutes, each 8 % wider than the
# last, so the geometric middle of a bin is within 4 % of any value in it.
HIST_MIN_S = 1e-5
HIST_RATIO = 1.08
HIST_BINS = math.ceil(math.log(120.0 / HIST_MIN_S) / math.log(HIST_RATIO))
_LOG_RATIO = math.log(HIST_RATIO)

STATUS_CLASSES = ("1xx", "2xx", "3xx", "4xx", "5xx")


def histogram_bin(seconds: float) -> int:
    if seconds <= HIST_MIN_S:
        return 0
    return min(int(math.log(seconds / HIST_MIN_S) / _LOG_RATIO), HIST_BINS - 1)


def bin_value(index: int) -> float:
    """The representative duration of a bin, in seconds (its geometric middle)."""
    return HIST_MIN_S * HIST_RATIO ** (index + 0.5)


@dataclass(frozen=True, slots=True)
class Snapshot:
    """Every figure of the whole service (all workers) at one instant."""

    total_requests: int
    window_count: int  # real API requests completed in the last WINDOW_S
    window_duration_s: float  # their summed duration
    window_histogram: tuple[int, ...]  # their latency histogram (HIST_BINS bins)
    real_count: int  # real API requests since start
    real_duration_s: float
    real_success: int  # ... answered below 400
    status_classes: dict[str, int]  # every proxied request by status class
    proxy_502: int
    proxy_504: int
    by_route: dict[str, dict[str, int]]  # route -> status class -> count
    lifetime_buckets: tuple[tuple[float, int], ...]  # (upper bound s, cumulative count)
    lifetime_duration_s: float  # summed duration of every proxied request
    ws_connections: int
    heartbeat_age_s: float | None  # seconds since the last heartbeat activity
    workers: int
    uptime_s: float
    requests_by_worker: dict[str, int]  # worker pid -> proxied requests it recorded
    # the last 15 minutes in 5 s buckets, when the snapshot was asked for it (status page)
    history: History | None = None
    # route -> its lifetime duration histogram (upper bound s, cumulative count), and its sum
    route_buckets: dict[str, tuple[tuple[float, int], ...]] = field(default_factory=dict)
    route_duration_s: dict[str, float] = field(default_factory=dict)

    def percentile_ms(self, q: float) -> float:
        """The q-quantile (0 < q <= 1) of the window from the merged histogram; 0 if empty."""
        total = sum(self.window_histogram)
        if total == 0:
            return 0.0
        rank = max(1, math.ceil(q * total))
        seen = 0
        for index, count in enumerate(self.window_histogram):
            seen += count
            if seen >= rank:
                return bin_value(index) * 1000.0
        return bin_value(HIST_BINS - 1) * 1000.0
