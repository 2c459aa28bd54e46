"""The cluster's settings: validated once at start-up like every other, and nothing of the
cluster (not even redis-py) is loaded when ``LB_CLUSTER_REDIS_URL`` is unset."""

from __future__ import annotations

import subprocess
import sys

import pytest

from service.settings import SettingsError, load_settings
from tests.support import REPO, clean_env, sanic_until_exit


def test_defaults_are_this_host_only() -> None:
    cluster = load_settings(env={}).cluster
    assert cluster.redis_url == ""
    assert cluster.name == "load-balancer"
    assert cluster.publish_interval <= 0.25


@pytest.mark.parametrize(
    "url",
    [
        "redis://127.0.0.1:6379/0",
        "rediss://cache.example:6380",
        "redis://:pw@h/3",
        "unix:///r.sock",
    ],
)
def test_redis_urls_accepted(url: str) -> None:
    assert load_settings(env={"LB_CLUSTER_REDIS_URL": url}).cluster.redis_url == url


@pytest.mark.parametrize(
    ("var", "value"),
    [
        ("LB_CLUSTER_REDIS_URL", "http://redis:6379"),
        ("LB_CLUSTER_REDIS_URL", "redis://"),
        ("LB_CLUSTER_REDIS_URL", "redis://h:70000"),
        ("LB_CLUSTER_REDIS_URL", "redis://h/not-a-db"),
        ("LB_CLUSTER_NAME", "a b"),
        ("LB_CLUSTER_NAME", "x" * 65),
        ("LB_CLUSTER_PUBLISH_INTERVAL", "1"),
        ("LB_CLUSTER_PUBLISH_INTERVAL", "0"),
        ("LB_CLUSTER_TIMEOUT", "-1"),
        ("LB_CLUSTER_RETENTION", "soon"),
    ],
)
def test_bad_values_name_the_variable(var: str, value: str) -> None:
    with pytest.raises(SettingsError, match=var):
        load_settings(env={var: value})


def test_the_error_does_not_show_the_redis_password() -> None:
    with pytest.raises(SettingsError, match="LB_CLUSTER_REDIS_URL") as info:
        load_settings(env={"LB_CLUSTER_REDIS_URL": "redis://user:s3cret@:6379"})
    assert "s3cret" not in str(info.value)
    assert "redis://user:***@:6379" in str(info.value)


def test_a_bad_redis_url_stops_start_up_with_exit_status_2() -> None:
    result = sanic_until_exit(clean_env({"LB_CLUSTER_REDIS_URL": "http://not-redis"}))
    assert result.returncode == 2
    assert "LB_CLUSTER_REDIS_URL" in result.stderr
    assert "Traceback" not in result.stderr


def test_without_a_cluster_redis_is_never_imported() -> None:
    probe = (
        "import sys\n"
        "from service.factory import create_app\n"
        "from service.settings import load_settings\n"
        "app = create_app(load_settings(env={}))\n"
        "print(any(m == 'redis' or m.startswith('redis.') for m in sys.modules))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", probe], cwd=REPO, capture_output=True, text=True, timeout=30
    )
    assert result.stdout.strip() == "False", result.stderr
