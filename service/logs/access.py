"""One line per request (the access log), and one line per 502/504 the proxy made itself.

:meth:`AccessLog.write` is called once per request where it is measured
(``blueprints/proxy.py:proxy``'s ``finally``) and, for the local endpoints, by the response
middleware of ``service.logs``. It does not go through :mod:`logging`: a LogRecord, a
filter, a formatter and a write system call per request cost about 50 µs of CPU, a third of
a proxied request (measured, bench/access_log_cost.py). Lines are formatted directly, in
the same format as the other lines (``service.logs.formatting``), collected in memory and
written in one piece every ``flush_interval`` seconds or ``max_lines`` lines, whichever
comes first, and when the worker stops (nginx's ``access_log ... buffer= flush=``). A
worker killed outright loses at most that last fraction of a second of access lines.

Both formats end with the request's ``trace_id`` and ``span_id`` (the load balancer's
span, ``service.tracing``) when it is a proxied request's, after the fields that were there
before them; a local endpoint's line has no trace and no such fields.

The proxy-error line goes through :mod:`logging` (``service.proxy``, WARNING): it is rare
and must not wait for a flush.
"""

from __future__ import annotations

from typing import Any

import logging
import os
import sys
import time
from collections.abc import Callable
from typing import BinaryIO, NamedTuple, Protocol

import orjson
from sanic import Request

from service.background import Background

error_log = logging.getLogger("service.proxy")
LOGGER = "service.access"


class Finished(Protocol):
    """What a log line needs of a finished exchange (the proxy's ``Outcome`` is one)."""

    route: str  # the upstream, or "local"
    target: str  # the target's URL, "" when none was tried
    status: int
    size: int  # body bytes sent to the client
    error_reason: str  # a proxy-made 502/504's reason, else ""


class Answered(NamedTuple):
    """A local endpoint's answer, as a :class:`Finished`."""

    route: str
    target: str
    status: int
    size: int
    error_reason: str = ""


class AccessLog:
    """This worker's access log: ``write`` per request, ``flush`` now and then."""

    def __init__(
        self,
        log_format: str,
        stream: BinaryIO | None = None,
        *,
        max_lines: int = 256,
        flush_interval: float = 0.25,
        client_address: Callable[[Request], str] | None = None,
    ) -> None:
        """``client_address``: who the client is (``service.frontdoor.client``: the peer,
        or behind LB_TRUSTED_PROXIES the address they name); the TCP peer when None."""
        self._client = client_address
        self._json = log_format == "json"
        self._stream = stream if stream is not None else sys.stdout.buffer
        self._max_lines = max_lines
        self.flush_interval = flush_interval
        self._lines: list[bytes] = []
        self._pid = os.getpid()
        self._second = -1
        self._stamp = ""
        self._flushing = Background.every(lambda: self.flush_interval, self.flush)

    def write(self, request: Request, done: Finished, duration_s: float, reason: str = "") -> None:
        """One line for ``request``. Two fields are added only when they say something, so
        that an ordinary line stays as it always was: ``dropped_headers``, the header fields
        not forwarded for a ``_`` in their name (``LB_UNDERSCORES_IN_HEADERS``), and
        ``reason``, why the front door answered itself (``service.errors``)."""
        route, target, status, size = done.route, done.target, done.status, done.size
        now = time.time()
        stamp = self._timestamp(now)
        request_id = getattr(request.ctx, "request_id", "")
        # a proxied request's trace (service.tracing); a local endpoint's line has none
        trace = getattr(request.ctx, "trace", None)
        duration_ms = round(duration_s * 1000.0, 3)
        client = self._client(request) if self._client is not None else request.ip
        dropped: int = getattr(request.ctx, "dropped_headers", 0)
        extras = _extras(dropped, reason, trace)
        if self._json:
            # A template rather than a dict through orjson (2.2 vs 6.7 µs a line, measured);
            # only the values a client controls are escaped (the method is a token, the
            # request id a sane token, route and pid are ours).
            path = request.path
            line = (
                f'{{"time":"{stamp}","level":"INFO","worker":{self._pid},"logger":"{LOGGER}",'
                f'"message":{_json(f"{request.method} {path} {status}")},'
                f'"request_id":"{request_id}","client":{_json(client)},'
                f'"method":"{request.method}","path":{_json(path)},"route":"{route}",'
                f'"target":{_json(target)},"status":{status},"bytes":{size},'
                f'"duration_ms":{duration_ms}'
                + "".join(f',"{name}":{value}' for name, value, _ in extras)
                + "}"
            ).encode("utf-8", "backslashreplace")
        else:
            line = (
                f"{stamp} INFO worker={self._pid} {LOGGER}: client={_text(client)} "
                f"method={request.method} path={_text(request.path)} route={route or '-'} "
                f"target={_text(target)} status={status} bytes={size} "
                f"duration_ms={duration_ms} request_id={request_id or '-'}"
                + "".join(f" {name}={value}" for name, _, value in extras)
            ).encode("utf-8", "backslashreplace")
        self._lines.append(line)
        if len(self._lines) >= self._max_lines:
            self.flush()

    def _timestamp(self, now: float) -> str:
        second = int(now)
        if second != self._second:  # strftime once a second, not once a request
            self._second = second
            self._stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second))
        return f"{self._stamp}.{int((now - second) * 1000):03d}Z"

    def flush(self) -> None:
        if not self._lines:
            return
        lines, self._lines = self._lines, []
        try:
            self._stream.write(b"\n".join(lines) + b"\n")
            self._stream.flush()
        except (OSError, ValueError):  # a closed pipe must not take the worker down
            pass

    def start(self) -> None:
        """Flush every ``flush_interval`` from now on (the worker serves)."""
        self._flushing.start()

    def cancel(self) -> None:
        """No more periodic flushes; what is written so far goes out now."""
        self._flushing.cancel()
        self.flush()


def _json(value: str) -> str:
    return orjson.dumps(value).decode()


def _text(value: str) -> str:
    if not value:
        return "-"
    if " " in value or '"' in value:
        return orjson.dumps(value).decode()
    return value


def log_request(
    request: Request, done: Finished, duration_s: float, access: AccessLog | None
) -> None:
    """A proxy-made 502/504 (``done.error_reason``) is logged at WARNING whether or not the
    access log is on; the access line only when there is an ``access`` log."""
    if done.error_reason:
        error_log.warning(
            "%s %s -> %d from %s: %s", request.method, request.path, done.status,
            done.target or done.route, done.error_reason,
        )  # fmt: skip
    if access is not None:
        access.write(request, done, duration_s)


def _extras(dropped: int, reason: str, trace: Any) -> list[tuple[str, str, str]]:
    """The fields a line has only sometimes, after the fixed ones: ``(name, as JSON, as
    text)``, in this order: header fields not forwarded, why the front door refused the
    request, the proxied request's trace (``service.tracing``)."""
    extras = []
    if dropped:
        extras.append(("dropped_headers", str(dropped), str(dropped)))
    if reason:
        extras.append(("reason", _json(reason), _text(reason)))
    if trace is not None:
        extras.append(("trace_id", f'"{trace.trace_id}"', trace.trace_id))
        extras.append(("span_id", f'"{trace.span_id}"', trace.span_id))
    return extras
