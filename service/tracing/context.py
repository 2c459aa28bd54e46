"""W3C Trace Context level 1: ``traceparent`` and ``tracestate`` read strictly, ids made.

A ``traceparent`` is believed only when it is exactly what the specification allows
(§3.2): version ``00`` is exactly 55 characters, ``00-<32 hex>-<16 hex>-<2 hex>``, all hex
lower-case, neither id all zeros. A later version (``01``..``fe``) is read as version 00
is, from its first 55 characters, when what follows them starts with ``-``; version
``ff`` is invalid. Anything else, or more than one ``traceparent`` field, is no
``traceparent`` at all: the request starts a new trace, and its ``tracestate`` is dropped
with it (§3.3: a ``tracestate`` is only read alongside a valid ``traceparent``).

A ``tracestate`` is kept when it is at most :data:`MAX_TRACESTATE` characters and every
list-member is ``key=value`` as §3.3.1 defines them (at most 32 members, no key twice);
otherwise it is dropped whole. Kept, it is forwarded unchanged (the load balancer adds no
member of its own).
"""

from __future__ import annotations

import random
import re
from typing import NamedTuple

MAX_TRACESTATE = 512
MAX_MEMBERS = 32

_HEX = frozenset("0123456789abcdef")
_ZERO_TRACE = "0" * 32
_ZERO_SPAN = "0" * 16
_KEY = r"(?:[a-z][a-z0-9_\-*/]{0,255}|[a-z0-9][a-z0-9_\-*/]{0,240}@[a-z][a-z0-9_\-*/]{0,13})"
_VALUE = r"[\x20-\x2b\x2d-\x3c\x3e-\x7e]{0,255}[\x21-\x2b\x2d-\x3c\x3e-\x7e]"
_MEMBER = re.compile(f"({_KEY})=({_VALUE})")

_bits = random.getrandbits  # ids need to be unique, not secret (level 2 asks for random)


class Parent(NamedTuple):
    """A valid incoming ``traceparent``: its ids and whether its caller sampled."""

    trace_id: str
    parent_id: str
    sampled: bool


def parse_traceparent(value: str) -> Parent | None:
    """The ``traceparent`` field's value as a :class:`Parent`, or None if it is invalid."""
    if len(value) < 55:
        return None
    version = value[:2]
    if version == "00":
        if len(value) != 55:
            return None
    elif version == "ff" or not _is_hex(version) or (len(value) > 55 and value[55] != "-"):
        return None
    if value[2] != "-" or value[35] != "-" or value[52] != "-":
        return None
    trace_id, parent_id, flags = value[3:35], value[36:52], value[53:55]
    if not (_is_hex(trace_id) and _is_hex(parent_id) and _is_hex(flags)):
        return None
    if trace_id == _ZERO_TRACE or parent_id == _ZERO_SPAN:
        return None
    return Parent(trace_id, parent_id, bool(int(flags, 16) & 1))


def _is_hex(text: str) -> bool:
    return _HEX.issuperset(text)


def valid_tracestate(values: list[str]) -> str | None:
    """The ``tracestate`` fields (several are one list, §3.3.1.1), joined, when valid and
    at most :data:`MAX_TRACESTATE` characters; else None."""
    if not values:
        return None
    joined = ",".join(values)
    if len(joined) > MAX_TRACESTATE:
        return None
    keys = set()
    for item in joined.split(","):
        member = item.strip(" \t")
        if not member:  # empty list-members are allowed
            continue
        matched = _MEMBER.fullmatch(member)
        if matched is None or matched[1] in keys:
            return None
        keys.add(matched[1])
    if not keys or len(keys) > MAX_MEMBERS:
        return None
    return joined


def new_trace_id() -> str:
    return f"{_bits(128) or 1:032x}"


def new_span_id() -> str:
    return f"{_bits(64) or 1:016x}"


def traceparent(trace_id: str, span_id: str, sampled: bool) -> bytes:
    """The ``traceparent`` sent upstream: always version 00, only the sampled flag."""
    return f"00-{trace_id}-{span_id}-{'01' if sampled else '00'}".encode()
