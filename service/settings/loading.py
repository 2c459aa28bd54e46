"""Loading the settings: the TOML file, then the environment, validated once.

The model (``service.settings.model``) holds every default and names every variable; this
module reads ``config/defaults.toml`` (or ``LB_CONFIG``), applies the environment over it,
and validates each value, so that nothing downstream re-reads or re-checks one. A bad value
stops start-up with a :class:`SettingsError` naming the variable and the value.
"""

from __future__ import annotations

import math
import os
import re
import tomllib
from collections.abc import Mapping
from ipaddress import IPv4Network, IPv6Network, ip_address, ip_network
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

from service.settings import model, shapes
from service.settings.limits import LimitError, parse_limits, parse_shorthand, with_stats
from service.settings.routes import RouteError, destination, in_precedence, parse_match

DEFAULTS_FILE = Path(__file__).resolve().parent.parent.parent / "config" / "defaults.toml"
CONFIG_ENV = "LB_CONFIG"
# Set by the main process for the worker processes it starts: a file holding the TOML text
# it loaded (``service.handover``).
STARTUP_FILE_ENV = "LB_CONFIG_STARTUP_FILE"
SECTIONS: dict[str, type] = {
    "proxy": model.ProxySettings,
    "stats": model.StatsSettings,
    "heartbeat": model.HeartbeatSettings,
    "admin": model.AdminSettings,
    "cluster": model.ClusterSettings,
    "frontdoor": model.FrontDoorSettings,
    "resolver": model.ResolverSettings,
    "tls": model.TlsSettings,
    "admission": model.AdmissionSettings,
    "tracing": model.TracingSettings,
}
# The model part every VARIABLES section names: the scalar sections, and each upstream's.
MODELS: dict[str, type] = {
    "server": model.Settings,
    **SECTIONS,
    "upstream": model.Upstream,
    "passive": model.PassiveHealth,
    "active": model.ActiveHealth,
}


class SettingsError(ValueError):
    """A setting that cannot be used; the message names the variable and the value."""


_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}
EXPECTED = {
    "bool": "true or false",
    "port": "a port number from 1 to 65535",
    "positive_int": "a whole number of at least 1",
    "size": "a whole number of at least 0",
    "seconds": "a number of seconds greater than 0",
    "size_seconds": "a number of seconds of at least 0",
    "path": "a path starting with '/'",
    "balance": f"one of {model.BALANCERS}",
    "networks": "a comma-separated list of networks such as 127.0.0.1/32, ::1, 10.0.0.0/8",
    "log_format": f"one of {model.LOG_FORMATS}",
    "host": "a host name or address, without spaces",
    "redis_url": "a redis://, rediss:// or unix:// URL with a host (or a socket path)",
    "cluster_name": "1 to 64 letters, digits, '.', '_' or '-'",
    "publish_interval": "a number of seconds greater than 0 and at most 0.25",
    "resolvers": "a comma-separated list of DNS server addresses ip[:port] ([v6]:port)",
    "resolver_valid": "a number of seconds of at least 1",
    "statuses": "a comma-separated list of HTTP statuses from 500 to 599, such as 502,503,504",
    "percent": "a whole number from 0 to 100",
    "file": "a file path, without control characters",
    "optional_port": "a port number from 1 to 65535, or 0 for none",
    "stall_timeout": "a number of seconds of at least 2 (workers stamp every second)",
    "rate_limit": "N/s or N/min, then optionally burst=N and dry_run=true: 50/s burst=100",
    "limit_keys": "a whole number from 64 to 4194304",
    "otlp_url": "an http:// or https:// URL with a host",
    "otel_pairs": "a comma-separated list of key=value (values percent-encoded)",
    "service_name": "a name of 1 to 255 printable characters",
    "sampler": f"one of {', '.join(model.SAMPLERS)}",
    "ratio": "a number from 0 to 1",
    "underscores": f"one of {model.UNDERSCORES}",
    "ipv6_prefix": "a prefix length from 1 to 128",
    "hash_on": "client, header:NAME or cookie:NAME (NAME a header or cookie name)",
    "balance_factor": "0 (off) or a whole percentage above 100, such as 125",
    "cookie_name": "a cookie name (RFC 6265 token: letters, digits and !#$%&'*+-.^_`|~)",
}
# RFC 6265 section 4.1.1: a cookie name is an RFC 2616 token (also what a header name is)
_TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")


