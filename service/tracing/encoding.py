"""Spans as an OTLP ``ExportTraceServiceRequest``, encoded with opentelemetry-proto.

Imported only when export is configured (it imports protobuf). Why not the
OpenTelemetry SDK's exporter: measured (docs/tracing.md, "Cost"), the SDK's span objects
and its encoder cost more CPU per request than the whole proxied request, against a target
of 10 %. Encoding a span with opentelemetry-proto's messages one attribute at a time costs
about a fifth of a request; so each attribute is encoded once, as its ``KeyValue``
message, and kept (most values repeat: methods, routes, targets, pools, statuses, user
agents), and a span is its fixed fields encoded by a ``Span`` message followed by its
attributes' encodings. Protobuf defines the concatenation of two encodings of a message as
their merge, and a repeated field's entries as appended, so the result is the same
``Span`` a single message would give; the tests decode every request with
``ExportTraceServiceRequest``.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, InstrumentationScope, KeyValue
from opentelemetry.proto.resource.v1.resource_pb2 import Resource
from opentelemetry.proto.trace.v1.trace_pb2 import ResourceSpans, ScopeSpans, Span, Status

from service.tracing.trace import Span as Recorded

SCOPE = "service.tracing"
MAX_CACHED = 4096  # attribute encodings kept; the cache starts over when full

_ATTRIBUTES = Span.DESCRIPTOR.fields_by_name["attributes"].number
_STATUS = Span.DESCRIPTOR.fields_by_name["status"].number
_SPANS = ScopeSpans.DESCRIPTOR.fields_by_name["spans"].number
_SCOPE_SPANS = ResourceSpans.DESCRIPTOR.fields_by_name["scope_spans"].number
_RESOURCE_SPANS = ExportTraceServiceRequest.DESCRIPTOR.fields_by_name["resource_spans"].number
_LENGTH_DELIMITED = 2


def _field(number: int, payload: bytes) -> bytes:
    """``payload`` as a length-delimited field ``number`` (a message inside a message)."""
    return _varint(number << 3 | _LENGTH_DELIMITED) + _varint(len(payload)) + payload


def _varint(value: int) -> bytes:
    out = bytearray()
    while value > 0x7F:
        out.append(value & 0x7F | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def _value(value: str | int) -> AnyValue:
    return AnyValue(int_value=value) if isinstance(value, int) else AnyValue(string_value=value)


class Encoder:
    """Spans of one service (its resource) into request bodies."""

    def __init__(self, resource: Sequence[tuple[str, str | int]]) -> None:
        attributes = [KeyValue(key=key, value=_value(value)) for key, value in resource]
        # a ResourceSpans with its resource only, and a ScopeSpans with its scope only: the
        # spans' encodings are appended to them
        self._head = ResourceSpans(resource=Resource(attributes=attributes)).SerializeToString()
        self._scope = ScopeSpans(scope=InstrumentationScope(name=SCOPE)).SerializeToString()
        self._error = _field(_STATUS, Status(code=Status.STATUS_CODE_ERROR).SerializeToString())
        self._cache: dict[tuple[str, str | int], bytes] = {}

    def _attribute(self, pair: tuple[str, str | int]) -> bytes:
        encoded = self._cache.get(pair)
        if encoded is None:
            if len(self._cache) >= MAX_CACHED:
                self._cache.clear()
            key, value = pair
            encoded = _field(
                _ATTRIBUTES, KeyValue(key=key, value=_value(value)).SerializeToString()
            )
            self._cache[pair] = encoded
        return encoded

    def span(self, span: Recorded) -> bytes:
        """One span, as ScopeSpans' ``spans`` field."""
        trace_id, span_id, parent_id, name, kind, start, end, attributes, error = span
        fixed = Span(
            trace_id=bytes.fromhex(trace_id),
            span_id=bytes.fromhex(span_id),
            parent_span_id=bytes.fromhex(parent_id),
            name=name,
            kind=kind,  # type: ignore[arg-type]
            start_time_unix_nano=start,
            end_time_unix_nano=end,
        ).SerializeToString()
        parts = [fixed, *map(self._attribute, attributes)]
        if error:
            parts.append(self._error)
        return _field(_SPANS, b"".join(parts))

    def request(self, spans: Iterable[bytes]) -> bytes:
        """The body of one export: every span under this resource and the scope."""
        scope_spans = self._scope + b"".join(spans)
        resource_spans = self._head + _field(_SCOPE_SPANS, scope_spans)
        return _field(_RESOURCE_SPANS, resource_spans)
