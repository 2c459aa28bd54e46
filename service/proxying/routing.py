"""Where a request goes: path normalisation and segment-aware prefix routing.

Routing decides on the decoded, normalised path, so that no spelling of a path
(``..``, ``%2e%2e``, ``//``) can reach another upstream or a local endpoint. A request
whose path is not already in canonical form is not proxied at all: it is redirected (308,
method and body kept) to the canonical spelling, which is then routed like any other
request; percent-encoded unreserved characters (RFC 3986 §6.2.2.2: ``%6c`` is ``l``) count as
a non-canonical spelling too, so ``/%6cb-health`` is not proxied but sent to ``/lb-health``,
which Sanic then matches to the local endpoint. Encoded slashes and backslashes are refused
outright, as Envoy's
``path_with_escaped_slashes_action: REJECT_REQUEST`` does, because upstreams disagree on
whether ``%2F`` separates segments.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from urllib.parse import unquote

from service.errors import BadPath
from service.proxying.choice import Asked, WeightedChoice, matcher
from service.settings import Backend, Route
from service.settings.routes import in_precedence

_ENCODED_SEPARATORS = ("%2f", "%5c")
_ESCAPE = re.compile(r"%([0-9A-Fa-f]{2})")
_UNRESERVED = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~")


@dataclass(frozen=True, slots=True)
class Forward:
    """Proxy the request to ``upstream`` (the route's, or the backend drawn for this request)
    with the path exactly as received; ``counter``: the (route, backend) pair's position in
    :attr:`Router.pairs`, where its requests are counted (``service.routes``)."""

    route: Route
    upstream: str
    counter: int = 0


@dataclass(frozen=True, slots=True)
class Redirect:
    """Answer 308 with this ``Location``."""

    location: str


def canonical_path(raw_path: str) -> str:
    """The decoded path with dot segments removed and repeated slashes merged."""
    lowered = raw_path.lower()
    if any(sep in lowered for sep in _ENCODED_SEPARATORS) or "\\" in raw_path:
        raise BadPath("encoded slash or backslash in path")
    if not raw_path.startswith("/"):
        raise BadPath("path must start with '/'")
    decoded = unquote(raw_path, errors="strict") if "%" in raw_path else raw_path
    if "\x00" in decoded:
        raise BadPath("NUL byte in path")
    return _remove_dot_segments(decoded)


def _remove_dot_segments(path: str) -> str:
    segments: list[str] = []
    for segment in path.split("/")[1:]:
        if segment == "..":
            if segments:
                segments.pop()
        elif segment not in (".", ""):
            segments.append(segment)
    trailing = path.endswith(("/", "/.", "/..")) and bool(segments)
    return "/" + "/".join(segments) + ("/" if trailing else "")


def _decode_unreserved(raw_path: str) -> str:
    """``%41`` -> ``A`` for unreserved characters only; other escapes stay as they are."""

    def replace(match: re.Match[str]) -> str:
        char = chr(int(match.group(1), 16))
        return char if char in _UNRESERVED else match.group(0)

    return _ESCAPE.sub(replace, raw_path) if "%" in raw_path else raw_path


class Router:
    """Maps a raw request path (and, for routes with a ``match``, the request) to a
    :class:`Forward` or a :class:`Redirect`.

    Routes are tried in precedence order (``service.settings.routes.in_precedence``): the
    longest prefix first; for one prefix, routes with a ``match`` before the one without.
    A route without ``match`` or ``backends`` costs what it always did: its prefix test;
    one with a ``match`` adds its test once its prefix matched, one with ``backends`` one
    draw once it is taken.
    """

    def __init__(self, routes: tuple[Route, ...]) -> None:
        # Settings already sorts them; keep the invariant local (the sort is stable).
        ordered = in_precedence(routes)
        pairs: list[tuple[Route, Backend]] = []
        entries = []
        for route in ordered:
            forwards = []
            for backend in route.choices:
                forwards.append((Forward(route, backend.upstream, len(pairs)), backend.weight))
                pairs.append((route, backend))
            test = matcher(route.match) if route.match is not None else None
            split = WeightedChoice(forwards) if len(forwards) > 1 else None
            entries.append((route, route.prefix, route.prefix + "/", test, forwards[0][0], split))
        self._routes = tuple(entries)
        self.routes = ordered
        # every (route, backend) in precedence order: what route counters are kept for
        self.pairs = tuple(pairs)

    def resolve(
        self, raw_path: str, query_string: str = "", request: Asked | None = None
    ) -> Forward | Redirect:
        """``request``: what routes with a ``match`` test (without it, none matches)."""
        if _plain(raw_path):  # nothing to decode or normalise: the path is its own spelling
            return self._forward(raw_path, query_string, "", request)
        try:
            path = canonical_path(raw_path)
        except UnicodeDecodeError:
            raise BadPath("path is not valid percent-encoded UTF-8") from None
        # The canonical spelling of the raw path: the client's own escapes of reserved and
        # non-ASCII characters are kept, so the redirect changes nothing an upstream could
        # tell apart. canonical_path has refused encoded separators, so both agree on segments.
        spelling = _remove_dot_segments(_decode_unreserved(raw_path))
        if spelling != raw_path:
            return Redirect(_with_query(spelling, query_string))
        return self._forward(path, query_string, raw_path, request)

    def _forward(
        self, path: str, query_string: str, raw_path: str = "", request: Asked | None = None
    ) -> Forward | Redirect:
        route, forward = self._match(path, request)
        if route.redirect_bare and path == route.prefix:
            return Redirect(_with_query((raw_path or path) + "/", query_string))
        return forward

    def match(self, path: str, request: Asked | None = None) -> Route:
        return self._match(path, request)[0]

    def _match(self, path: str, request: Asked | None) -> tuple[Route, Forward]:
        for route, prefix, below, test, forward, split in self._routes:
            if (prefix == "/" or path == prefix or path.startswith(below)) and (
                test is None or (request is not None and test(request))
            ):
                return route, forward if split is None else split.pick()
        raise LookupError(path)  # unreachable: settings guarantee a "/" route without match


def _plain(raw_path: str) -> bool:
    """A path with no escape, no dot segment, no empty segment, no backslash, no NUL: its
    decoded, normalised form is itself (what ``canonical_path`` would compute, cheaply)."""
    return (
        raw_path.startswith("/")
        and "%" not in raw_path
        and "/." not in raw_path
        and "//" not in raw_path
        and "\\" not in raw_path
        and "\x00" not in raw_path
    )


def _with_query(path: str, query_string: str) -> str:
    return f"{path}?{query_string}" if query_string else path
