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
    ActiveHealth,
    ClusterSettings,
    ConfigSource,
    FrontDoorSettings,
    HeartbeatSettings,
    PassiveHealth,
    ProxySettings,
    ResolverSettings,
    Route,
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
    "STARTUP_FILE_ENV",
    "VARIABLES",
    "ActiveHealth",
    "ClusterSettings",
    "ConfigSource",
    "FrontDoorSettings",
    "HeartbeatSettings",
    "PassiveHealth",
    "ProxySettings",
    "ResolverSettings",
    "Route",
    "Settings",
    "SettingsError",
    "StatsSettings",
    "TargetSpec",
    "TlsSettings",
    "TracingSettings",
    "Upstream",
    "load_settings",
]
