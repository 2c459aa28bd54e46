"""The typed settings model: every setting, its default, its variable and its meaning, once.

Defaults live in the dataclasses below and nowhere else (``config/defaults.toml`` holds the
deployment's upstreams and routes, and may override any scalar). :data:`VARIABLES` names
the environment variable of every field, its kind (how
``service.settings.loading`` parses it) and its meaning, so that the loader, its error
messages and any generated help read one source.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from functools import cached_property
from ipaddress import IPv4Network, IPv6Network, ip_network
from typing import NamedTuple
from urllib.parse import urlsplit


@dataclass(frozen=True, kw_only=True)
class TargetSpec:
    """One instance of an upstream: ``scheme://host[:port]`` and its relative weight.

    ``resolve``: the entry stands for every address its host name resolves to (DNS
    discovery, ``service.discovery``), each one a target with this weight and port.
    """

    url: str
    weight: int = 1
    resolve: bool = False

    @property
    def host(self) -> str:
        """The host name of ``url`` (what a ``resolve`` entry looks up)."""
        return urlsplit(self.url).hostname or ""


@dataclass(frozen=True, kw_only=True)
class PassiveHealth:
    """nginx's ``max_fails``/``fail_timeout``, with Envoy's growing ejection and its
    ``max_ejection_percent``.

    A failure is the load balancer not getting an answer (refused, reset, timed out, broken
    or malformed), judged where it happens. An answer of any status is the target answering,
    unless the operator names it in ``fail_statuses``: a gateway's 502 usually says that
    something *behind* it failed, and counting it would eject a healthy gateway.
    """

    max_fails: int = 1
    fail_timeout: float = 10.0
    max_ejection: float = 300.0
    fail_statuses: frozenset[int] = frozenset()
    max_ejection_percent: int = 50


@dataclass(frozen=True, kw_only=True)
class ActiveHealth:
    path: str = ""
    interval: float = 5.0
    timeout: float = 2.0
    healthy_threshold: int = 2
    unhealthy_threshold: int = 2


BALANCERS = ("least_request", "round_robin", "hash")
LOG_FORMATS = ("text", "json")
UNDERSCORES = ("drop", "pass", "reject")


@dataclass(frozen=True, kw_only=True)
class Upstream:
    name: str
    url_env: str
    targets: tuple[TargetSpec, ...]
    stats_key: str | None = None
    balance: str = "least_request"
    passive: PassiveHealth = field(default_factory=PassiveHealth)
    active: ActiveHealth | None = None
    # requests in flight to the pool across the host's workers above which a request gets
    # 503 at once (Envoy's circuit breaker); 0: no limit (service.admission)
    max_requests: int = 0
    # rollouts and affinity (docs/pools.md): the ramp of a target that joins while serving,
    # the retries, and what keeps a client on one target
    slow_start: float = 0.0  # seconds; 0: off
    retries: int = 1  # after the first attempt
    retry_backoff: float = 0.025  # seconds: the base of the full-jitter wait; 0: at once
    retry_budget: int = 20  # retries in percent of the pool's requests of the last 10 s
    hash_on: str = "client"  # with balance "hash": "client", "header:NAME" or "cookie:NAME"
    hash_balance_factor: int = 0  # in percent of the mean requests in flight; 0: off
    sticky_cookie: str = ""  # a cookie name; "": off

    @property
    def url(self) -> str:
        """The first target's URL (the only one, for a single-target upstream)."""
        return self.targets[0].url

    @property
    def static_targets(self) -> tuple[TargetSpec, ...]:
        """The targets named as they are (not ``resolve`` entries): the pool's start."""
        return tuple(t for t in self.targets if not t.resolve)

    @property
    def resolved_entries(self) -> tuple[TargetSpec, ...]:
        """The ``resolve`` entries, whose targets come from DNS while serving."""
        return tuple(t for t in self.targets if t.resolve)


# The methods the proxy serves (``blueprints/proxy.py``), and so the ones a route may match.
PROXIED_METHODS = ("GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS")
MATCH_KEYS = ("headers", "cookies", "query", "methods")