def _parse(kind: str, name: str, raw: Any) -> Any:
    """Turn one raw value (TOML value or environment string) into its typed form."""
    try:
        return _PARSERS[kind](raw, str(raw).strip())
    except (ValueError, TypeError):  # TypeError: a TOML value of a type no parser expects
        shown = _hide_password(str(raw)) if kind == "redis_url" else raw
        if name == "OTEL_EXPORTER_OTLP_HEADERS":  # credentials, as a rule: never echoed
            shown = "<hidden>"
        raise SettingsError(f"{name}={shown!r} is not valid: expected {EXPECTED[kind]}") from None


def _hide_password(url: str) -> str:
    """A URL for an error message: its password, if any, replaced by ``***``."""
    return re.sub(r"^([^/]*//[^@/]*?:)[^@/]*@", r"\1***@", url)


def _bool(raw: Any, text: str) -> bool:
    if isinstance(raw, bool):
        return raw
    if text.lower() not in _TRUE | _FALSE:
        raise ValueError
    return text.lower() in _TRUE


def _whole(low: int, high: float = math.inf) -> Any:
    def parse(raw: Any, text: str) -> int:
        if isinstance(raw, bool) or not low <= (value := int(text)) <= high:
            raise ValueError
        return value

    return parse


def _seconds(allow_zero: bool) -> Any:
    def parse(raw: Any, text: str) -> float:
        value = float(text)
        if math.isnan(value) or math.isinf(value) or value < 0 or (value == 0 and not allow_zero):
            raise ValueError
        return value

    return parse


def _choice(options: tuple[str, ...]) -> Any:
    def parse(raw: Any, text: str) -> str:
        if text not in options:
            raise ValueError
        return text

    return parse


def _host(raw: Any, text: str) -> str:
    if not text or any(c.isspace() for c in text) or "/" in text:
        raise ValueError
    return text


def _path(raw: Any, text: str) -> str:
    if not text.startswith("/"):
        raise ValueError
    return text


def _networks(raw: Any, text: str) -> tuple[IPv4Network | IPv6Network, ...]:
    """A CIDR list (a TOML list or a comma-separated string); a bare address is one host.
    Host bits must be zero (``10.0.0.1/8`` is refused: it is probably a typo)."""
    items = raw if isinstance(raw, list) else text.split(",")
    return tuple(ip_network(str(item).strip()) for item in items if str(item).strip())


def _redis_url(raw: Any, text: str) -> str:
    """Empty: no cluster. Otherwise a URL redis-py accepts, checked here and not at connect."""
    if not text:
        return ""
    try:
        parts = urlsplit(text)
        parts.port  # noqa: B018 - raises ValueError on a bad port
    except ValueError:
        raise ValueError from None
    if parts.scheme in ("redis", "rediss") and parts.hostname:
        db = parts.path.strip("/")
        if db and not db.isdigit():
            raise ValueError
        return text
    if parts.scheme == "unix" and parts.path:
        return text
    raise ValueError


def _cluster_name(raw: Any, text: str) -> str:
    if not re.fullmatch(r"[A-Za-z0-9._-]{1,64}", text):
        raise ValueError
    return text


def _publish_interval(raw: Any, text: str) -> float:
    value = _seconds(allow_zero=False)(raw, text)
    if value > 0.25:
        raise ValueError
    return value


def _resolvers(raw: Any, text: str) -> tuple[str, ...]:
    """``ip[:port]`` items (a TOML list or a comma-separated string); IPv6 with a port is
    bracketed, ``[::1]:5353``. Kept as text: the resolver parses them again when built."""
    items = raw if isinstance(raw, list) else text.split(",")
    servers = []
    for item in (str(i).strip() for i in items):
        if item:
            resolver_address(item)
            servers.append(item)
    return tuple(servers)


