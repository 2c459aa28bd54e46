"""TLS to upstreams: ``https://`` targets verified (system CAs, or ``LB_UPSTREAM_CA``), by
host name, with SNI; a certificate the proxy does not trust is a ``502`` that says so and
counts against the target; ``LB_UPSTREAM_TLS_VERIFY=false`` is an explicit, logged opt-out.
And the transport's seam for targets reached by address but verified by name."""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from service.transport import H1Transport
from tests.support import LoadBalancer, UpstreamServer, env_for
from tests.support.certs import Issued, issue, make_ca
from tests.support.dns import DnsServer
from tests.support.waiting import wait_for


@pytest.fixture(scope="module")
def ca() -> Issued:
    return make_ca("private upstream CA")


@pytest.fixture(scope="module")
def ca_file(ca: Issued, tmp_path_factory: pytest.TempPathFactory) -> str:
    path = tmp_path_factory.mktemp("ca") / "ca.pem"
    path.write_bytes(ca.cert_pem)
    return str(path)


def https_server(ca: Issued, folder: Path, *names: str) -> UpstreamServer:
    """An upstream serving HTTPS with a certificate for ``names`` signed by ``ca``."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(*issue(ca, names[0], names).write(folder))
    return UpstreamServer("api-gateway").start(tls=context)


@pytest.fixture(scope="module")
def secure(
    upstreams: dict[str, UpstreamServer], ca: Issued, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[dict[str, UpstreamServer]]:
    """The upstreams with the gateway on https (a certificate for localhost) and the blog on
    https with a certificate for another name."""
    gateway = https_server(ca, tmp_path_factory.mktemp("gw"), "localhost", "127.0.0.1")
    blog = https_server(ca, tmp_path_factory.mktemp("blog"), "other.test")
    yield {**upstreams, "api-gateway": gateway, "blog-service": blog}
    gateway.stop()
    blog.stop()


def start(servers: dict[str, UpstreamServer], **env: str) -> LoadBalancer:
    return LoadBalancer(env_for(servers, LB_STATS_CACHE_TTL="0", **env))


def target(lb: LoadBalancer, pool: str) -> dict[str, object]:
    (entry,) = lb.client.get("/stats").json()["load-balancer"]["upstreams"][pool]["targets"]
    return entry


def test_a_private_ca_is_trusted_with_lb_upstream_ca_and_names_are_checked(
    secure: dict[str, UpstreamServer], ca_file: str
) -> None:
    lb = start(secure, LB_UPSTREAM_CA=ca_file)
    try:
        answer = lb.client.get("/api/through-tls?x=1")
        assert answer.status_code == 200
        assert answer.json()["path"] == "/api/through-tls"
        assert secure["api-gateway"].hits["/api/through-tls"] == 1
        # the blog's certificate is from the same CA, but for another name
        refused = lb.client.get("/blog/post")
        assert refused.status_code == 502
        detail = refused.json()["detail"]
        assert detail.startswith("tls: certificate verify failed: Hostname mismatch"), detail
        assert "localhost" in detail
    finally:
        lb.stop()


def test_without_the_ca_the_upstream_is_refused_and_counted_as_failing(
    secure: dict[str, UpstreamServer],
) -> None:
    lb = start(secure)  # system CAs only: the private CA is not among them
    try:
        answer = lb.client.get("/api/x")
        assert answer.status_code == 502
        body = answer.json()
        assert body["detail"].startswith("tls: certificate verify failed: "), body
        assert "unable to get local issuer certificate" in body["detail"]
        assert body["target"] == secure["api-gateway"].url
        entry = target(lb, "api-gateway")
        assert entry["failures"] == 1 and entry["reachable"] is False
        # the /stats fan-out to it fails the same way
        offline = lb.client.get("/stats").json()["api-gateway"]
        assert offline["service_status"] == "offline"
        assert offline["error"].startswith("tls: certificate verify failed")
        assert secure["api-gateway"].hits["/api/x"] == 0  # nothing was sent
    finally:
        lb.stop()


def test_verification_off_is_explicit_and_logged(secure: dict[str, UpstreamServer]) -> None:
    lb = start(secure, LB_UPSTREAM_TLS_VERIFY="false")
    try:
        assert lb.client.get("/api/unverified").status_code == 200
        assert lb.client.get("/blog/unverified").status_code == 200  # any name goes
        wait_for(lambda: [x for x in lb.output if "LB_UPSTREAM_TLS_VERIFY=false" in x])
        assert len([x for x in lb.output if "are NOT verified" in x]) == 1
    finally:
        lb.stop()


def test_the_transport_connects_to_an_address_and_verifies_a_name(
    ca: Issued, tmp_path: Path
) -> None:
    """What a target found by DNS needs: connect to 127.0.0.1, send SNI and check the
    certificate for the service's name (httpx's ``sni_hostname`` extension)."""
    names: list[str | None] = []
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(*issue(ca, "api.internal", ("api.internal",)).write(tmp_path))
    context.sni_callback = lambda sock, name, ctx: names.append(name)  # type: ignore[assignment,misc,return-value]
    server = UpstreamServer("named").start(tls=context)
    trust = ssl.create_default_context(cadata=ca.cert_pem.decode())

    async def fetch(extensions: dict[str, object]) -> int:
        transport = H1Transport(limits=httpx.Limits(), ssl_context=trust)
        async with httpx.AsyncClient(transport=transport) as client:
            url = f"https://127.0.0.1:{server.port}/named"
            return (await client.get(url, extensions=extensions)).status_code

    try:
        assert asyncio.run(fetch({"sni_hostname": "api.internal"})) == 200
        assert names == ["api.internal"]
        with pytest.raises(httpx.ConnectError, match="IP address mismatch"):
            asyncio.run(fetch({}))  # by address alone, the certificate does not match
    finally:
        server.stop()


def test_a_resolved_https_target_is_verified_by_its_name(
    upstreams: dict[str, UpstreamServer], ca: Issued, ca_file: str, tmp_path: Path
) -> None:
    """A ``;resolve`` entry connects to the address dnsmasq gives but verifies the entry's
    name: a certificate for the name alone (not the address) is accepted; the same server
    under a name its certificate does not hold is refused by name."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(*issue(ca, "secure.test", ("secure.test",)).write(tmp_path))
    server = UpstreamServer("api-gateway").start(host="127.0.0.2", tls=context)
    dns_server = DnsServer({"secure.test": ["127.0.0.2"], "wrong.test": ["127.0.0.2"]})
    try:
        env = {"LB_RESOLVER": dns_server.address, "LB_UPSTREAM_CA": ca_file}
        good = f"https://secure.test:{server.port};resolve"
        lb = start({**upstreams, "api-gateway": server}, API_GATEWAY_URL=good, **env)
        try:
            wait_for(lambda: lb.client.get("/api/x").status_code == 200, timeout=10)
            assert target(lb, "api-gateway")["url"] == f"https://127.0.0.2:{server.port}"
        finally:
            lb.stop()
        wrong = f"https://wrong.test:{server.port};resolve"
        lb = start({**upstreams, "api-gateway": server}, API_GATEWAY_URL=wrong, **env)
        try:
            wait_for(lambda: lb.client.get("/api/x").status_code == 502, timeout=10)
            detail = lb.client.get("/api/x").json()["detail"]
            assert "certificate verify failed" in detail and "wrong.test" in detail, detail
        finally:
            lb.stop()
    finally:
        dns_server.close()
        server.stop()