@dataclass(frozen=True, kw_only=True)
class RouteMatch:
    """What a request must carry for a route to take it (Gateway API's ``HTTPRouteMatch``):
    every condition holds. Header names are kept lower-case (they match whatever the case);
    values, cookies and query parameters match exactly."""

    headers: tuple[tuple[str, str], ...] = ()
    cookies: tuple[tuple[str, str], ...] = ()
    query: tuple[tuple[str, str], ...] = ()
    methods: tuple[str, ...] = ()

    @property
    def conditions(self) -> int:
        """How specific the match is: one per header, cookie and query parameter, one for
        the methods (for one prefix, the route with more conditions is tried first)."""
        return len(self.headers) + len(self.cookies) + len(self.query) + bool(self.methods)

    def document(self) -> dict[str, object]:
        """As ``/stats`` shows it: the keys that are set, as tables (methods: a list)."""
        shown: dict[str, object] = {}
        for key in ("headers", "cookies", "query"):
            if pairs := getattr(self, key):
                shown[key] = dict(pairs)
        if self.methods:
            shown["methods"] = list(self.methods)
        return shown

    @property
    def text(self) -> str:
        """One short line: ``headers x-canary=always, methods GET|HEAD``."""
        parts = [
            f"{key} " + " ".join(f"{name}={value}" for name, value in getattr(self, key))
            for key in ("headers", "cookies", "query")
            if getattr(self, key)
        ]
        if self.methods:
            parts.append("methods " + "|".join(self.methods))
        return ", ".join(parts)


@dataclass(frozen=True, kw_only=True)
class Backend:
    """One upstream of a route's ``backends``, and its share: ``weight`` of the weights'
    sum (``0``: none, a drained canary)."""

    upstream: str
    weight: int = 1


@dataclass(frozen=True, kw_only=True)
class Route:
    """One ``[[routes]]`` table: a path prefix, an optional ``match``, and where it sends
    requests: one ``upstream``, or ``backends`` split by weight (never both)."""

    prefix: str  # "/" or "/segment[/segment...]" without a trailing slash
    upstream: str = ""
    redirect_bare: bool = False
    match: RouteMatch | None = None
    backends: tuple[Backend, ...] = ()

    @property
    def choices(self) -> tuple[Backend, ...]:
        """Where the route sends requests: its backends, or its one upstream (weight 1)."""
        return self.backends or (Backend(upstream=self.upstream, weight=1),)

    @property
    def label(self) -> str:
        """How a log line or a message names the route: its prefix, and its match if any."""
        return self.prefix + (f" [{self.match.text}]" if self.match is not None else "")


@dataclass(frozen=True, kw_only=True)
class ProxySettings:
    """How the proxy talks to upstreams: timeouts, body limit, connection pools."""

    connect_timeout: float = 2.0
    read_timeout: float = 30.0
    keep_host: bool = True
    max_body_size: int = 8 * 1024**3
    max_connections: int = 256
    max_keepalive: int = 64
    keepalive_expiry: float = 30.0
    websocket_idle_timeout: float = 300.0

    @cached_property
    def timeouts(self) -> dict[str, float]:
        """httpx's ``timeout`` extension for every upstream request, made once (read-only)."""
        return {
            "connect": self.connect_timeout,
            "read": self.read_timeout,
            "write": self.read_timeout,
            "pool": self.connect_timeout,
        }


@dataclass(frozen=True, kw_only=True)
class StatsSettings:
    """The ``/stats`` fan-out: each service's deadline and size cap, and answer reuse."""

    timeout: float = 2.0
    # 0: every /stats asks the services afresh (concurrent calls still share one fan-out);
    # an operator may turn reuse on, at the price of showing a state up to this many s old
    cache_ttl: float = 0.0
    max_payload: int = 1024 * 1024


@dataclass(frozen=True, kw_only=True)
class HeartbeatSettings:
    """The heartbeat socket (``/api/ws-heartbeat``): its pings and its idle close."""

    ping_interval: float = 5.0
    idle_timeout: float = 30.0


@dataclass(frozen=True, kw_only=True)
class AdminSettings:
    """Who may read the operator's pages (``/metrics``, ``/lb-status``): client networks.

    The default is loopback only. Private ranges are not a safe default: behind Docker's
    userland proxy or a Kubernetes Service with ``externalTrafficPolicy: Cluster`` the
    internet's clients arrive from a private address, so "private" does not mean "inside".
    A scraper or an operator elsewhere is let in by naming its network.
    """

    allow: tuple[IPv4Network | IPv6Network, ...] = (
        ip_network("127.0.0.0/8"),
        ip_network("::1/128"),
    )


