"""Configuration: read once at start-up into one immutable, typed value.

The declarative defaults live in ``config/defaults.toml``; the environment overrides them.
Every value is validated here so that nothing downstream re-reads or re-checks it, and a
bad value stops start-up with a :class:`SettingsError` naming the variable and the value.
"""

from __future__ import annotations

import math
import os
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

DEFAULTS_FILE = Path(__file__).resolve().parent.parent / "config" / "defaults.toml"
CONFIG_ENV = "LB_CONFIG"


class SettingsError(ValueError):
    """A setting that cannot be used; the message names the variable and the value."""


@dataclass(frozen=True, kw_only=True)
class TargetSpec:
    """One instance of an upstream: ``scheme://host[:port]`` and its relative weight."""

    url: str
    weight: int = 1


@dataclass(frozen=True, kw_only=True)
class PassiveHealth:
    """nginx's ``max_fails``/``fail_timeout``, with Envoy's growing ejection."""

    max_fails: int = 1
    fail_timeout: float = 10.0  # window for counting failures, and the first ejection's length
    max_ejection: float = 300.0


@dataclass(frozen=True, kw_only=True)
class ActiveHealth:
    path: str
    interval: float = 5.0
    timeout: float = 2.0
    healthy_threshold: int = 2
    unhealthy_threshold: int = 2


BALANCERS = ("least_request", "round_robin")


@dataclass(frozen=True, kw_only=True)
class Upstream:
    name: str
    url_env: str
    targets: tuple[TargetSpec, ...]
    stats_key: str | None = None
    balance: str = "least_request"
    passive: PassiveHealth = field(default_factory=PassiveHealth)
    active: ActiveHealth | None = None

    @property
    def url(self) -> str:
        """The first target's URL (the only one, for a single-target upstream)."""
        return self.targets[0].url


@dataclass(frozen=True, kw_only=True)
class Route:
    prefix: str  # "/" or "/segment[/segment...]" without a trailing slash
    upstream: str
    redirect_bare: bool = False


@dataclass(frozen=True, kw_only=True)
class ProxySettings:
    connect_timeout: float = 2.0
    read_timeout: float = 30.0
    keep_host: bool = True
    max_body_size: int = 8 * 1024**3
    max_connections: int = 256
    max_keepalive: int = 64
    keepalive_expiry: float = 30.0
    websocket_idle_timeout: float = 300.0


@dataclass(frozen=True, kw_only=True)
class StatsSettings:
    timeout: float = 2.0
    cache_ttl: float = 1.0
    max_payload: int = 1024 * 1024


@dataclass(frozen=True, kw_only=True)
class HeartbeatSettings:
    ping_interval: float = 5.0
    idle_timeout: float = 30.0


@dataclass(frozen=True, kw_only=True)
class Settings:
    port: int = 7100
    workers: int = 1
    proxy: ProxySettings = field(default_factory=ProxySettings)
    stats: StatsSettings = field(default_factory=StatsSettings)
    heartbeat: HeartbeatSettings = field(default_factory=HeartbeatSettings)
    upstreams: tuple[Upstream, ...] = ()
    routes: tuple[Route, ...] = ()

    def upstream(self, name: str) -> Upstream:
        for upstream in self.upstreams:
            if upstream.name == name:
                return upstream
        raise KeyError(name)


