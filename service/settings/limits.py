"""Parsing rate limits: ``LB_RATE_LIMIT``'s shorthand and the ``[[limits]]`` tables.

A rate is ``N/s`` or ``N/min`` (N a positive number); a burst is how many requests may
arrive at once (the bucket's size, as nginx's ``burst ... nodelay`` plus the one the rate
allows). Without one, the burst is one second's worth of the rate (at least 1), so a client
that never goes over the rate is never limited however its requests are spaced within a
second. Everything is validated here, once, at start-up; a bad limit stops start-up with one
line naming it.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from typing import Any

from service.settings.model import LIMIT_KEYS, STATS_ROUTE, LimitSpec

DEFAULT_NAME = "default"  # the name of LB_RATE_LIMIT's limit
METHODS = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS")
_UNITS = {"s": 1.0, "min": 60.0}
_RATE = re.compile(r"(\d+(?:\.\d+)?)\s*/\s*(s|min)")
_NAME = re.compile(r"[A-Za-z0-9._-]{1,64}")
_TOKEN = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")  # RFC 9110 token: a header's name
_KEYS = {"name", "rate", "burst", "per", "routes", "methods", "path_prefix", "dry_run"}


class LimitError(ValueError):
    """A limit that cannot be used; the message says which part and why."""


def parse_rate(text: str) -> tuple[float, float]:
    """``"50/s"`` -> ``(50.0, 1.0)``; ``"100/min"`` -> ``(100.0, 60.0)``."""
    match = _RATE.fullmatch(text.strip())
    if match is None or float(match.group(1)) <= 0:
        raise LimitError(f"rate {text!r} is not N/s or N/min with N above 0")
    return float(match.group(1)), _UNITS[match.group(2)]


def default_burst(count: float, period_s: float) -> int:
    """One second's worth of the rate, at least 1."""
    return max(1, math.ceil(count / period_s))


def _burst(raw: Any) -> int:
    if isinstance(raw, bool) or not str(raw).strip().isdigit() or int(str(raw)) < 1:
        raise LimitError(f"burst {raw!r} is not a whole number of at least 1")
    return int(str(raw))


def _bool(raw: Any) -> bool:
    if isinstance(raw, bool):
        return raw
    text = str(raw).strip().lower()
    if text not in ("true", "false", "1", "0", "yes", "no", "on", "off"):
        raise LimitError(f"dry_run {raw!r} is not true or false")
    return text in ("true", "1", "yes", "on")


def _per(raw: Any) -> str:
    text = str(raw).strip()
    kind, _, header = text.partition(":")
    if kind not in LIMIT_KEYS or (kind == "header") != bool(header):
        raise LimitError(f"per {raw!r} is not client, all or header:<Name>")
    if kind == "header":
        if not _TOKEN.fullmatch(header.strip()):
            raise LimitError(f"per {raw!r}: {header!r} is not a header name")
        return f"header:{header.strip()}"
    return kind


def _strings(raw: Any, what: str) -> tuple[str, ...]:
    items = raw if isinstance(raw, list) else str(raw).split(",")
    out = tuple(str(item).strip() for item in items if str(item).strip())
    if not isinstance(raw, list | str):
        raise LimitError(f"{what} {raw!r} is not a list")
    return out


def _prefix(raw: Any) -> str:
    text = str(raw).strip()
    if not text.startswith("/") or "//" in text:
        raise LimitError(f"path_prefix {raw!r} must start with '/' and have no empty segment")
    return text.rstrip("/") or "/"


def parse_shorthand(text: str) -> LimitSpec | None:
    """``LB_RATE_LIMIT``: ``<rate> [burst=N] [dry_run=true]`` (spaces or commas between);
    empty: no such limit. One limit named ``default``, per client, on every proxied route
    and ``/stats``."""
    parts = [part for part in re.split(r"[\s,]+", text.strip()) if part]
    if not parts:
        return None
    count, period = parse_rate(parts[0])
    options: dict[str, str] = {}
    for part in parts[1:]:
        key, sep, value = part.partition("=")
        if not sep or key not in ("burst", "dry_run") or key in options:
            raise LimitError(f"unknown or repeated option {part!r}")
        options[key] = value
    return LimitSpec(
        name=DEFAULT_NAME,
        count=count,
        period_s=period,
        burst=_burst(options["burst"]) if "burst" in options else default_burst(count, period),
        routes=(),  # every proxied route ...
        dry_run=_bool(options.get("dry_run", "false")),
        per="client",
    )


def with_stats(spec: LimitSpec, upstreams: Sequence[str]) -> LimitSpec:
    """The shorthand's limit covering every proxied route *and* ``/stats``: a limit with
    ``routes`` names them all."""
    return LimitSpec(**{**spec.__dict__, "routes": (*upstreams, STATS_ROUTE), "every_route": True})


def parse_limits(
    table: list[Mapping[str, Any]], upstreams: Sequence[str], taken: Sequence[str] = ()
) -> tuple[LimitSpec, ...]:
    """The ``[[limits]]`` tables, validated: unique names (also against ``taken``), known
    keys, routes that exist (``upstreams`` and ``stats``)."""
    if not isinstance(table, list):
        raise LimitError("[[limits]] must be an array of tables")
    known_routes = {*upstreams, STATS_ROUTE}
    names = set(taken)
    limits = []
    for position, item in enumerate(table, 1):
        label = f"[[limits]] #{position}"
        try:
            if not isinstance(item, Mapping):
                raise LimitError("is not a table")
            name = str(item.get("name", ""))
            if not _NAME.fullmatch(name):
                raise LimitError(f"name {name!r}: 1 to 64 letters, digits, '.', '_' or '-'")
            label = f"[[limits]] {name!r}"
            if name in names:
                raise LimitError("the name is used twice")
            names.add(name)
            unknown = set(item) - _KEYS
            if unknown:
                raise LimitError(f"unknown key(s) {sorted(unknown)}; known: {sorted(_KEYS)}")
            if "rate" not in item:
                raise LimitError("lacks a rate (N/s or N/min)")
            count, period = parse_rate(str(item["rate"]))
            routes = _strings(item.get("routes", []), "routes")
            if missing := [r for r in routes if r not in known_routes]:
                raise LimitError(f"routes {missing} are not routes: {sorted(known_routes)}")
            methods = tuple(m.upper() for m in _strings(item.get("methods", []), "methods"))
            if odd := [m for m in methods if m not in METHODS]:
                raise LimitError(f"methods {odd} are not among {list(METHODS)}")
            limits.append(
                LimitSpec(
                    name=name,
                    count=count,
                    period_s=period,
                    burst=(
                        _burst(item["burst"]) if "burst" in item else default_burst(count, period)
                    ),
                    per=_per(item.get("per", "client")),
                    routes=routes,
                    methods=methods,
                    path_prefix=_prefix(item["path_prefix"]) if "path_prefix" in item else "",
                    dry_run=_bool(item.get("dry_run", False)),
                )
            )
        except LimitError as exc:
            raise LimitError(f"{label}: {exc}") from None
    return tuple(limits)