@dataclass(frozen=True, kw_only=True)
class ClusterSettings:
    """Figures shared across replicas through Redis; ``redis_url`` empty: this host only."""

    redis_url: str = ""
    name: str = "load-balancer"
    publish_interval: float = 0.25
    timeout: float = 0.5
    retention: float = 60.0


@dataclass(frozen=True, kw_only=True)
class FrontDoorSettings:
    """The client side: how long a request head may take, how many connections a worker
    holds, and how long a graceful shutdown keeps serving while readiness says 503; and how
    long a worker's event loop may stall before it is replaced; and whether trusted proxies
    speak the PROXY protocol."""

    header_timeout: float = 30.0
    max_client_connections: int = 4096
    drain_delay: float = 0.0
    worker_stall_timeout: float = 10.0
    # header names holding "_" (Transfer_Encoding): not forwarded ("drop", nginx's and
    # gunicorn's default), forwarded ("pass"), or the request refused with 400 ("reject")
    underscores_in_headers: str = "drop"
    # a connection from LB_TRUSTED_PROXIES starts with a PROXY protocol header naming the
    # client (service.frontdoor.proxy_protocol)
    proxy_protocol: bool = False


@dataclass(frozen=True, kw_only=True)
class ResolverSettings:
    """DNS discovery for ``;resolve`` targets (nginx's ``resolver``/``valid=``, Envoy's
    ``STRICT_DNS`` clusters). ``servers`` empty: the ``nameserver`` lines of
    /etc/resolv.conf (and its ``search``/``ndots``, as the system resolver would)."""

    servers: tuple[str, ...] = ()  # "ip" or "ip:port" / "[v6]:port"
    valid: float = 5.0
    timeout: float = 2.0
    max_targets: int = 32


@dataclass(frozen=True, kw_only=True)
class ConfigSource:
    """The TOML text the settings were loaded from, and its path: what a reload compares a
    file with (``service.reload``) and what a worker process starts from."""

    path: str
    text: str

    @cached_property
    def sha256(self) -> str:
        return hashlib.sha256(self.text.encode("utf-8")).hexdigest()


@dataclass(frozen=True, kw_only=True)
class TlsSettings:
    """TLS at the front door (a PEM certificate chain and its key, watched for rotation; an
    optional plain listener that redirects to https) and to ``https://`` upstreams (the CA
    bundle they are verified against, or an explicit opt-out). Empty paths: off / system CAs.
    The files themselves are checked by ``service.tls.check`` at start-up."""

    cert: str = ""
    key: str = ""
    http_redirect_port: int = 0  # 0: no plain listener
    upstream_ca: str = ""
    upstream_verify: bool = True

    @property
    def enabled(self) -> bool:
        return bool(self.cert or self.key)


SAMPLERS = (
    "always_on",
    "always_off",
    "traceidratio",
    "parentbased_always_on",
    "parentbased_always_off",
    "parentbased_traceidratio",
)


@dataclass(frozen=True, kw_only=True)
class TracingSettings:
    """Span export over OTLP/HTTP (``service.tracing``), read from the variables every
    OpenTelemetry SDK reads. No endpoint: trace context is still propagated, nothing is
    recorded or exported (and the exporter's code is never imported)."""

    endpoint: str = ""  # OTEL_EXPORTER_OTLP_ENDPOINT: the base, /v1/traces appended
    traces_endpoint: str = ""  # OTEL_EXPORTER_OTLP_TRACES_ENDPOINT: the URL as it is
    headers: tuple[tuple[str, str], ...] = ()
    service_name: str = "load-balancer"
    sampler: str = "parentbased_always_on"
    sampler_arg: float = 1.0  # the ratio of the *traceidratio samplers
    resource_attributes: tuple[tuple[str, str], ...] = ()

    @property
    def export_url(self) -> str:
        """Where spans are posted; "" when export is off. The signal's own variable wins;
        the base gets ``v1/traces`` appended to its path, as the specification says."""
        if self.traces_endpoint:
            return self.traces_endpoint
        if self.endpoint:
            return self.endpoint.rstrip("/") + "/v1/traces"
        return ""