def resolver_address(item: str) -> tuple[str, int]:
    """``"10.0.0.10"``, ``"10.0.0.10:53"``, ``"::1"``, ``"[::1]:5353"`` -> (ip, port);
    ValueError for anything else (a host name is not accepted: it would need a resolver)."""
    host, port = item, 53
    if item.startswith("["):
        host, _, rest = item[1:].partition("]")
        if rest:
            if not rest.startswith(":"):
                raise ValueError(item)
            port = int(rest[1:])
    elif item.count(":") == 1:
        host, _, digits = item.partition(":")
        port = int(digits)
    if not 1 <= port <= 65535:
        raise ValueError(item)
    return str(ip_address(host)), port


def _resolver_valid(raw: Any, text: str) -> float:
    value = _seconds(allow_zero=False)(raw, text)
    if value < 1:
        raise ValueError
    return value


def _stall_timeout(raw: Any, text: str) -> float:
    value = _seconds(allow_zero=False)(raw, text)
    if value < 2:
        raise ValueError
    return value


def _hash_on(raw: Any, text: str) -> str:
    """``client``, ``header:NAME`` or ``cookie:NAME``; the NAME a token, as written."""
    if text == "client":
        return text
    kind, _, name = text.partition(":")
    if kind not in ("header", "cookie") or not _TOKEN.fullmatch(name.strip()):
        raise ValueError
    return f"{kind}:{name.strip()}"


def _balance_factor(raw: Any, text: str) -> int:
    value = _whole(0)(raw, text)
    if 0 < value <= 100:  # at or under the mean, no target could take its share
        raise ValueError
    return value


def _cookie_name(raw: Any, text: str) -> str:
    if text and not _TOKEN.fullmatch(text):
        raise ValueError
    return text


def _statuses(raw: Any, text: str) -> frozenset[int]:
    """Server-error statuses (a TOML list or a comma-separated string); empty: none. Only
    5xx: a 4xx is about the request, never a sign that the instance is sick."""
    items = raw if isinstance(raw, list) else text.split(",")
    status = _whole(500, 599)
    return frozenset(status(item, str(item).strip()) for item in items if str(item).strip())


def _file(raw: Any, text: str) -> str:
    """A path (empty: unset); whether it can be read is checked where it is used."""
    if any(ord(c) < 32 for c in text):
        raise ValueError
    return text


def _otlp_url(raw: Any, text: str) -> str:
    """Empty: unset. Otherwise an http(s) URL with a host, checked here, not at export."""
    if not text:
        return ""
    parts = urlsplit(text)
    parts.port  # noqa: B018 - raises ValueError on a bad port
    if parts.scheme not in ("http", "https") or not parts.hostname or parts.username:
        raise ValueError
    return text


def _otel_pairs(raw: Any, text: str) -> tuple[tuple[str, str], ...]:
    """``key=value,key2=value2`` (OTEL_EXPORTER_OTLP_HEADERS, OTEL_RESOURCE_ATTRIBUTES: the
    W3C Baggage format, values percent-decoded); an item without a key or ``=`` is refused."""
    pairs = []
    for item in (part.strip() for part in text.split(",")):
        if not item:
            continue
        key, sep, value = item.partition("=")
        key, value = key.strip(), unquote(value.strip())
        if not sep or not key or any(c.isspace() for c in key):
            raise ValueError
        if any(ord(c) < 32 or ord(c) == 127 for c in key + value):
            raise ValueError
        pairs.append((key, value))
    return tuple(pairs)


def _service_name(raw: Any, text: str) -> str:
    if not 1 <= len(text) <= 255 or not text.isprintable():
        raise ValueError
    return text


def _ratio(raw: Any, text: str) -> float:
    value = float(text)
    if not 0.0 <= value <= 1.0:  # NaN fails this too
        raise ValueError
    return value


