"""The typed settings model: every setting, its default, its variable and its meaning, once.

Defaults live here and nowhere else (``config/defaults.toml`` holds the deployment's
upstreams and routes, and may override any scalar). Each scalar field carries its
environment variable, its kind (how ``service.settings.loading`` parses it) and a one-line
meaning, so that the loader, the error messages and any generated help read one source.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


def setting(default: Any, *, env: str, kind: str, meaning: str) -> Any:
    """A scalar setting: ``env`` overrides it, ``kind`` is its parser's name."""
    return field(default=default, metadata={"env": env, "kind": kind, "meaning": meaning})


def per_upstream(default: Any, *, suffix: str, kind: str, meaning: str) -> Any:
    """A setting of each upstream: overridden by ``<PREFIX><suffix>``, where PREFIX is the
    upstream's URL variable without ``_URL`` (``API_GATEWAY_MAX_FAILS``)."""
    return field(default=default, metadata={"suffix": suffix, "kind": kind, "meaning": meaning})


@dataclass(frozen=True, kw_only=True)
class TargetSpec:
    """One instance of an upstream: ``scheme://host[:port]`` and its relative weight."""

    url: str
    weight: int = 1


@dataclass(frozen=True, kw_only=True)
class PassiveHealth:
    """nginx's ``max_fails``/``fail_timeout``, with Envoy's growing ejection."""

    max_fails: int = per_upstream(
        1, suffix="_MAX_FAILS", kind="positive_int",
        meaning="failures within fail_timeout that eject a target",
    )  # fmt: skip
    fail_timeout: float = per_upstream(
        10.0, suffix="_FAIL_TIMEOUT", kind="seconds",
        meaning="window for counting failures, and the first ejection's length",
    )  # fmt: skip
    max_ejection: float = per_upstream(
        300.0, suffix="_MAX_EJECTION", kind="seconds",
        meaning="longest ejection (each repeated ejection doubles)",
    )  # fmt: skip


@dataclass(frozen=True, kw_only=True)
class ActiveHealth:
    path: str = per_upstream(
        "", suffix="_HEALTH_PATH", kind="path", meaning="path of the active check; unset: none"
    )
    interval: float = per_upstream(
        5.0, suffix="_HEALTH_INTERVAL", kind="seconds", meaning="seconds between checks"
    )
    timeout: float = per_upstream(
        2.0, suffix="_HEALTH_TIMEOUT", kind="seconds", meaning="seconds one check may take"
    )
    healthy_threshold: int = per_upstream(
        2, suffix="_HEALTH_HEALTHY_THRESHOLD", kind="positive_int",
        meaning="passing checks in a row that bring a target back",
    )  # fmt: skip
    unhealthy_threshold: int = per_upstream(
        2, suffix="_HEALTH_UNHEALTHY_THRESHOLD", kind="positive_int",
        meaning="failing checks in a row that take a target out",
    )  # fmt: skip


BALANCERS = ("least_request", "round_robin")


@dataclass(frozen=True, kw_only=True)
class Upstream:
    name: str
    url_env: str
    targets: tuple[TargetSpec, ...]
    stats_key: str | None = None
    balance: str = per_upstream(
        "least_request", suffix="_BALANCE", kind="balance",
        meaning="least_request (P2C) or round_robin",
    )  # fmt: skip
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
    connect_timeout: float = setting(
        2.0, env="LB_CONNECT_TIMEOUT", kind="seconds",
        meaning="seconds to connect to an upstream",
    )  # fmt: skip
    read_timeout: float = setting(
        30.0, env="LB_READ_TIMEOUT", kind="seconds",
        meaning="seconds between bytes from an upstream before a 504",
    )  # fmt: skip
    keep_host: bool = setting(
        True, env="LB_KEEP_HOST", kind="bool",
        meaning="forward the client's Host header unchanged",
    )  # fmt: skip
    max_body_size: int = setting(
        8 * 1024**3, env="LB_MAX_BODY_SIZE", kind="size",
        meaning="largest request body in bytes (0: no limit)",
    )  # fmt: skip
    max_connections: int = setting(
        256, env="LB_MAX_CONNECTIONS", kind="positive_int",
        meaning="connections per upstream per worker",
    )  # fmt: skip
    max_keepalive: int = setting(
        64, env="LB_MAX_KEEPALIVE", kind="size",
        meaning="idle keep-alive connections kept per upstream per worker",
    )  # fmt: skip
    keepalive_expiry: float = setting(
        30.0, env="LB_KEEPALIVE_EXPIRY", kind="seconds",
        meaning="seconds an idle upstream connection is kept",
    )  # fmt: skip
    websocket_idle_timeout: float = setting(
        300.0, env="LB_WS_TUNNEL_IDLE_TIMEOUT", kind="seconds",
        meaning="seconds a proxied WebSocket may be silent",
    )  # fmt: skip


@dataclass(frozen=True, kw_only=True)
class StatsSettings:
    timeout: float = setting(
        2.0, env="LB_STATS_TIMEOUT", kind="seconds",
        meaning="seconds for each upstream's /stats answer",
    )  # fmt: skip
    cache_ttl: float = setting(
        1.0, env="LB_STATS_CACHE_TTL", kind="size_seconds",
        meaning="seconds the upstream part of /stats is reused (0: never)",
    )  # fmt: skip
    max_payload: int = setting(
        1024 * 1024, env="LB_STATS_MAX_PAYLOAD", kind="positive_int",
        meaning="largest upstream /stats answer in bytes",
    )  # fmt: skip


@dataclass(frozen=True, kw_only=True)
class HeartbeatSettings:
    ping_interval: float = setting(
        5.0, env="LB_WS_PING_INTERVAL", kind="seconds",
        meaning="seconds between the heartbeat socket's pings",
    )  # fmt: skip
    idle_timeout: float = setting(
        30.0, env="LB_WS_IDLE_TIMEOUT", kind="seconds",
        meaning="seconds of silence before a heartbeat socket is closed",
    )  # fmt: skip


@dataclass(frozen=True, kw_only=True)
class Settings:
    port: int = setting(7100, env="LB_PORT", kind="port", meaning="listening port")
    workers: int = setting(
        1, env="LB_WORKERS", kind="positive_int",
        meaning="worker processes (python -m service)",
    )  # fmt: skip
    proxy: ProxySettings = field(default_factory=ProxySettings, metadata={"section": "proxy"})
    stats: StatsSettings = field(default_factory=StatsSettings, metadata={"section": "stats"})
    heartbeat: HeartbeatSettings = field(
        default_factory=HeartbeatSettings, metadata={"section": "heartbeat"}
    )
    upstreams: tuple[Upstream, ...] = ()
    routes: tuple[Route, ...] = ()

    def upstream(self, name: str) -> Upstream:
        for upstream in self.upstreams:
            if upstream.name == name:
                return upstream
        raise KeyError(name)