LIMIT_KEYS = ("client", "header", "all")  # what a rate limit counts per ("header:<Name>")
STATS_ROUTE = "stats"  # the route name of GET /stats, for a limit's ``routes``


@dataclass(frozen=True, kw_only=True)
class LimitSpec:
    """One rate limit (a ``[[limits]]`` table, or ``LB_RATE_LIMIT``): ``count`` requests per
    ``period_s`` with a ``burst`` served at once (GCRA), counted per ``per``; it covers the
    requests of ``routes`` (route names: upstreams, and ``stats``; empty: every proxied
    route), ``methods`` (empty: any) and ``path_prefix`` (whole segments; empty: any)."""

    name: str
    count: float
    period_s: float  # 1.0 for N/s, 60.0 for N/min
    burst: int
    per: str = "client"  # "client", "header:<Name>" or "all"
    routes: tuple[str, ...] = ()
    methods: tuple[str, ...] = ()
    path_prefix: str = ""
    dry_run: bool = False
    # LB_RATE_LIMIT's: every proxied route and /stats, also routes a reload adds
    every_route: bool = False

    @property
    def rate(self) -> float:
        """Requests per second."""
        return self.count / self.period_s

    @property
    def rate_text(self) -> str:
        return f"{self.count:g}/{'s' if self.period_s == 1.0 else 'min'}"


@dataclass(frozen=True, kw_only=True)
class AdmissionSettings:
    """Who the client is behind trusted proxies, and what is admitted (service.admission).

    ``trusted_proxies`` empty: the client is the TCP peer, whatever ``X-Forwarded-For``
    says (the load balancer is the front door). ``rate_limit`` is ``LB_RATE_LIMIT``'s one
    per-client limit (named ``default``); ``[[limits]]`` tables are ``Settings.limits``.
    ``limit_keys`` sizes the shared table of rate-limit states, fixed at start-up.
    ``ipv6_client_prefix``: an IPv6 client counts as its /N network (a host is usually
    given a whole /64, and each of its 2^64 addresses would otherwise be a budget of its own).
    """

    trusted_proxies: tuple[IPv4Network | IPv6Network, ...] = ()
    ipv6_client_prefix: int = 64
    rate_limit: LimitSpec | None = None
    rate_limit_headers: bool = True
    max_client_requests: int = 0
    limit_keys: int = 16384


@dataclass(frozen=True, kw_only=True)
class Settings:
    """Everything, loaded once at start-up: the server, its sections, upstreams, routes.
    A reload (``service.reload``) loads a new one the same way and swaps it in whole."""

    upstreams: tuple[Upstream, ...] = ()
    routes: tuple[Route, ...] = ()
    port: int = 7100
    workers: int = 1
    host: str = "0.0.0.0"  # read by python -m service only; sanic's CLI takes --host
    access_log: bool = True
    log_format: str = "text"
    proxy: ProxySettings = field(default_factory=ProxySettings)
    stats: StatsSettings = field(default_factory=StatsSettings)
    heartbeat: HeartbeatSettings = field(default_factory=HeartbeatSettings)
    admin: AdminSettings = field(default_factory=AdminSettings)
    cluster: ClusterSettings = field(default_factory=ClusterSettings)
    frontdoor: FrontDoorSettings = field(default_factory=FrontDoorSettings)
    resolver: ResolverSettings = field(default_factory=ResolverSettings)
    tls: TlsSettings = field(default_factory=TlsSettings)
    admission: AdmissionSettings = field(default_factory=AdmissionSettings)
    tracing: TracingSettings = field(default_factory=TracingSettings)
    limits: tuple[LimitSpec, ...] = ()  # the [[limits]] tables of the TOML file
    config_watch: bool = False  # reload when the LB_CONFIG file's content changes
    source: ConfigSource | None = field(default=None, compare=False, repr=False)

    def upstream(self, name: str) -> Upstream:
        for upstream in self.upstreams:
            if upstream.name == name:
                return upstream
        raise KeyError(name)


class Variable(NamedTuple):
    """One setting's environment variable: ``name`` overrides the field ``key`` of the TOML
    section and model part ``section``. A per-upstream setting's name starts with
    ``{PREFIX}``, the upstream's URL variable without ``_URL`` (``API_GATEWAY_MAX_FAILS``),
    and its section is the upstream's own table, its passive or its active health."""

    name: str
    section: str
    key: str
    kind: str
    meaning: str


