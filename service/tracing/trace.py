"""One request's trace: its ids, the ``traceparent`` each attempt sends, and its spans.

``Tracing.begin(request)`` is called once per proxied request (``blueprints/proxy.py``).
It believes a valid incoming ``traceparent`` (``service.tracing.context``) or starts a new
trace, asks the sampler, and returns

- a :class:`RequestTrace` when nothing is recorded (no export configured, or the sampler
  said no): ids only. Its span id is the load balancer's, logged and sent upstream as the
  parent of the first attempt; a retry sends an id of its own. What it costs is a header
  lookup, one or two random numbers and one string per attempt;
- a :class:`RecordedTrace` when the request's spans are exported: one SERVER span for the
  request and one CLIENT span per upstream attempt, whose id is the parent id that attempt
  sends upstream. Spans are plain tuples handed to the exporter's bounded queue
  (``service.tracing.export``) when they end; encoding and sending happen later, elsewhere.
"""

from __future__ import annotations

import time
from typing import Protocol

from sanic import Request

from service.frontdoor.client import client_address
from service.pools import Target
from service.tracing.context import (
    new_span_id,
    new_trace_id,
    parse_traceparent,
    traceparent,
    valid_tracestate,
)
from service.tracing.sampling import Decide

SERVER, CLIENT = 2, 3  # OTLP's SpanKind values
# (trace id, span id, parent span id or "", name, kind, start ns, end ns, attributes, error)
Span = tuple[str, str, str, str, int, int, int, tuple[tuple[str, str | int], ...], bool]


class SpanSink(Protocol):
    """Where ended spans go (``service.tracing.export.Exporter``): never waits, never
    raises; a full queue drops the span and counts it."""

    def add(self, span: Span) -> None: ...


class RequestTrace:
    """A request's trace context, not recorded. ``attempt()`` per try of a target;
    ``answered``/``failed``/``finish`` record nothing here."""

    __slots__ = ("_attempts", "route", "sampled", "span_id", "trace_id", "tracestate")

    def __init__(self, trace_id: str, sampled: bool, tracestate: bytes | None) -> None:
        self.trace_id = trace_id
        self.span_id = new_span_id()
        self.sampled = sampled
        self.tracestate = tracestate
        self.route = ""  # the matched route's prefix, once routed
        self._attempts = 0

    def attempt(self, target: Target, upstream: str, method: str) -> bytes:
        """The ``traceparent`` for the next try of ``target``."""
        self._attempts += 1
        span_id = self.span_id if self._attempts == 1 else new_span_id()
        return traceparent(self.trace_id, span_id, self.sampled)

    def answered(self, status: int) -> None:
        """The attempt's target answered with ``status``."""

    def failed(self, error_type: str) -> None:
        """The attempt failed: ``error_type`` is the upstream error's kind."""

    def finish(self, request: Request, status: int, error_type: str) -> None:
        """The request is over (``status`` sent; ``error_type`` "" unless it failed)."""


class RecordedTrace(RequestTrace):
    """A request whose spans are exported: the SERVER span and a CLIENT span per attempt."""

    __slots__ = ("_client", "_parent_id", "_sink", "_start")

    def __init__(
        self,
        trace_id: str,
        parent_id: str,
        tracestate: bytes | None,
        sink: SpanSink,
    ) -> None:
        super().__init__(trace_id, True, tracestate)
        self._parent_id = parent_id
        self._sink = sink
        self._start = time.time_ns()
        # the open attempt: [span id, start, target, upstream, method, status, error type]
        self._client: list | None = None  # type: ignore[type-arg]

    def attempt(self, target: Target, upstream: str, method: str) -> bytes:
        self._end_attempt()
        span_id = new_span_id()
        self._client = [span_id, time.time_ns(), target, upstream, method, 0, ""]
        return traceparent(self.trace_id, span_id, True)

    def answered(self, status: int) -> None:
        if self._client is not None:
            self._client[5] = status

    def failed(self, error_type: str) -> None:
        if self._client is not None:
            self._client[6] = error_type

    def _end_attempt(self) -> None:
        if self._client is None:
            return
        span_id, start, target, upstream, method, status, error_type = self._client
        self._client = None
        url = target.base_url
        attributes: tuple[tuple[str, str | int], ...] = (
            ("http.request.method", method),
            ("server.address", target.origin or url.host),
            ("server.port", url.port or (443 if url.scheme == "https" else 80)),
            ("network.peer.address", url.host),
            ("lb.upstream", upstream),
        )
        if status:
            attributes += (("http.response.status_code", status),)
        if error_type:
            attributes += (("error.type", error_type),)
        elif status >= 500:
            attributes += (("error.type", str(status)),)
            error_type = str(status)
        self._sink.add(
            (self.trace_id, span_id, self.span_id, method, CLIENT, start, time.time_ns(),
             attributes, bool(error_type))
        )  # fmt: skip

    def finish(self, request: Request, status: int, error_type: str) -> None:
        self._end_attempt()
        method = request.method
        attributes: tuple[tuple[str, str | int], ...] = (
            ("http.request.method", method),
            ("url.path", request.path),
            ("client.address", client_address(request)),
        )
        if self.route:
            attributes += (("http.route", self.route),)
        if status:
            attributes += (("http.response.status_code", status),)
        agent = request.headers.get("user-agent")
        if agent:
            attributes += (("user_agent.original", agent),)
        if not error_type and status >= 500:
            error_type = str(status)
        if error_type:
            attributes += (("error.type", error_type),)
        name = f"{method} {self.route}" if self.route else method
        self._sink.add(
            (self.trace_id, self.span_id, self._parent_id, name, SERVER, self._start,
             time.time_ns(), attributes, bool(error_type))
        )  # fmt: skip


class Tracing:
    """This worker's tracing: the sampler's decision, and where recorded spans go (None:
    export is off, nothing is recorded)."""

    __slots__ = ("_decide", "sink")

    def __init__(self, decide: Decide, sink: SpanSink | None = None) -> None:
        self._decide = decide
        self.sink = sink

    def begin(self, request: Request) -> RequestTrace:
        """The request's trace: its ``traceparent`` believed when valid, else a new one."""
        headers = request.headers
        parent = None
        tracestate = None
        if headers.get("traceparent") is not None:
            fields = headers.getall("traceparent")
            if len(fields) == 1:
                parent = parse_traceparent(fields[0])
            if parent is not None and (states := headers.getall("tracestate", None)):
                valid = valid_tracestate(states)
                tracestate = valid.encode() if valid is not None else None
        if parent is None:
            trace_id = new_trace_id()
            sampled = self._decide(trace_id, None)
        else:
            trace_id = parent.trace_id
            sampled = self._decide(trace_id, parent.sampled)
        if sampled and self.sink is not None:
            parent_id = parent.parent_id if parent is not None else ""
            return RecordedTrace(trace_id, parent_id, tracestate, self.sink)
        return RequestTrace(trace_id, sampled, tracestate)


def error_type_of(reason: str) -> str:
    """An upstream error's reason ("refused: [Errno 111] ...") as a low-cardinality
    ``error.type`` ("refused")."""
    return reason.partition(":")[0] or "error"
