"""Parsing the ``[[routes]]`` tables: a prefix, an optional ``match``, and one ``upstream`` or
weighted ``backends``; then their order of precedence.

Everything a route says is checked here, once, with the route named in the message
(``[[routes]] #2 (/api): ...``): an unknown ``match`` key, a header or cookie name that is not
a token, a method the proxy does not serve, an unknown upstream, a negative weight, weights
that are all ``0``, both ``upstream`` and ``backends`` or neither. Start-up stops on it with
one line; a reload refuses the file with it (``service.reload``).
"""

from __future__ import annotations

import re
from collections.abc import Collection, Mapping, Sequence
from typing import Any

from service.settings.model import MATCH_KEYS, PROXIED_METHODS, Backend, Route, RouteMatch
from service.settings.shapes import kind_of

_TOKEN = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")  # RFC 9110 token: a header's name
_COOKIE_NAME = _TOKEN  # RFC 6265: a cookie's name is a token too


class RouteError(ValueError):
    """A route that cannot be used; the message names the route and what is wrong."""


def parse_match(raw: Any, label: str) -> RouteMatch | None:
    """A route's ``match`` table (absent: None). An empty table matches everything, like
    no ``match`` at all, and is taken as none."""
    if raw is None:
        return None
    if not isinstance(raw, Mapping):
        raise RouteError(f"{label} match must be a table, not {kind_of(raw)}")
    unknown = sorted(set(raw) - set(MATCH_KEYS))
    if unknown:
        raise RouteError(
            f"{label} match: unknown key {unknown[0]!r} (expected {', '.join(MATCH_KEYS)})"
        )
    headers = _pairs(raw, "headers", label, _TOKEN, "a header name (an RFC 9110 token)")
    match = RouteMatch(
        headers=tuple((name.lower(), value) for name, value in headers),
        cookies=_pairs(raw, "cookies", label, _COOKIE_NAME, "a cookie name (a token)"),
        query=_pairs(raw, "query", label, None, "a query parameter name"),
        methods=_methods(raw.get("methods"), label),
    )
    return match if match.conditions else None


def _pairs(
    raw: Mapping[str, Any], key: str, label: str, name_pattern: re.Pattern[str] | None, what: str
) -> tuple[tuple[str, str], ...]:
    table = raw.get(key, {})
    if not isinstance(table, Mapping):
        raise RouteError(f"{label} match.{key} must be a table, not {kind_of(table)}")
    pairs = []
    for name, value in table.items():
        if not name or (name_pattern is not None and not name_pattern.fullmatch(name)):
            raise RouteError(f"{label} match.{key}: {name!r} is not {what}")
        if not isinstance(value, str):
            raise RouteError(
                f"{label} match.{key}.{name} must be a string (an exact value), "
                f"not {kind_of(value)}"
            )
        pairs.append((name, value))
    return tuple(pairs)


def _methods(raw: Any, label: str) -> tuple[str, ...]:
    if raw is None:
        return ()
    if not isinstance(raw, list) or not all(isinstance(m, str) for m in raw):
        raise RouteError(f"{label} match.methods must be an array of strings, not {raw!r}")
    methods = []
    for method in raw:
        if method.upper() not in PROXIED_METHODS:
            raise RouteError(
                f"{label} match.methods: unknown method {method!r} "
                f"(expected some of {', '.join(PROXIED_METHODS)})"
            )
        if method.upper() not in methods:
            methods.append(method.upper())
    return tuple(methods)


def parse_backends(raw: Any, label: str, names: Collection[str]) -> tuple[Backend, ...]:
    """A route's ``backends``: ``[{upstream = "...", weight = N}, ...]``, weights whole
    numbers of at least 0 (default 1), at least one above 0, each upstream named once."""
    if not isinstance(raw, list) or not raw:
        raise RouteError(f"{label} backends must be a non-empty array of tables")
    backends: list[Backend] = []
    for item in raw:
        if not isinstance(item, Mapping):
            raise RouteError(f"{label} backends: {item!r} is not a table")
        unknown = sorted(set(item) - {"upstream", "weight"})
        if unknown:
            raise RouteError(
                f"{label} backends: unknown key {unknown[0]!r} (expected upstream, weight)"
            )
        upstream, weight = item.get("upstream"), item.get("weight", 1)
        if not isinstance(upstream, str):
            raise RouteError(f"{label} backends: each needs an upstream (a string)")
        if upstream not in names:
            raise RouteError(f"{label} backends: unknown upstream {upstream!r}")
        if isinstance(weight, bool) or not isinstance(weight, int) or weight < 0:
            raise RouteError(
                f"{label} backends: weight {weight!r} of {upstream!r} must be a whole number "
                "of at least 0"
            )
        if any(b.upstream == upstream for b in backends):
            raise RouteError(f"{label} backends: upstream {upstream!r} is named twice")
        backends.append(Backend(upstream=upstream, weight=weight))
    if not any(b.weight for b in backends):
        raise RouteError(
            f"{label} backends: every weight is 0, so the route would send nothing "
            "(give one a weight above 0, or remove the route)"
        )
    return tuple(backends)


def destination(
    item: Mapping[str, Any], label: str, names: Collection[str]
) -> tuple[str, tuple[Backend, ...]]:
    """``(upstream, backends)`` of a route table: exactly one of the two is given."""
    has_upstream, has_backends = "upstream" in item, "backends" in item
    if has_upstream and has_backends:
        raise RouteError(f"{label} has both upstream and backends: give one or the other")
    if has_backends:
        return "", parse_backends(item["backends"], label, names)
    if not has_upstream:
        raise RouteError(f"{label} needs an upstream or backends")
    upstream = item["upstream"]
    if upstream not in names:
        raise RouteError(f"{label} names unknown upstream {upstream!r}")
    return upstream, ()


def in_precedence(routes: Sequence[Route]) -> tuple[Route, ...]:
    """Routes in the order they are tried: the longest prefix first; for one prefix, those
    with a ``match`` before the one without, more conditions first, then file order (the
    sort is stable). Gateway API's precedence, within a prefix."""

    def order(route: Route) -> tuple[int, int]:
        conditions = route.match.conditions if route.match is not None else -1
        return (-len(route.prefix), -conditions)

    return tuple(sorted(routes, key=order))