_PARSERS = {
    "bool": _bool,
    "port": _whole(1, 65535),
    "positive_int": _whole(1),
    "size": _whole(0),
    "seconds": _seconds(allow_zero=False),
    "size_seconds": _seconds(allow_zero=True),
    "path": _path,
    "balance": _choice(model.BALANCERS),
    "networks": _networks,
    "log_format": _choice(model.LOG_FORMATS),
    "host": _host,
    "redis_url": _redis_url,
    "cluster_name": _cluster_name,
    "publish_interval": _publish_interval,
    "resolvers": _resolvers,
    "resolver_valid": _resolver_valid,
    "statuses": _statuses,
    "percent": _whole(0, 100),
    "file": _file,
    "optional_port": _whole(0, 65535),
    "stall_timeout": _stall_timeout,
    "rate_limit": lambda raw, text: parse_shorthand(text),
    "limit_keys": _whole(64, 4 * 1024 * 1024),
    "otlp_url": _otlp_url,
    "otel_pairs": _otel_pairs,
    "service_name": _service_name,
    "sampler": _choice(model.SAMPLERS),
    "ratio": _ratio,
    "underscores": _choice(model.UNDERSCORES),
    "ipv6_prefix": _whole(1, 128),
    "hash_on": _hash_on,
    "balance_factor": _balance_factor,
    "cookie_name": _cookie_name,
}


def parse_upstream_url(name: str, raw: str) -> str:
    """Validate an upstream base URL; return it as scheme://host[:port]."""
    text = raw.strip()
    try:
        parts = urlsplit(text)
        port = parts.port
    except ValueError as exc:
        raise SettingsError(f"{name}={raw!r} is not a valid URL: {exc}") from None
    if parts.scheme not in ("http", "https"):
        reason = "it has no scheme" if not parts.scheme else f"unknown scheme {parts.scheme!r}"
        raise SettingsError(f"{name}={raw!r} is not a valid upstream URL: {reason}")
    if not parts.hostname:
        raise SettingsError(f"{name}={raw!r} is not a valid upstream URL: empty host")
    if parts.path not in ("", "/") or parts.query or parts.fragment:
        raise SettingsError(f"{name}={raw!r} is not a valid upstream URL: a path is not allowed")
    if parts.username or parts.password:
        raise SettingsError(f"{name}={raw!r} is not a valid upstream URL: credentials in URL")
    host = parts.hostname if ":" not in parts.hostname else f"[{parts.hostname}]"
    return f"{parts.scheme}://{host}" + (f":{port}" if port is not None else "")


def _normalise_prefix(raw: str) -> str:
    if not isinstance(raw, str) or not raw.startswith("/") or "//" in raw:
        raise SettingsError(f"route prefix {raw!r} must start with '/' and have no empty segment")
    return raw.rstrip("/") or "/"


def parse_targets(name: str, raw: str) -> tuple[model.TargetSpec, ...]:
    """``url[;weight=N][;resolve][, url[;weight=N][;resolve] ...]`` -> targets, validated.

    ``resolve`` makes the entry stand for every address of its host name (DNS discovery):
    so the host must be a name, not an address."""
    targets = []
    for item in (part.strip() for part in str(raw).split(",")):
        if not item:
            raise SettingsError(f"{name}={raw!r} is not valid: an empty target in the list")
        url, *options = (piece.strip() for piece in item.split(";"))
        weight, resolve = 1, False
        for option in options:
            key, _, value = option.partition("=")
            if key.strip() == "resolve" and not value:
                resolve = True
            elif key.strip() == "weight":
                weight = _parse("positive_int", f"{name} weight", value)
            else:
                raise SettingsError(f"{name}={raw!r} is not valid: unknown option {option!r}")
        spec = model.TargetSpec(url=parse_upstream_url(name, url), weight=weight, resolve=resolve)
        if resolve and _is_address(spec.host):
            raise SettingsError(
                f"{name}={raw!r} is not valid: resolve needs a host name, not an address"
            )
        targets.append(spec)
    return tuple(targets)


