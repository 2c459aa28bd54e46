"""The load balancer with its metrics recording switched off, for benchmarks only.

``sanic bench._norecord:app`` with ``BENCH_NORECORD=<mode>`` in the environment:

- ``store`` (default): ``app.ctx.metrics`` is wrapped, in a ``before_server_start`` listener
  registered after the app's own (so it runs after ``metrics_setup.open_store`` has claimed
  the worker's row), by :class:`NoRecordStore`, whose ``record`` does nothing. Every other
  attribute is the real store's, so ``/stats`` still answers; its
  ``total_requests`` stays 0, which is how ``bench/record_cost.py`` checks the swap worked.
- ``sample``: the same, and the proxy handler no longer builds the ``RequestSample`` either
  (``service.blueprints.proxy.RequestSample.of`` returns None): all of the handler's recording
  step is off except the two ``perf_counter`` calls and the ``Outcome`` it shares with the pool.
- ``times<N>`` (e.g. ``times11``): the opposite, recording amplified: each request builds its
  sample and records it N times (into the real store, so ``/stats`` counts N per request).
  The extra cost over the service, divided by N - 1, is the cost of one recording step,
  measured inside a real worker under load rather than in a micro-benchmark (though repeated
  calls find the caches warmer than the first one does).

Everything else (routing, pools, transport, the proxy blueprint) is the service's.
"""

from __future__ import annotations

import os
from typing import Any

from service.blueprints import proxy
from service.metrics import MetricsStore, RequestSample

MODES = ("store", "sample", "times<N>")


class NoRecordStore:
    """A metrics store that drops every request sample and delegates the rest.

    Everything but ``record`` goes to the real store through ``__getattr__``, so a method the
    store gains later is delegated too (naming them one by one is how this file once broke).
    """

    def __init__(self, real: MetricsStore) -> None:
        self._real = real

    def __getattr__(self, name: str) -> Any:
        return getattr(self._real, name)

    def record(self, sample: RequestSample | None) -> None:
        pass


class AmplifiedStore(NoRecordStore):
    """Records every sample ``times`` times."""

    def __init__(self, real: MetricsStore, times: int) -> None:
        super().__init__(real)
        self._times = range(times)

    def record(self, sample: RequestSample | None) -> None:
        record = self._real.record
        for _ in self._times:
            record(sample)  # type: ignore[arg-type]


class _AmplifiedSample:
    """Stands in for ``RequestSample`` in the proxy blueprint: builds the sample N times."""

    times = range(1)

    @classmethod
    def of(cls, *args: Any, **kwargs: Any) -> RequestSample:
        for _ in cls.times:
            sample = RequestSample.of(*args, **kwargs)
        return sample


class _NoSample:
    """Stands in for ``RequestSample`` in the proxy blueprint: building one is skipped."""

    @staticmethod
    def of(*args: object, **kwargs: object) -> None:
        return None


mode = os.environ.get("BENCH_NORECORD", "store")
times = int(mode[5:]) if mode.startswith("times") and mode[5:].isdigit() else 0
if mode not in ("store", "sample") and times < 1:
    raise SystemExit(f"bench._norecord: BENCH_NORECORD={mode!r}, expected one of {MODES}")
if mode == "sample":
    proxy.RequestSample = _NoSample  # type: ignore[misc,assignment]
if times:
    _AmplifiedSample.times = range(times)
    proxy.RequestSample = _AmplifiedSample  # type: ignore[misc,assignment]

from service.app import app


@app.before_server_start
async def _swap_store(app: Any) -> None:
    store = app.ctx.lb.metrics
    app.ctx.lb.metrics = AmplifiedStore(store, times) if times else NoRecordStore(store)


__all__ = ["app"]
