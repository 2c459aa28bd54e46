"""Distinct clients on one machine, and paced floods from them.

A client binds a loopback source address of its own (``127.0.0.2``, ``127.0.0.3``...; the
whole of 127.0.0.0/8 is the loopback interface on Linux), so the load balancer sees distinct
clients without any forwarded header. :func:`flood` sends from one client at a given rate
over several connections at once (so its requests land on every worker), each request on
its schedule, and returns when each was sent and how it was answered.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

import httpx


def client_from(base_url: str, source: str, timeout: float = 10.0) -> httpx.Client:
    """An httpx client whose connections leave from ``source`` (a loopback address)."""
    return httpx.Client(
        base_url=base_url,
        transport=httpx.HTTPTransport(local_address=source),
        timeout=timeout,
        trust_env=False,
    )


@dataclass
class Flood:
    """What one flood saw: ``(sent at, status)`` of every request, in sending order."""

    answers: list[tuple[float, int]] = field(default_factory=list)
    errors: int = 0

    def count(self, status: int) -> int:
        return sum(1 for _, s in self.answers if s == status)

    @property
    def span_s(self) -> float:
        """From the first request sent to the last."""
        times = [t for t, _ in self.answers]
        return max(times) - min(times) if times else 0.0

    @property
    def rate(self) -> float:
        return len(self.answers) / self.span_s if self.span_s else 0.0


def flood(
    base_url: str,
    source: str,
    path: str | Callable[[int], str],
    *,
    rate: float,
    seconds: float,
    connections: int = 4,
    headers: Mapping[str, str] | Callable[[int], Mapping[str, str]] | None = None,
) -> Flood:
    """``rate`` requests a second from ``source`` for ``seconds``, over ``connections``
    connections (each paced at its share); ``path`` and ``headers`` may depend on the
    request's number. Requests that cannot keep up are sent late, never dropped."""
    result = Flood()
    lock = threading.Lock()
    total = int(rate * seconds)
    # Clients are made first (each builds an SSL context: tens of ms), then all start at once.
    clients = [client_from(base_url, source) for _ in range(connections)]
    start = time.monotonic() + 0.05

    def send(lane: int) -> None:
        with clients[lane] as client:
            for n in range(lane, total, connections):
                delay = start + n / rate - time.monotonic()
                if delay > 0:
                    time.sleep(delay)
                target = path(n) if callable(path) else path
                extra = headers(n) if callable(headers) else headers
                sent = time.monotonic()
                try:
                    status = client.get(target, headers=extra).status_code
                except httpx.HTTPError:
                    with lock:
                        result.errors += 1
                    continue
                with lock:
                    result.answers.append((sent, status))

    threads = [threading.Thread(target=send, args=(lane,)) for lane in range(connections)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    result.answers.sort()
    return result


def well_behaved(base_url: str, source: str, path: str, *, rate: float, seconds: float) -> Flood:
    """One connection, never faster than ``rate``: each request at least ``1 / rate`` after
    the previous one was sent, however late the client itself runs."""
    result = Flood()
    with client_from(base_url, source) as client:
        end = time.monotonic() + seconds
        while (sent := time.monotonic()) < end:
            try:
                result.answers.append((sent, client.get(path).status_code))
            except httpx.HTTPError:
                result.errors += 1
            time.sleep(max(0.0, sent + 1 / rate - time.monotonic()))
    return result


def in_parallel(*jobs: Callable[[], Flood]) -> list[Flood]:
    """Run floods at the same time; their results in order."""
    results: list[Flood | None] = [None] * len(jobs)

    def run(index: int, job: Callable[[], Flood]) -> None:
        results[index] = job()

    threads = [threading.Thread(target=run, args=pair) for pair in enumerate(jobs)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return [r for r in results if r is not None]
