"""The one place where an upstream failure becomes a status and a reason.

::

    UpstreamError              502  any failure talking to an upstream
    ├── UpstreamRefused        502  no connection could be made ("refused")
    ├── UpstreamTimeout        504  connect or read took longer than allowed ("timeout")
    │   └── UpstreamConnectTimeout  no connection at all: nothing was sent
    ├── UpstreamBroken         502  the connection broke after it was made ("broken")
    └── UpstreamBadPayload     502  a /stats answer we cannot use (HTTP status, invalid JSON,
                                    not a JSON object, too large)

The proxy answers ``status`` with :meth:`UpstreamError.body`; ``/stats`` shows ``reason``.
"""

from __future__ import annotations

import httpx


class UpstreamError(Exception):
    status: int = 502
    error: str = "bad gateway"

    def __init__(self, upstream: str, reason: str) -> None:
        super().__init__(f"{upstream}: {reason}")
        self.upstream = upstream
        self.reason = reason
        self.target: str | None = None  # the pool member that was tried, once known

    def body(self) -> dict[str, str]:
        body = {"error": self.error, "upstream": self.upstream, "detail": self.reason}
        if self.target is not None:
            body["target"] = self.target
        return body


class UpstreamRefused(UpstreamError):
    error = "upstream unreachable"


class UpstreamTimeout(UpstreamError):
    status = 504
    error = "upstream timeout"


class UpstreamConnectTimeout(UpstreamTimeout):
    """No connection within the connect timeout: like a refusal, nothing was sent."""


class UpstreamBroken(UpstreamError):
    error = "upstream connection broken"


class UpstreamBadPayload(UpstreamError):
    error = "bad upstream payload"


def from_httpx(upstream: str, exc: httpx.HTTPError) -> UpstreamError:
    """Classify an httpx exception raised while talking to ``upstream``."""
    detail = str(exc) or type(exc).__name__
    if isinstance(exc, httpx.ConnectTimeout):
        return UpstreamConnectTimeout(upstream, f"timeout: connect timed out ({detail})")
    if isinstance(exc, httpx.TimeoutException):
        return UpstreamTimeout(upstream, "timeout: no answer within the read timeout")
    if isinstance(exc, httpx.ConnectError):
        return UpstreamRefused(upstream, f"refused: {detail}")
    return UpstreamBroken(upstream, f"broken: {detail}")