PER_UPSTREAM = ("upstream", "passive", "active")

# fmt: off
VARIABLES = (
    Variable("LB_PORT", "server", "port", "port", "listening port"),
    Variable("LB_WORKERS", "server", "workers", "positive_int", "worker processes (python -m service)"),
    Variable("LB_HOST", "server", "host", "host", "listening address (python -m service); must resolve"),
    Variable("LB_ACCESS_LOG", "server", "access_log", "bool", "one log line per request (client, method, path, route, target, status, bytes, duration, request id)"),
    Variable("LB_LOG_FORMAT", "server", "log_format", "log_format", "text (one readable line) or json (one object per line, for log shippers)"),
    Variable("LB_CONFIG_WATCH", "server", "config_watch", "bool", "reload when the content of the LB_CONFIG file changes (as SIGHUP does)"),
    Variable("LB_CONNECT_TIMEOUT", "proxy", "connect_timeout", "seconds", "seconds to connect to an upstream"),
    Variable("LB_READ_TIMEOUT", "proxy", "read_timeout", "seconds", "seconds between bytes from an upstream before a 504"),
    Variable("LB_KEEP_HOST", "proxy", "keep_host", "bool", "forward the client's Host header unchanged"),
    Variable("LB_MAX_BODY_SIZE", "proxy", "max_body_size", "size", "largest request body in bytes (0: no limit)"),
    Variable("LB_MAX_CONNECTIONS", "proxy", "max_connections", "positive_int", "connections per upstream per worker"),
    Variable("LB_MAX_KEEPALIVE", "proxy", "max_keepalive", "size", "idle keep-alive connections kept per upstream per worker"),
    Variable("LB_KEEPALIVE_EXPIRY", "proxy", "keepalive_expiry", "seconds", "seconds an idle upstream connection is kept"),
    Variable("LB_WS_TUNNEL_IDLE_TIMEOUT", "proxy", "websocket_idle_timeout", "seconds", "seconds a proxied WebSocket may be silent"),
    Variable("LB_STATS_TIMEOUT", "stats", "timeout", "seconds", "seconds for each upstream's /stats answer"),
    Variable("LB_STATS_CACHE_TTL", "stats", "cache_ttl", "size_seconds", "seconds an upstream /stats answer may be reused (0: never, every call asks afresh)"),
    Variable("LB_STATS_MAX_PAYLOAD", "stats", "max_payload", "positive_int", "largest upstream /stats answer in bytes"),
    Variable("LB_WS_PING_INTERVAL", "heartbeat", "ping_interval", "seconds", "seconds between the heartbeat socket's pings"),
    Variable("LB_WS_IDLE_TIMEOUT", "heartbeat", "idle_timeout", "seconds", "seconds of silence before a heartbeat socket is closed"),
    Variable("LB_ADMIN_ALLOW", "admin", "allow", "networks", "client networks (CIDR list, comma-separated) allowed /metrics and /lb-status; empty: nobody"),
    Variable("LB_CLUSTER_REDIS_URL", "cluster", "redis_url", "redis_url", "redis:// or rediss:// URL of the Redis every replica shares; unset: this host only"),
    Variable("LB_CLUSTER_NAME", "cluster", "name", "cluster_name", "key prefix in Redis, so several clusters can share one"),
    Variable("LB_CLUSTER_PUBLISH_INTERVAL", "cluster", "publish_interval", "publish_interval", "seconds between publications of this host's figures (at most 0.25)"),
    Variable("LB_CLUSTER_TIMEOUT", "cluster", "timeout", "seconds", "seconds one Redis round trip may take before the cluster is degraded"),
    Variable("LB_CLUSTER_RETENTION", "cluster", "retention", "seconds", "seconds a silent replica's keys are kept before its totals are folded in"),
    Variable("LB_HEADER_TIMEOUT", "frontdoor", "header_timeout", "seconds", "seconds a client may take to send a whole request head (then 408 and close)"),
    Variable("LB_MAX_CLIENT_CONNECTIONS", "frontdoor", "max_client_connections", "positive_int", "client connections per worker (above it: 503 and close)"),
    Variable("LB_PROXY_PROTOCOL", "frontdoor", "proxy_protocol", "bool", "true: a connection from LB_TRUSTED_PROXIES must begin with a PROXY protocol header (v1 or v2), whose source address is the client; other peers are plain HTTP"),
    Variable("LB_DRAIN_DELAY", "frontdoor", "drain_delay", "size_seconds", "seconds a graceful shutdown keeps accepting (readiness 503) before it stops listening"),
    Variable("LB_RESOLVER", "resolver", "servers", "resolvers", "DNS servers for ;resolve targets, comma-separated ip[:port]; unset: the nameserver lines of /etc/resolv.conf"),
    Variable("LB_RESOLVER_VALID", "resolver", "valid", "resolver_valid", "longest time in seconds a DNS answer is used before it is asked again (a lower record TTL wins; never below 1)"),
    Variable("LB_RESOLVER_TIMEOUT", "resolver", "timeout", "seconds", "seconds for one DNS lookup"),
    Variable("LB_RESOLVER_MAX_TARGETS", "resolver", "max_targets", "positive_int", "addresses kept per ;resolve entry (sizes the shared block; more are cut, sorted)"),
    Variable("LB_TLS_CERT", "tls", "cert", "file", "PEM certificate chain (leaf first) to serve HTTPS with; with LB_TLS_KEY, turns TLS on; rotated when the file changes"),
    Variable("LB_TLS_KEY", "tls", "key", "file", "PEM private key of LB_TLS_CERT"),
    Variable("LB_HTTP_REDIRECT_PORT", "tls", "http_redirect_port", "optional_port", "plain HTTP port answering 308 to https (and /lb-health); 0: none; needs TLS"),
    Variable("LB_UPSTREAM_CA", "tls", "upstream_ca", "file", "PEM CA bundle https upstreams are verified against instead of the system CAs"),
    Variable("LB_UPSTREAM_TLS_VERIFY", "tls", "upstream_verify", "bool", "verify https upstreams' certificates and host names (false: an explicit, logged opt-out)"),
    Variable("LB_WORKER_STALL_TIMEOUT", "frontdoor", "worker_stall_timeout", "stall_timeout", "seconds a worker's event loop may give no sign of life (it stamps every second) before the main process kills and replaces it"),
    Variable("LB_UNDERSCORES_IN_HEADERS", "frontdoor", "underscores_in_headers", "underscores", "request headers whose name holds '_' (X_Forwarded_For): drop (not forwarded, counted in the access log), pass, or reject (400)"),
    Variable("LB_TRUSTED_PROXIES", "admission", "trusted_proxies", "networks", "proxies (CIDR list) whose X-Forwarded-For names the client: the rightmost address not in it; empty: the TCP peer is the client"),
    Variable("LB_IPV6_CLIENT_PREFIX", "admission", "ipv6_client_prefix", "ipv6_prefix", "an IPv6 client counts as its /N network for rate limits and LB_MAX_CLIENT_REQUESTS (1 to 128; 128: each address alone)"),
    Variable("LB_RATE_LIMIT", "admission", "rate_limit", "rate_limit", "one per-client rate limit on every proxied route and /stats, e.g. '50/s burst=100' (more: [[limits]] in the TOML)"),
    Variable("LB_RATE_LIMIT_HEADERS", "admission", "rate_limit_headers", "bool", "send the RateLimit-Policy and RateLimit fields on responses a limit covers"),
    Variable("LB_MAX_CLIENT_REQUESTS", "admission", "max_client_requests", "size", "requests one client may have in flight across the host (then 429); 0: no limit"),
    Variable("LB_LIMIT_KEYS", "admission", "limit_keys", "limit_keys", "rate-limit keys tracked at once per host (a fixed table in shared memory)"),
    Variable("OTEL_EXPORTER_OTLP_ENDPOINT", "tracing", "endpoint", "otlp_url", "OTLP/HTTP base URL spans are exported to (v1/traces appended); unset: no export, trace context only"),
    Variable("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "tracing", "traces_endpoint", "otlp_url", "OTLP/HTTP URL for spans, used as it is (wins over OTEL_EXPORTER_OTLP_ENDPOINT)"),
    Variable("OTEL_EXPORTER_OTLP_HEADERS", "tracing", "headers", "otel_pairs", "headers sent with every export, key=value,key2=value2 (values percent-encoded)"),
    Variable("OTEL_SERVICE_NAME", "tracing", "service_name", "service_name", "service.name of the exported spans"),
    Variable("OTEL_TRACES_SAMPLER", "tracing", "sampler", "sampler", "which traces are recorded: always_on, always_off, traceidratio, parentbased_always_on, parentbased_always_off, parentbased_traceidratio"),
    Variable("OTEL_TRACES_SAMPLER_ARG", "tracing", "sampler_arg", "ratio", "the ratio of the traceidratio samplers, from 0 to 1"),
    Variable("OTEL_RESOURCE_ATTRIBUTES", "tracing", "resource_attributes", "otel_pairs", "resource attributes of the exported spans, key=value,key2=value2 (values percent-encoded)"),
    Variable("{PREFIX}_MAX_FAILS", "passive", "max_fails", "positive_int", "failures within fail_timeout that eject a target"),
    Variable("{PREFIX}_FAIL_TIMEOUT", "passive", "fail_timeout", "seconds", "window for counting failures, and the first ejection's length"),
    Variable("{PREFIX}_MAX_EJECTION", "passive", "max_ejection", "seconds", "longest ejection (each repeated ejection doubles)"),
    Variable("{PREFIX}_FAIL_STATUSES", "passive", "fail_statuses", "statuses", "answer statuses (5xx) that count as the target's failure and may be retried on another; empty: none"),
    Variable("{PREFIX}_MAX_EJECTION_PERCENT", "passive", "max_ejection_percent", "percent", "most targets of a pool ejected at once, in percent (at least one may be)"),
    Variable("{PREFIX}_HEALTH_PATH", "active", "path", "path", "path of the active check; unset: none"),
    Variable("{PREFIX}_HEALTH_INTERVAL", "active", "interval", "seconds", "seconds between checks"),
    Variable("{PREFIX}_HEALTH_TIMEOUT", "active", "timeout", "seconds", "seconds one check may take"),
    Variable("{PREFIX}_HEALTH_HEALTHY_THRESHOLD", "active", "healthy_threshold", "positive_int", "passing checks in a row that bring a target back"),
    Variable("{PREFIX}_HEALTH_UNHEALTHY_THRESHOLD", "active", "unhealthy_threshold", "positive_int", "failing checks in a row that take a target out"),
    Variable("{PREFIX}_BALANCE", "upstream", "balance", "balance", "least_request (P2C), round_robin, or hash (consistent hashing on HASH_ON)"),
    Variable("{PREFIX}_SLOW_START", "upstream", "slow_start", "size_seconds", "seconds over which a target that joins while serving (added, back from ejection or down) ramps from 10 % of its weight to all of it; 0: off"),
    Variable("{PREFIX}_RETRIES", "upstream", "retries", "size", "retries after the first attempt, each on a target not yet tried while one is left; 0: none"),
    Variable("{PREFIX}_RETRY_BACKOFF", "upstream", "retry_backoff", "size_seconds", "seconds: the base of the wait before a retry, drawn from [0, base x 2^(n-1)] (at most 10x base); 0: at once"),
    Variable("{PREFIX}_RETRY_BUDGET", "upstream", "retry_budget", "size", "retries in percent of the pool's requests of the last 10 s (per worker; 3 in flight always allowed)"),
    Variable("{PREFIX}_HASH_ON", "upstream", "hash_on", "hash_on", "with BALANCE=hash: client, header:NAME or cookie:NAME; a request without the key is balanced by least_request"),
    Variable("{PREFIX}_HASH_BALANCE_FACTOR", "upstream", "hash_balance_factor", "balance_factor", "with BALANCE=hash: no target takes more than this percent of the mean requests in flight (bounded loads; e.g. 125); 0: off"),
    Variable("{PREFIX}_STICKY_COOKIE", "upstream", "sticky_cookie", "cookie_name", "a cookie name: requests carrying it stay on one target while it is in rotation; unset: off"),
    Variable("{PREFIX}_MAX_REQUESTS", "upstream", "max_requests", "size", "requests in flight to the pool across the host above which a request gets 503 at once; 0: no limit"),
)
# fmt: on
