"""Settings: contract defaults, environment overrides, and bad values that stop start-up."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from service.settings import SettingsError, load_settings
from tests.support import REPO, sanic_until_exit

CONTRACT_URLS = {
    "api-gateway": ("API_GATEWAY_URL", "http://local-api-gateway-service:8000"),
    "dashboard-ui": ("DASHBOARD_UI_URL", "http://local-dashboard-ui-service:80"),
    "blog-service": ("BLOG_SERVICE_URL", "http://local-blog-service:8005"),
    "auth-service": ("AUTH_SERVICE_URL", "http://local-auth-service:8002"),
    "user-service": ("USER_SERVICE_URL", "http://local-user-service:8001"),
}


def test_defaults_with_no_environment() -> None:
    settings = load_settings(env={})
    assert settings.port == 7100
    assert settings.workers == 1
    assert settings.proxy.connect_timeout == 2.0
    assert settings.proxy.read_timeout == 30.0
    assert settings.proxy.keep_host is True
    assert settings.stats.timeout == 2.0
    assert settings.heartbeat.ping_interval == 5.0
    assert {u.name: (u.url_env, u.url) for u in settings.upstreams} == CONTRACT_URLS
    assert {u.name: u.stats_key for u in settings.upstreams} == {
        "api-gateway": "api-gateway",
        "dashboard-ui": None,
        "blog-service": "blog_service",
        "auth-service": "auth",
        "user-service": "user_service",
    }
    assert [(r.prefix, r.upstream, r.redirect_bare) for r in settings.routes] == [
        ("/blog", "blog-service", True),
        ("/api", "api-gateway", False),
        ("/", "dashboard-ui", False),
    ]


def test_environment_overrides() -> None:
    settings = load_settings(
        env={
            "LB_PORT": "8081",
            "LB_READ_TIMEOUT": "1.5",
            "LB_KEEP_HOST": "false",
            "LB_MAX_BODY_SIZE": "1000",
            "API_GATEWAY_URL": " https://gw.internal:9443/ ",
            "BLOG_SERVICE_URL": "http://[::1]:8005",
        }
    )
    assert settings.port == 8081
    assert settings.proxy.read_timeout == 1.5
    assert settings.proxy.keep_host is False
    assert settings.proxy.max_body_size == 1000
    assert settings.upstream("api-gateway").url == "https://gw.internal:9443"
    assert settings.upstream("blog-service").url == "http://[::1]:8005"
    assert settings.upstream("dashboard-ui").url == CONTRACT_URLS["dashboard-ui"][1]


def test_failure_statuses_and_ejection_cap() -> None:
    """By default no answer is a failure and half a pool may be ejected; both per upstream."""
    passive = load_settings(env={}).upstream("api-gateway").passive
    assert passive.fail_statuses == frozenset() and passive.max_ejection_percent == 50
    env = {"API_GATEWAY_FAIL_STATUSES": " 502, 503,504 ", "API_GATEWAY_MAX_EJECTION_PERCENT": "0"}
    passive = load_settings(env=env).upstream("api-gateway").passive
    assert passive.fail_statuses == {502, 503, 504} and passive.max_ejection_percent == 0
    assert load_settings(env=env).upstream("blog-service").passive.fail_statuses == frozenset()


def test_unreachable_host_is_not_an_error() -> None:
    settings = load_settings(env={"USER_SERVICE_URL": "http://no-such-host.invalid:1"})
    assert settings.upstream("user-service").url == "http://no-such-host.invalid:1"


@pytest.mark.parametrize(
    ("var", "value"),
    [
        ("API_GATEWAY_URL", "ftp://x"),
        ("API_GATEWAY_URL", "notaurl"),
        ("API_GATEWAY_URL", "http://"),
        ("API_GATEWAY_URL", ""),
        ("DASHBOARD_UI_URL", "http://:80"),
        ("BLOG_SERVICE_URL", "http://host:notaport"),
        ("BLOG_SERVICE_URL", "http://host:99999"),
        ("AUTH_SERVICE_URL", "http://[::1"),
        ("USER_SERVICE_URL", "http://host/with/path"),
        ("USER_SERVICE_URL", "http://user:pw@host"),
        ("LB_PORT", "abc"),
        ("LB_PORT", "0"),
        ("LB_PORT", "65536"),
        ("LB_PORT", ""),
        ("LB_READ_TIMEOUT", "-1"),
        ("LB_READ_TIMEOUT", "0"),
        ("LB_READ_TIMEOUT", "nan"),
        ("LB_CONNECT_TIMEOUT", "soon"),
        ("LB_KEEP_HOST", "maybe"),
        ("LB_MAX_BODY_SIZE", "1.5"),
        ("LB_WORKERS", "0"),
        ("API_GATEWAY_FAIL_STATUSES", "404"),
        ("API_GATEWAY_FAIL_STATUSES", "502,x"),
        ("API_GATEWAY_MAX_EJECTION_PERCENT", "101"),
        ("API_GATEWAY_MAX_EJECTION_PERCENT", "-1"),
    ],
)
def test_bad_value_names_the_variable(var: str, value: str) -> None:
    with pytest.raises(SettingsError) as info:
        load_settings(env={var: value})
    assert var in str(info.value)


def test_missing_config_file_names_lb_config(tmp_path) -> None:
    with pytest.raises(SettingsError, match="LB_CONFIG"):
        load_settings(env={"LB_CONFIG": str(tmp_path / "missing.toml")})


def _clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("LB_", "SANIC_"))}
    env = {k: v for k, v in env.items() if not k.endswith("_URL")}
    env.update(extra)
    return env


@pytest.mark.parametrize(
    ("var", "value"),
    [("API_GATEWAY_URL", "ftp://x"), ("BLOG_SERVICE_URL", "http://"), ("LB_PORT", "abc")],
)
def test_sanic_command_exits_naming_the_variable(var: str, value: str) -> None:
    result = sanic_until_exit(_clean_env(**{var: value}))
    assert result.returncode != 0
    assert var in result.stderr
    assert "Traceback" not in result.stderr


def test_python_m_service_exits_naming_the_variable() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "service"],
        cwd=REPO,
        env=_clean_env(DASHBOARD_UI_URL="notaurl"),
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode != 0
    assert "DASHBOARD_UI_URL" in result.stderr


def test_resolve_entries_and_resolver_settings(tmp_path) -> None:
    settings = load_settings(
        env={
            "BLOG_SERVICE_URL": "http://blog-headless:8005;resolve;weight=3, http://10.0.0.1:8005",
            "LB_RESOLVER": "10.96.0.10, 127.0.0.1:5353, [::1]:53",
            "LB_RESOLVER_VALID": "2",
            "LB_RESOLVER_MAX_TARGETS": "8",
        }
    )
    blog = settings.upstream("blog-service")
    (entry,) = blog.resolved_entries
    assert (entry.url, entry.weight, entry.host) == (
        "http://blog-headless:8005",
        3,
        "blog-headless",
    )
    assert [t.url for t in blog.static_targets] == ["http://10.0.0.1:8005"]
    assert settings.resolver.servers == ("10.96.0.10", "127.0.0.1:5353", "[::1]:53")
    assert (settings.resolver.valid, settings.resolver.max_targets) == (2.0, 8)
    toml = tmp_path / "lb.toml"
    toml.write_text(
        '[resolver]\nservers = ["127.0.0.1:53"]\n[[upstreams]]\nname = "a"\nurl_env = "A_URL"\n'
        'url = "http://a-headless:80;resolve"\n[[routes]]\nprefix = "/"\nupstream = "a"\n'
    )
    from_file = load_settings(env={"LB_CONFIG": str(toml)})
    assert from_file.upstreams[0].targets[0].resolve
    assert from_file.resolver.servers == ("127.0.0.1:53",)


@pytest.mark.parametrize(
    ("var", "value", "says"),
    [
        ("LB_RESOLVER", "dns.google", "ip[:port]"),
        ("LB_RESOLVER", "10.0.0.1:99999", "ip[:port]"),
        ("LB_RESOLVER_VALID", "0.5", "at least 1"),
        ("LB_RESOLVER_MAX_TARGETS", "0", "at least 1"),
        ("API_GATEWAY_URL", "http://10.0.0.1:80;resolve", "needs a host name"),
        ("API_GATEWAY_URL", "http://svc:80;resolve=yes", "unknown option"),
    ],
)
def test_bad_resolver_settings_name_the_variable(var: str, value: str, says: str) -> None:
    with pytest.raises(SettingsError) as error:
        load_settings(env={var: value})
    assert var in str(error.value) and says in str(error.value)