def _is_address(host: str) -> bool:
    try:
        ip_address(host)
    except ValueError:
        return False
    return True


def _env_prefix(url_env: str) -> str:
    return url_env.removesuffix("_URL")


def _upstream_values(
    table: str, item: Mapping[str, Any], label: str, env: Mapping[str, str], prefix: str
) -> dict[str, Any]:
    """The per-upstream settings of ``table``: ``<PREFIX><suffix>`` wins over the TOML."""
    values: dict[str, Any] = {}
    for variable in (v for v in model.VARIABLES if v.section == table):
        var = variable.name.format(PREFIX=prefix)
        if var in env:
            raw, name = env[var], var
        else:
            raw, name = item.get(variable.key), f"{label}.{variable.key}"
        if raw is not None:
            values[variable.key] = _parse(variable.kind, name, raw)
    return values


def _hash_needs_hash(
    own: Mapping[str, Any], item: Mapping[str, Any], env: Mapping[str, str], prefix: str, name: str
) -> None:
    """``HASH_ON`` and ``HASH_BALANCE_FACTOR`` mean something only with ``BALANCE=hash``:
    given without it, they are a mistake (the operator believes requests are hashed)."""
    if own.get("balance") == "hash":
        return
    for key, suffix in (("hash_on", "HASH_ON"), ("hash_balance_factor", "HASH_BALANCE_FACTOR")):
        var = f"{prefix}_{suffix}"
        if var in env or key in item:
            given = var if var in env else f"{name}.{key}"
            raise SettingsError(
                f"{given} is set but {prefix}_BALANCE is {own.get('balance', 'least_request')!r}"
                ": it needs BALANCE=hash"
            )


def _upstreams(
    table: list[Mapping[str, Any]], env: Mapping[str, str]
) -> tuple[model.Upstream, ...]:
    upstreams = []
    for position, item in enumerate(table, 1):
        label = f"[[upstreams]] #{position}"
        for key in ("name", "url_env", "url", "stats_key"):
            shapes.string(item, key, label)
        url_env, name = str(item["url_env"]), str(item["name"])
        prefix = _env_prefix(url_env)
        own = _upstream_values("upstream", item, name, env, prefix)
        _hash_needs_hash(own, item, env, prefix, name)
        passive = _upstream_values("passive", item, name, env, prefix)
        health = shapes.table(item, "health", f"[[upstreams]] {name!r} health")
        active = _upstream_values("active", health, f"{name}.health", env, prefix)
        upstreams.append(
            model.Upstream(
                name=name,
                url_env=url_env,
                targets=parse_targets(url_env, env.get(url_env, item["url"])),
                stats_key=item.get("stats_key"),
                passive=model.PassiveHealth(**passive),
                active=model.ActiveHealth(**active) if active.get("path") else None,
                **own,
            )
        )
    names = [u.name for u in upstreams]
    if len(set(names)) != len(names):
        raise SettingsError(f"upstream names must be unique, got {names}")
    return tuple(upstreams)


def _routes(table: list[Mapping[str, Any]], names: set[str]) -> tuple[model.Route, ...]:
    parsed = []
    try:
        for position, item in enumerate(table, 1):
            shapes.string(item, "upstream", f"[[routes]] #{position}")
            prefix = _normalise_prefix(item["prefix"])
            label = f"[[routes]] #{position} ({prefix})"
            redirect_bare = _parse(
                "bool", f"{label} redirect_bare", item.get("redirect_bare", False)
            )
            upstream, backends = destination(item, label, names)
            match = parse_match(item.get("match"), label)
            route = model.Route(
                prefix=prefix, upstream=upstream, backends=backends, match=match,
                redirect_bare=redirect_bare,
            )  # fmt: skip
            parsed.append(route)
    except RouteError as exc:
        raise SettingsError(str(exc)) from None
    if not any(r.prefix == "/" and r.match is None for r in parsed):
        raise SettingsError("the routing table needs a catch-all route with prefix '/'")
    # In the order they are tried: the longest prefix first, matches first within a prefix.
    return in_precedence(parsed)