# (section, key, environment variable, parser) for every scalar setting.
_SCALARS: tuple[tuple[str, str, str, str], ...] = (
    ("server", "port", "LB_PORT", "port"),
    ("server", "workers", "LB_WORKERS", "positive_int"),
    ("proxy", "connect_timeout", "LB_CONNECT_TIMEOUT", "seconds"),
    ("proxy", "read_timeout", "LB_READ_TIMEOUT", "seconds"),
    ("proxy", "keep_host", "LB_KEEP_HOST", "bool"),
    ("proxy", "max_body_size", "LB_MAX_BODY_SIZE", "size"),
    ("proxy", "max_connections", "LB_MAX_CONNECTIONS", "positive_int"),
    ("proxy", "max_keepalive", "LB_MAX_KEEPALIVE", "size"),
    ("proxy", "keepalive_expiry", "LB_KEEPALIVE_EXPIRY", "seconds"),
    ("proxy", "websocket_idle_timeout", "LB_WS_TUNNEL_IDLE_TIMEOUT", "seconds"),
    ("stats", "timeout", "LB_STATS_TIMEOUT", "seconds"),
    ("stats", "cache_ttl", "LB_STATS_CACHE_TTL", "size_seconds"),
    ("stats", "max_payload", "LB_STATS_MAX_PAYLOAD", "positive_int"),
    ("heartbeat", "ping_interval", "LB_WS_PING_INTERVAL", "seconds"),
    ("heartbeat", "idle_timeout", "LB_WS_IDLE_TIMEOUT", "seconds"),
)

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}


def _parse(kind: str, name: str, raw: Any) -> Any:
    """Turn one raw value (TOML value or environment string) into its typed form."""
    text = str(raw).strip()
    try:
        if kind == "bool":
            if isinstance(raw, bool):
                return raw
            if text.lower() in _TRUE | _FALSE:
                return text.lower() in _TRUE
            raise ValueError
        if kind in ("port", "positive_int", "size"):
            if isinstance(raw, bool):
                raise ValueError
            value = int(text)
            low = {"port": 1, "positive_int": 1, "size": 0}[kind]
            if value < low or (kind == "port" and value > 65535):
                raise ValueError
            return value
        value = float(text)
        if math.isnan(value) or math.isinf(value):
            raise ValueError
        if value < 0 or (kind == "seconds" and value == 0):
            raise ValueError
        return value
    except ValueError:
        expected = {
            "bool": "true or false",
            "port": "a port number from 1 to 65535",
            "positive_int": "a whole number of at least 1",
            "size": "a whole number of at least 0",
            "seconds": "a number of seconds greater than 0",
            "size_seconds": "a number of seconds of at least 0",
        }[kind]
        raise SettingsError(f"{name}={raw!r} is not valid: expected {expected}") from None


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


def parse_targets(name: str, raw: str) -> tuple[TargetSpec, ...]:
    """``url[;weight=N][, url[;weight=N] ...]`` -> targets, validated."""
    targets = []
    for item in (part.strip() for part in str(raw).split(",")):
        if not item:
            raise SettingsError(f"{name}={raw!r} is not valid: an empty target in the list")
        url, *options = (piece.strip() for piece in item.split(";"))
        weight = 1
        for option in options:
            key, _, value = option.partition("=")
            if key.strip() != "weight":
                raise SettingsError(f"{name}={raw!r} is not valid: unknown option {option!r}")
            weight = _parse("positive_int", f"{name} weight", value)
        targets.append(TargetSpec(url=parse_upstream_url(name, url), weight=weight))
    return tuple(targets)


def _env_prefix(url_env: str) -> str:
    return url_env.removesuffix("_URL")


def _passive(item: Mapping[str, Any], env: Mapping[str, str], prefix: str) -> PassiveHealth:
    values = {}
    for key, kind in (
        ("max_fails", "positive_int"),
        ("fail_timeout", "seconds"),
        ("max_ejection", "seconds"),
    ):
        var = f"{prefix}_{key.upper()}"
        if var in env:
            values[key] = _parse(kind, var, env[var])
        elif key in item:
            values[key] = _parse(kind, f"{item['name']}.{key}", item[key])
    return PassiveHealth(**values)


