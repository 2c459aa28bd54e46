"""Who the client is, and what upstreams are told about it (issue 22, items 2, 8 and 9).

One real load balancer that trusts one proxy, 127.0.0.2, and lets only 127.0.0.1 and
198.51.100.0/24 see the operator's pages; clients leave from other loopback addresses to be
another peer. Real upstreams echo the headers they received.

- An address a trusted proxy names that no proxy can have received a request from
  (loopback, unspecified, link-local) is not believed: the peer is the client, for
  ``LB_ADMIN_ALLOW`` and for rate-limit keys alike.
- Forwarding headers from a peer that is not trusted are replaced by the load balancer's
  own; a trusted proxy's are kept, and its chain gets the peer's own address appended; the
  WebSocket handshake is treated the same way.
- An IPv6 client is keyed by its /64 (``LB_IPV6_CLIENT_PREFIX``).
"""

from __future__ import annotations

from collections.abc import Iterator
from ipaddress import ip_network
from types import SimpleNamespace
from typing import Any

import httpx
import pytest

from service.frontdoor.client import ClientAddresses, believable, parse_address
from service.settings import SettingsError, load_settings
from tests.support import REPO, LoadBalancer, UpstreamServer, env_for
from tests.support.flood import client_from

PROXY = "127.0.0.2"  # the one trusted proxy
LIMITS = """
[[limits]]
name = "blog"
rate = "1/min"
burst = 3
routes = ["blog-service"]
"""


@pytest.fixture(scope="module")
def lb(upstreams: dict[str, UpstreamServer], tmp_path_factory) -> Iterator[LoadBalancer]:
    config = tmp_path_factory.mktemp("forwarding") / "lb.toml"
    config.write_text((REPO / "config" / "defaults.toml").read_text() + LIMITS)
    balancer = LoadBalancer(
        env_for(
            upstreams,
            LB_CONFIG=str(config),
            LB_TRUSTED_PROXIES=f"{PROXY}/32",
            LB_ADMIN_ALLOW="127.0.0.1/32, 198.51.100.0/24",
        )
    )
    yield balancer
    balancer.stop()


def get(lb: LoadBalancer, source: str, path: str, **headers: str) -> httpx.Response:
    names = {name.replace("_", "-"): value for name, value in headers.items()}
    with client_from(lb.url, source) as client:
        return client.get(path, headers=names)


def received(response: httpx.Response) -> dict[str, list[str]]:
    """The headers the upstream received (lower-case names, every value in order)."""
    assert response.status_code == 200, response.text
    seen: dict[str, list[str]] = {}
    for name, value in response.json()["headers"]:
        seen.setdefault(name.lower(), []).append(value)
    return seen


# ------------------------------------------------------------ 2: believable addresses


@pytest.mark.parametrize(
    "claimed", ["127.0.0.1", "::1", "0.0.0.0", "::", "169.254.10.1", "fe80::1", "::ffff:127.0.0.1"]
)
def test_a_trusted_proxy_naming_a_local_address_is_not_believed(
    lb: LoadBalancer, claimed: str
) -> None:
    assert get(lb, PROXY, "/metrics", X_Forwarded_For=claimed).status_code == 403
    assert received(get(lb, PROXY, "/api/who", X_Forwarded_For=claimed))["x-real-ip"] == [PROXY]


def test_a_trusted_proxy_still_names_real_clients(lb: LoadBalancer) -> None:
    assert get(lb, PROXY, "/metrics", X_Forwarded_For="198.51.100.7").status_code == 200
    assert get(lb, PROXY, "/metrics", X_Forwarded_For="203.0.113.7").status_code == 403
    assert get(lb, "127.0.0.1", "/metrics").status_code == 200  # the allowed peer itself
    seen = received(get(lb, PROXY, "/api/who", X_Forwarded_For="203.0.113.7"))
    assert seen["x-real-ip"] == ["203.0.113.7"]


def test_a_trusted_proxy_cannot_rotate_its_rate_limit_key_through_loopback(
    lb: LoadBalancer,
) -> None:
    """Ten requests, each claiming another loopback client: all one key (the proxy's), so
    the burst of 3 is all they get."""
    statuses = [
        get(lb, PROXY, f"/blog/rotate-{n}", X_Forwarded_For=f"127.0.0.{10 + n}").status_code
        for n in range(10)
    ]
    assert statuses == [200] * 3 + [429] * 7


def test_the_rule_is_one_function_of_the_resolver() -> None:
    for text in ("127.0.0.1", "::1", "0.0.0.0", "::", "169.254.1.1", "fe80::1%eth0"):
        address = parse_address(text)
        assert address is not None and not believable(address), text
    for text in ("10.0.0.1", "203.0.113.9", "2001:db8::1", "192.168.1.1"):
        address = parse_address(text)
        assert address is not None and believable(address), text
    resolver = ClientAddresses([ip_network("10.0.0.0/8"), ip_network("127.0.0.0/8")])
    # a loopback entry is not believed even when it is itself in a trusted network
    assert resolver.resolve("10.1.1.1", ["127.0.0.1"]) == "10.1.1.1"
    assert resolver.resolve("10.1.1.1", ["203.0.113.9, 127.0.0.1"]) == "10.1.1.1"
    assert resolver.resolve("10.1.1.1", ["203.0.113.9, 10.2.2.2"]) == "203.0.113.9"


