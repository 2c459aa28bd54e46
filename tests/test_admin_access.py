"""Who may see what: /metrics and /lb-status only for clients in LB_ADMIN_ALLOW; /stats public."""

from __future__ import annotations

from collections.abc import Iterator
from ipaddress import ip_network

import pytest

from service.access import allowed
from service.settings import SettingsError, load_settings
from tests.support import REPO, LoadBalancer, UpstreamServer, clean_env, env_for, sanic_until_exit

OPERATOR_PATHS = ("/metrics", "/lb-status", "/lb-status/data", "/lb-status/status.js")


def test_default_is_loopback_only() -> None:
    assert load_settings(env={}).admin.allow == (ip_network("127.0.0.0/8"), ip_network("::1/128"))


def test_a_list_of_networks_and_empty_for_nobody() -> None:
    settings = load_settings(env={"LB_ADMIN_ALLOW": " 10.0.0.0/8, 192.168.1.7 ,fd00::/8"})
    assert settings.admin.allow == (
        ip_network("10.0.0.0/8"),
        ip_network("192.168.1.7/32"),
        ip_network("fd00::/8"),
    )
    assert load_settings(env={"LB_ADMIN_ALLOW": ""}).admin.allow == ()


@pytest.mark.parametrize("value", ["bogus", "10.0.0.1/8", "10.0.0.0/33", "10.0.0.0/8;"])
def test_a_bad_network_names_the_variable(value: str) -> None:
    with pytest.raises(SettingsError, match="LB_ADMIN_ALLOW"):
        load_settings(env={"LB_ADMIN_ALLOW": value})


def test_a_bad_network_stops_the_real_command_with_one_line() -> None:
    result = sanic_until_exit(clean_env({"LB_ADMIN_ALLOW": "10.0.0.0/8,nonsense"}))
    assert result.returncode == 2
    assert "LB_ADMIN_ALLOW" in result.stderr and "Traceback" not in result.stderr


@pytest.mark.parametrize(
    ("client", "expected"),
    [
        ("127.0.0.1", True),
        ("127.5.6.7", True),
        ("::1", True),
        ("::ffff:127.0.0.1", True),  # an IPv4 client on a dual-stack socket
        ("10.1.2.3", False),
        ("::ffff:10.1.2.3", False),
        ("2001:db8::1", False),
        ("", False),  # a unix socket has no peer address
        ("not-an-ip", False),
    ],
)
def test_allowed_judges_the_peer_address(client: str, expected: bool) -> None:
    loopback = (ip_network("127.0.0.0/8"), ip_network("::1/128"))
    assert allowed(client, loopback) is expected


def test_operator_pages_answer_a_loopback_client_by_default(lb: LoadBalancer) -> None:
    for path in OPERATOR_PATHS:
        assert lb.client.get(path).status_code == 200, path


@pytest.fixture(scope="module")
def locked(upstreams: dict[str, UpstreamServer]) -> Iterator[LoadBalancer]:
    """A load balancer whose operators are elsewhere: 127.0.0.1 is outside the list."""
    balancer = LoadBalancer(env_for(upstreams, LB_ADMIN_ALLOW="10.0.0.0/8"))
    yield balancer
    balancer.stop()


def test_a_client_outside_the_list_gets_403_json(locked: LoadBalancer) -> None:
    for path in OPERATOR_PATHS:
        response = locked.client.get(path, headers={"X-Forwarded-For": "10.0.0.1"})
        assert response.status_code == 403, path
        assert response.headers["content-type"].startswith("application/json")
        body = response.json()
        assert body["error"] == "forbidden" and "LB_ADMIN_ALLOW" in body["detail"]


def test_stats_and_health_stay_public(locked: LoadBalancer) -> None:
    assert locked.client.get("/stats").status_code == 200
    assert locked.client.get("/lb-health").status_code == 200
    assert locked.client.get("/api/x").status_code == 200  # and the proxy is unaffected


def test_the_toml_file_may_give_a_list(tmp_path) -> None:
    config = tmp_path / "lb.toml"
    defaults = (REPO / "config" / "defaults.toml").read_text()
    config.write_text(defaults + '\n[admin]\nallow = ["10.0.0.0/8", "::1"]\n')
    settings = load_settings(env={"LB_CONFIG": str(config)})
    assert settings.admin.allow == (ip_network("10.0.0.0/8"), ip_network("::1/128"))
    # and the environment still wins over the file
    overridden = load_settings(env={"LB_CONFIG": str(config), "LB_ADMIN_ALLOW": "127.0.0.1"})
    assert overridden.admin.allow == (ip_network("127.0.0.1/32"),)
