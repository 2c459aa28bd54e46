"""Settings: the typed model with every default and variable (``model``), and its loading
from TOML and the environment (``loading``), read once at start-up into one immutable value.
"""

from service.settings.loading import (
    CONFIG_ENV,
    DEFAULTS_FILE,
    STARTUP_FILE_ENV,
    SettingsError,
    load_settings,
)
from service.settings.model import (
    VARIABLES,
    PROXIED_METHODS,
    ActiveHealth,
    Backend,
    ClusterSettings,
    ConfigSource,
    FrontDoorSettings,
    HeartbeatSettings,
    PassiveHealth,
    ProxySettings,
    ResolverSettings,
    Route,
    RouteMatch,
    Settings,
    StatsSettings,
    TargetSpec,
    TlsSettings,
    TracingSettings,
    Upstream,
)

__all__ = [
    "CONFIG_ENV",
    "DEFAULTS_FILE",
    "PROXIED_METHODS",
    "STARTUP_FILE_ENV",
    "VARIABLES",
    "ActiveHealth",
    "Backend",
    "ClusterSettings",
    "ConfigSource",
    "FrontDoorSettings",
    "HeartbeatSettings",
    "PassiveHealth",
    "ProxySettings",
    "ResolverSettings",
    "Route",
    "RouteMatch",
    "Settings",
    "SettingsError",
    "StatsSettings",
    "TargetSpec",
    "TlsSettings",
    "TracingSettings",
    "Upstream",
    "load_settings",
]
