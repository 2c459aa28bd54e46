"""Coarse log-scale latency bins, for histograms that must stay small because there are many.

The window's own histogram (``service.metrics.store``) has 8 % bins over 212 slots; a
histogram kept for every 5 s of the last 15 minutes, or for every target of every pool,
would multiply that. These bins are 25 % wide from 100 µs to a minute (60 counts), so a
percentile read from them is within about 12 % of the true value: enough for a chart or a
per-target table, at a quarter of the memory.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

COARSE_MIN_S = 1e-4
COARSE_RATIO = 1.25
COARSE_BINS = math.ceil(math.log(60.0 / COARSE_MIN_S) / math.log(COARSE_RATIO))
_LOG_RATIO = math.log(COARSE_RATIO)


def coarse_bin(seconds: float) -> int:
    """The bin of a duration; everything under 100 µs in the first, over a minute in the last."""
    if seconds <= COARSE_MIN_S:
        return 0
    return min(int(math.log(seconds / COARSE_MIN_S) / _LOG_RATIO), COARSE_BINS - 1)


def coarse_quantile_ms(counts: Sequence[float], q: float) -> float:
    """The q-quantile (0 < q <= 1) of a coarse histogram, in ms (its bin's geometric middle);
    0 if the histogram is empty."""
    total = sum(counts)
    if total <= 0:
        return 0.0
    rank = max(1.0, math.ceil(q * total))
    seen, index = 0.0, 0
    for index, count in enumerate(counts):  # noqa: B007 (the bin where the rank is reached)
        seen += count
        if seen >= rank:
            break
    return round(COARSE_MIN_S * COARSE_RATIO ** (index + 0.5) * 1000.0, 3)
