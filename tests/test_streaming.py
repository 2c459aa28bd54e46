"""Bodies stream in both directions with bounded memory, and SSE arrives event by event."""

from __future__ import annotations

import hashlib
import threading
import time
from collections.abc import Iterator

import pytest

from tests.support import LoadBalancer

SIZE = 256 * 1024 * 1024
RSS_GROWTH_LIMIT_KIB = 50 * 1024
BLOCK = bytes(range(256)) * 256  # 64 KiB, what the test upstream sends for ?bytes=N


class RssWatch:
    """Samples the proxy's RSS every 20 ms in a thread; ``peak`` is the highest seen."""

    def __init__(self, lb: LoadBalancer) -> None:
        self.lb = lb
        self.baseline = lb.rss_kib()
        self.peak = self.baseline
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(0.02):
            self.peak = max(self.peak, self.lb.rss_kib())

    def __enter__(self) -> RssWatch:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, self.lb.rss_kib())

    @property
    def growth_kib(self) -> int:
        return self.peak - self.baseline


@pytest.fixture(scope="module")
def warm_lb(lb: LoadBalancer) -> LoadBalancer:
    """The module's LB after a few small streams, so the baseline includes warm-up allocations."""
    for _ in range(3):
        lb.client.post("/api/warm", content=iter([b"x" * 65536] * 16))
        with lb.client.stream("GET", "/api/warm?bytes=4194304") as response:
            for _ in response.iter_raw():
                pass
    return lb


def test_upload_256_mib_streams(warm_lb: LoadBalancer) -> None:
    digest = hashlib.sha256()
    chunk = hashlib.sha256(b"seed").digest() * 2048  # 64 KiB of non-trivial bytes

    def generate() -> Iterator[bytes]:
        sent = 0
        while sent < SIZE:
            piece = chunk[: min(len(chunk), SIZE - sent)]
            digest.update(piece)
            sent += len(piece)
            yield piece

    with RssWatch(warm_lb) as watch:
        response = warm_lb.client.post("/api/upload", content=generate(), timeout=60)
    assert response.status_code == 200
    echo = response.json()
    assert echo["body_size"] == SIZE
    assert echo["body_sha256"] == digest.hexdigest()
    assert watch.growth_kib < RSS_GROWTH_LIMIT_KIB, f"RSS grew by {watch.growth_kib} KiB"


def test_download_256_mib_streams(warm_lb: LoadBalancer) -> None:
    expected = hashlib.sha256()
    for _ in range(SIZE // len(BLOCK)):
        expected.update(BLOCK)
    digest = hashlib.sha256()
    size = 0
    with RssWatch(warm_lb) as watch:
        with warm_lb.client.stream("GET", f"/blog/big?bytes={SIZE}", timeout=60) as response:
            assert response.status_code == 200
            assert response.headers["content-length"] == str(SIZE)
            for piece in response.iter_raw():
                digest.update(piece)
                size += len(piece)
    assert size == SIZE
    assert digest.hexdigest() == expected.hexdigest()
    assert watch.growth_kib < RSS_GROWTH_LIMIT_KIB, f"RSS grew by {watch.growth_kib} KiB"


def test_sse_arrives_event_by_event(lb: LoadBalancer) -> None:
    started = time.monotonic()
    arrivals: list[tuple[float, str]] = []
    with lb.client.stream("GET", "/api/events?sse=5&interval=0.5") as response:
        assert response.status_code == 200
        assert response.headers["content-type"] == "text/event-stream"
        for line in response.iter_lines():
            if line.startswith("data: "):
                arrivals.append((time.monotonic() - started, line))
    assert [line.split()[1:3] for _, line in arrivals] == [["event", str(i)] for i in range(5)]
    times = [t for t, _ in arrivals]
    # Sent 0.5 s apart: the first must arrive long before the last was even produced (2 s
    # later), and most arrive apart (a stall of the busy machine may bunch two of them).
    assert times[-1] - times[0] >= 1.0, times
    gaps = [b - a for a, b in zip(times, times[1:])]
    assert sum(gap > 0.25 for gap in gaps) >= 3, gaps
