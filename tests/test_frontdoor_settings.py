"""The front door's settings: defaults, overrides, and bad values named at start-up."""

from __future__ import annotations

import pytest

from service.settings import SettingsError, load_settings


def test_defaults() -> None:
    frontdoor = load_settings(env={}).frontdoor
    assert frontdoor.header_timeout == 30.0  # at most nginx's client_header_timeout (60 s)
    assert frontdoor.max_client_connections == 4096
    assert frontdoor.drain_delay == 0.0
    assert frontdoor.worker_stall_timeout == 10.0
    assert frontdoor.underscores_in_headers == "drop"  # nginx's and gunicorn's default


def test_environment_overrides() -> None:
    env = {"LB_HEADER_TIMEOUT": "2.5", "LB_MAX_CLIENT_CONNECTIONS": "10", "LB_DRAIN_DELAY": "5"}
    frontdoor = load_settings(env=env).frontdoor
    assert (frontdoor.header_timeout, frontdoor.max_client_connections) == (2.5, 10)
    assert frontdoor.drain_delay == 5.0
    assert load_settings(env={"LB_WORKER_STALL_TIMEOUT": "2"}).frontdoor.worker_stall_timeout == 2
    for mode in ("drop", "pass", "reject"):
        env = {"LB_UNDERSCORES_IN_HEADERS": mode}
        assert load_settings(env=env).frontdoor.underscores_in_headers == mode


@pytest.mark.parametrize(
    ("var", "value"),
    [
        ("LB_HEADER_TIMEOUT", "0"),
        ("LB_HEADER_TIMEOUT", "soon"),
        ("LB_MAX_CLIENT_CONNECTIONS", "0"),
        ("LB_MAX_CLIENT_CONNECTIONS", "1.5"),
        ("LB_DRAIN_DELAY", "-1"),
        ("LB_WORKER_STALL_TIMEOUT", "1.5"),  # workers stamp every second
        ("LB_WORKER_STALL_TIMEOUT", "0"),
        ("LB_UNDERSCORES_IN_HEADERS", "allow"),
        ("LB_UNDERSCORES_IN_HEADERS", "Drop"),
        ("LB_UNDERSCORES_IN_HEADERS", ""),
    ],
)
def test_bad_value_names_the_variable(var: str, value: str) -> None:
    with pytest.raises(SettingsError) as info:
        load_settings(env={var: value})
    assert var in str(info.value)
