"""Settings: the typed model (``model``) and its loading from TOML and the environment
(``loading``), read once at start-up into one immutable value."""

from service.settings.loading import (
    CONFIG_ENV,
    DEFAULTS_FILE,
    SettingsError,
    load_settings,
    parse_targets,
    parse_upstream_url,
)
from service.settings.model import (
    BALANCERS,
    ActiveHealth,
    HeartbeatSettings,
    PassiveHealth,
    ProxySettings,
    Route,
    Settings,
    StatsSettings,
    TargetSpec,
    Upstream,
)

__all__ = [
    "BALANCERS",
    "CONFIG_ENV",
    "DEFAULTS_FILE",
    "ActiveHealth",
    "HeartbeatSettings",
    "PassiveHealth",
    "ProxySettings",
    "Route",
    "Settings",
    "SettingsError",
    "StatsSettings",
    "TargetSpec",
    "Upstream",
    "load_settings",
    "parse_targets",
    "parse_upstream_url",
]