def load_settings(
    env: Mapping[str, str] | None = None,
    defaults_file: Path | None = None,
    *,
    text: str | None = None,
) -> model.Settings:
    """Read the defaults file, apply the environment, validate everything once.

    ``text``: the file's content, already read (a reload validates exactly the bytes it
    publishes). Without it, a worker process takes the text its main process started with
    (the file :data:`STARTUP_FILE_ENV` names, set by ``service.reload``), so that every
    process of a host lays out the shared block alike even when the file has changed since.
    """
    env = os.environ if env is None else env
    path = Path(env.get(CONFIG_ENV, "") or defaults_file or DEFAULTS_FILE)
    read_from = Path(env.get(STARTUP_FILE_ENV, "") or path)
    try:
        if text is None:
            text = read_from.read_text(encoding="utf-8")
        document = tomllib.loads(text)
    except OSError as exc:
        raise SettingsError(
            f"{CONFIG_ENV}: cannot read {str(read_from)!r}: {exc.strerror}"
        ) from None
    except UnicodeDecodeError:
        raise SettingsError(f"{CONFIG_ENV}: {str(read_from)!r} is not UTF-8 text") from None
    except tomllib.TOMLDecodeError as exc:
        raise SettingsError(f"{CONFIG_ENV}: {str(path)!r} is not valid TOML: {exc}") from None

    values: dict[str, dict[str, Any]] = {"server": {}, **{s: {} for s in SECTIONS}}
    try:
        tables = {section: shapes.table(document, section, f"[{section}]") for section in values}
        upstream_tables = shapes.tables(document, "upstreams", "[[upstreams]]")
        route_tables = shapes.tables(document, "routes", "[[routes]]")
        for var, section, key, kind, _ in model.VARIABLES:
            if section in model.PER_UPSTREAM:
                continue
            if var in env:
                values[section][key] = _parse(kind, var, env[var])
            elif key in tables[section]:
                values[section][key] = _parse(kind, f"[{section}] {key}", tables[section][key])
        upstreams = _upstreams(upstream_tables, env)
        routes = _routes(route_tables, {u.name for u in upstreams})
    except shapes.ShapeError as exc:
        raise SettingsError(f"{CONFIG_ENV}: {str(path)!r}: {exc}") from None
    except KeyError as exc:
        raise SettingsError(f"{str(path)!r}: an upstream or route lacks {exc}") from None
    limits = _limits(document.get("limits", []), values["admission"], upstreams)
    settings = model.Settings(
        **values["server"],
        **{section: model(**values[section]) for section, model in SECTIONS.items()},
        upstreams=upstreams,
        routes=routes,
        limits=limits,
        source=model.ConfigSource(path=str(path), text=text),
    )
    _check_proxy_protocol(settings)
    return settings


def _check_proxy_protocol(settings: model.Settings) -> None:
    """The PROXY protocol is taken only from trusted proxies: on without any is a mistake
    (every client would be plain HTTP, and the balancer's headers 400s)."""
    if settings.frontdoor.proxy_protocol and not settings.admission.trusted_proxies:
        raise SettingsError(
            "LB_PROXY_PROTOCOL=true needs LB_TRUSTED_PROXIES: the networks of the balancers "
            "that send the header (only they are believed)"
        )


def _limits(
    table: Any, admission: dict[str, Any], upstreams: tuple[model.Upstream, ...]
) -> tuple[model.LimitSpec, ...]:
    """The ``[[limits]]`` tables; and ``LB_RATE_LIMIT``'s limit (in ``admission``) made to
    cover every proxied route and ``/stats``, now that the routes are known."""
    names = [u.name for u in upstreams]
    shorthand = admission.get("rate_limit")
    if shorthand is not None:
        admission["rate_limit"] = with_stats(shorthand, names)
    try:
        return parse_limits(table, names, taken=[shorthand.name] if shorthand else [])
    except LimitError as exc:
        raise SettingsError(str(exc)) from None