def _active(item: Mapping[str, Any], env: Mapping[str, str], prefix: str) -> ActiveHealth | None:
    table = dict(item.get("health", {}))
    kinds = {
        "path": "path",
        "interval": "seconds",
        "timeout": "seconds",
        "healthy_threshold": "positive_int",
        "unhealthy_threshold": "positive_int",
    }
    values: dict[str, Any] = {}
    for key, kind in kinds.items():
        var = f"{prefix}_HEALTH_{key.upper()}"
        raw, label = (
            (env[var], var) if var in env else (table.get(key), f"{item['name']}.health.{key}")
        )
        if raw is None:
            continue
        if kind == "path":
            if not str(raw).startswith("/"):
                raise SettingsError(
                    f"{label}={raw!r} is not valid: expected a path starting with '/'"
                )
            values[key] = str(raw)
        else:
            values[key] = _parse(kind, label, raw)
    if not values.get("path"):
        return None
    return ActiveHealth(**values)


def _upstreams(table: list[Mapping[str, Any]], env: Mapping[str, str]) -> tuple[Upstream, ...]:
    upstreams = []
    for item in table:
        url_env = str(item["url_env"])
        prefix = _env_prefix(url_env)
        balance_var = f"{prefix}_BALANCE"
        balance = str(env.get(balance_var, item.get("balance", "least_request")))
        if balance not in BALANCERS:
            raise SettingsError(
                f"{balance_var}={balance!r} is not valid: expected one of {BALANCERS}"
            )
        upstreams.append(
            Upstream(
                name=str(item["name"]),
                url_env=url_env,
                targets=parse_targets(url_env, env.get(url_env, item["url"])),
                stats_key=item.get("stats_key"),
                balance=balance,
                passive=_passive(item, env, prefix),
                active=_active(item, env, prefix),
            )
        )
    names = [u.name for u in upstreams]
    if len(set(names)) != len(names):
        raise SettingsError(f"upstream names must be unique, got {names}")
    return tuple(upstreams)


def _routes(table: list[Mapping[str, Any]], names: set[str]) -> tuple[Route, ...]:
    routes = []
    for item in table:
        route = Route(
            prefix=_normalise_prefix(item["prefix"]),
            upstream=str(item["upstream"]),
            redirect_bare=bool(item.get("redirect_bare", False)),
        )
        if route.upstream not in names:
            raise SettingsError(f"route {route.prefix!r} names unknown upstream {route.upstream!r}")
        routes.append(route)
    if not any(r.prefix == "/" for r in routes):
        raise SettingsError("the routing table needs a catch-all route with prefix '/'")
    # Longest prefix first, so the first match is the most specific one.
    return tuple(sorted(routes, key=lambda r: len(r.prefix), reverse=True))


def load_settings(
    env: Mapping[str, str] | None = None, defaults_file: Path | None = None
) -> Settings:
    """Read the defaults file, apply the environment, validate everything once."""
    env = os.environ if env is None else env
    path = Path(env.get(CONFIG_ENV, "") or defaults_file or DEFAULTS_FILE)
    try:
        document = tomllib.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise SettingsError(f"{CONFIG_ENV}: cannot read {str(path)!r}: {exc.strerror}") from None
    except tomllib.TOMLDecodeError as exc:
        raise SettingsError(f"{CONFIG_ENV}: {str(path)!r} is not valid TOML: {exc}") from None

    values: dict[str, dict[str, Any]] = {"server": {}, "proxy": {}, "stats": {}, "heartbeat": {}}
    for section, key, var, kind in _SCALARS:
        if var in env:
            values[section][key] = _parse(kind, var, env[var])
        elif key in document.get(section, {}):
            values[section][key] = _parse(kind, f"[{section}] {key}", document[section][key])

    try:
        upstreams = _upstreams(document.get("upstreams", []), env)
        routes = _routes(document.get("routes", []), {u.name for u in upstreams})
    except KeyError as exc:
        raise SettingsError(f"{str(path)!r}: an upstream or route lacks {exc}") from None
    return Settings(
        **values["server"],
        proxy=ProxySettings(**values["proxy"]),
        stats=StatsSettings(**values["stats"]),
        heartbeat=HeartbeatSettings(**values["heartbeat"]),
        upstreams=upstreams,
        routes=routes,
    )