# ------------------------------------------------------------ 8: forwarding headers

SPOOFED = {
    "X_Forwarded_For": "6.6.6.6",
    "X_Forwarded_Proto": "https",
    "X_Forwarded_Host": "spoofed.example",
    "X_Forwarded_Port": "443",
    "X_Real_IP": "6.6.6.7",
    "Forwarded": "for=6.6.6.6;proto=https",
}


def test_an_untrusted_peers_forwarding_headers_are_replaced(lb: LoadBalancer) -> None:
    seen = received(get(lb, "127.0.0.1", "/api/fwd", Host="shop.example", **SPOOFED))
    assert seen["x-forwarded-for"] == ["127.0.0.1"]
    assert seen["x-real-ip"] == ["127.0.0.1"]
    assert seen["x-forwarded-proto"] == ["http"]
    assert seen["x-forwarded-host"] == ["shop.example"]
    assert "x-forwarded-port" not in seen and "forwarded" not in seen


def test_a_trusted_proxys_chain_gets_the_peer_appended(lb: LoadBalancer) -> None:
    seen = received(get(lb, PROXY, "/api/fwd", Host="shop.example", **SPOOFED))
    assert seen["x-forwarded-for"] == [f"6.6.6.6, {PROXY}"]  # not "6.6.6.6, 6.6.6.6"
    assert seen["x-real-ip"] == ["6.6.6.6"]  # the client as resolved, not as claimed
    assert seen["x-forwarded-proto"] == ["https"]
    assert seen["x-forwarded-host"] == ["spoofed.example"]
    assert seen["x-forwarded-port"] == ["443"]
    assert seen["forwarded"] == ["for=6.6.6.6;proto=https"]


UPGRADE = {
    "Connection": "Upgrade",
    "Upgrade": "websocket",
    "Sec_WebSocket_Version": "13",
    "Sec_WebSocket_Key": "dGhlIHNhbXBsZSBub25jZQ==",
}


def test_the_websocket_handshake_gets_the_same_forwarding_headers(lb: LoadBalancer) -> None:
    """The tunnel's upgrade request (the upstream here answers it 200 with its echo, which
    is relayed as a refused upgrade)."""
    seen = received(get(lb, "127.0.0.1", "/api/ws", **UPGRADE, **SPOOFED))
    assert seen["upgrade"] == ["websocket"]  # it did go through the tunnel's handshake
    assert seen["x-forwarded-for"] == ["127.0.0.1"] and seen["x-real-ip"] == ["127.0.0.1"]
    assert "forwarded" not in seen and "x-forwarded-port" not in seen
    seen = received(get(lb, PROXY, "/api/ws", **UPGRADE, **SPOOFED))
    assert seen["x-forwarded-for"] == [f"6.6.6.6, {PROXY}"] and seen["x-real-ip"] == ["6.6.6.6"]


# ------------------------------------------------------------ 9: IPv6 clients by /64


def test_ipv6_clients_of_one_64_share_a_budget(lb: LoadBalancer) -> None:
    one_network = [
        get(lb, PROXY, f"/blog/v6-{n}", X_Forwarded_For=f"2001:db8:1:2::{n + 1:x}").status_code
        for n in range(5)
    ]
    assert one_network == [200] * 3 + [429] * 2
    other = get(lb, PROXY, "/blog/v6-other", X_Forwarded_For="2001:db8:1:3::1")
    assert other.status_code == 200
    # the logs and X-Real-IP still show the address itself
    assert received(other)["x-real-ip"] == ["2001:db8:1:3::1"]


def _request(ip: str) -> Any:
    return SimpleNamespace(ip=ip, ctx=SimpleNamespace(), headers={})


def test_the_client_key_is_made_in_one_place() -> None:
    keys = ClientAddresses([], ipv6_prefix=64)
    assert keys.key_of(_request("2001:db8:1:2:aaaa::1")) == "2001:db8:1:2::/64"
    assert keys.key_of(_request("203.0.113.9")) == "203.0.113.9"
    assert keys.key_of(_request("::ffff:203.0.113.9")) == "203.0.113.9"
    assert ClientAddresses([], ipv6_prefix=128).key_of(_request("2001:db8::1")) == "2001:db8::1"
    assert ClientAddresses([], ipv6_prefix=48).key_of(_request("2001:db8:1:2::1")) == (
        "2001:db8:1::/48"
    )


def test_the_ipv6_prefix_setting() -> None:
    assert load_settings(env={}).admission.ipv6_client_prefix == 64
    assert load_settings(env={"LB_IPV6_CLIENT_PREFIX": "56"}).admission.ipv6_client_prefix == 56
    for bad in ("0", "129", "64.5", "/64", ""):
        with pytest.raises(SettingsError, match="LB_IPV6_CLIENT_PREFIX"):
            load_settings(env={"LB_IPV6_CLIENT_PREFIX": bad})
