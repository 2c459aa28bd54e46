"""HTTPS at the front door (``service/tls``), checked with real clients: Python's ``ssl``,
``openssl s_client`` and ``curl`` against a real load balancer serving a certificate made
here, plus the redirect listener, the heartbeat socket over TLS, what ``/stats``,
``/metrics`` and ``/lb-status`` say about the certificate, and start-up refusing bad files."""

from __future__ import annotations

import json
import socket
import ssl
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from websockets.sync.client import connect

from service import tls
from service.settings import SettingsError, load_settings
from service.tls.contexts import server_context
from tests.support import REPO, SANIC, LoadBalancer, UpstreamServer, env_for, free_port
from tests.support.certs import Issued, issue, make_ca
from tests.test_metrics_promtool import promtool
from tests.support.net import raw_request
from tests.support.processes import clean_env
from tests.support.tools import require
from tests.support.waiting import wait_for

MOZILLA_TLS12 = {
    "ECDHE-ECDSA-AES128-GCM-SHA256",
    "ECDHE-RSA-AES128-GCM-SHA256",
    "ECDHE-ECDSA-AES256-GCM-SHA384",
    "ECDHE-RSA-AES256-GCM-SHA384",
    "ECDHE-ECDSA-CHACHA20-POLY1305",
    "ECDHE-RSA-CHACHA20-POLY1305",
}
MOZILLA_TLS13 = {"TLS_AES_128_GCM_SHA256", "TLS_AES_256_GCM_SHA384", "TLS_CHACHA20_POLY1305_SHA256"}


@pytest.fixture(scope="module")
def ca() -> Issued:
    return make_ca()


@pytest.fixture(scope="module")
def files(ca: Issued, tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    folder = tmp_path_factory.mktemp("tls")
    cert, key = issue(ca, "lb.test").write(folder)
    (folder / "ca.pem").write_bytes(ca.cert_pem)
    return {"cert": cert, "key": key, "ca": str(folder / "ca.pem"), "dir": str(folder)}


@pytest.fixture(scope="module")
def trust(files: dict[str, str]) -> ssl.SSLContext:
    return ssl.create_default_context(cafile=files["ca"])


@pytest.fixture(scope="module")
def redirect_port() -> int:
    return free_port()


@pytest.fixture(scope="module")
def lb(
    upstreams: dict[str, UpstreamServer],
    files: dict[str, str],
    trust: ssl.SSLContext,
    redirect_port: int,
) -> Iterator[LoadBalancer]:
    env = env_for(
        upstreams,
        LB_TLS_CERT=files["cert"],
        LB_TLS_KEY=files["key"],
        LB_HTTP_REDIRECT_PORT=str(redirect_port),
        LB_WS_PING_INTERVAL="0.5",
    )
    balancer = LoadBalancer(env, tls=trust)
    yield balancer
    balancer.stop()


def s_client(port: int, *args: str) -> subprocess.CompletedProcess[str]:
    """``openssl s_client`` against 127.0.0.1:port; it may offer anything (SECLEVEL=0)."""
    return subprocess.run(
        [require("openssl"), "s_client", "-connect", f"127.0.0.1:{port}", *args],
        input="",
        capture_output=True,
        text=True,
        timeout=10,
    )


def headers_of(echo: dict[str, Any]) -> dict[str, str]:
    """The headers an upstream's echo says it received, by lower-case name."""
    return {name.lower(): value for name, value in echo["headers"]}


def handshake(port: int, context: ssl.SSLContext) -> ssl.SSLSocket:
    sock = socket.create_connection(("127.0.0.1", port), timeout=5)
    return context.wrap_socket(sock, server_hostname="127.0.0.1")


# ---------------------------------------------------------------- protocol versions, ciphers


def test_the_old_protocols_are_refused_by_the_server_not_the_client(
    lb: LoadBalancer, files: dict[str, str], tmp_path: Path
) -> None:
    # Control: the same client, offering TLS 1.0, does get TLS 1.0 from a server that allows it.
    port = free_port()
    server = subprocess.Popen(
        [require("openssl"), "s_server", "-accept", str(port), "-cert", files["cert"],
         "-key", files["key"], "-tls1", "-cipher", "DEFAULT@SECLEVEL=0", "-www", "-quiet"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        wait_for(lambda: socket.socket().connect_ex(("127.0.0.1", port)) == 0, timeout=5)
        control = s_client(port, "-tls1", "-cipher", "DEFAULT@SECLEVEL=0")
        assert "New, TLSv1.0, Cipher is" in control.stdout
    finally:
        server.kill()
        server.wait()
    for version in ("-tls1", "-tls1_1"):
        refused = s_client(lb.port, version, "-cipher", "DEFAULT@SECLEVEL=0")
        assert refused.returncode != 0
        assert "Cipher is (NONE)" in refused.stdout


@pytest.mark.parametrize("version", ["1.2", "1.3"])
def test_tls_1_2_and_1_3_with_alpn_http_1_1(lb: LoadBalancer, version: str) -> None:
    flag = "-tls1_2" if version == "1.2" else "-tls1_3"
    result = s_client(lb.port, flag, "-alpn", "h2,http/1.1")
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"New, TLSv{version}, Cipher is" in result.stdout
    assert "ALPN protocol: http/1.1" in result.stdout  # never h2, which Sanic does not serve


def test_python_ssl_sees_the_intermediate_policy(lb: LoadBalancer, files: dict[str, str]) -> None:
    for maximum in (ssl.TLSVersion.TLSv1_2, ssl.TLSVersion.TLSv1_3):
        context = ssl.create_default_context(cafile=files["ca"])
        context.maximum_version = maximum
        context.set_alpn_protocols(["h2", "http/1.1"])
        with handshake(lb.port, context) as tls:
            assert tls.version() == ("TLSv1.2" if maximum == ssl.TLSVersion.TLSv1_2 else "TLSv1.3")
            assert tls.selected_alpn_protocol() == "http/1.1"
            cipher = tls.cipher()
            assert cipher is not None
            # (compression cannot be offered by any client of this OpenSSL, which has no
            # zlib: test_the_context_refuses_renegotiation_and_compression checks the option)
            allowed = MOZILLA_TLS12 if tls.version() == "TLSv1.2" else MOZILLA_TLS13
            assert cipher[0] in allowed, cipher


def test_a_cipher_outside_the_intermediate_list_is_refused(lb: LoadBalancer) -> None:
    cbc = s_client(lb.port, "-tls1_2", "-cipher", "ECDHE-ECDSA-AES128-SHA:@SECLEVEL=0")
    assert cbc.returncode != 0 and "Cipher is (NONE)" in cbc.stdout
    gcm = s_client(lb.port, "-tls1_2", "-cipher", "ECDHE-ECDSA-AES128-GCM-SHA256")
    assert gcm.returncode == 0 and "Cipher is ECDHE-ECDSA-AES128-GCM-SHA256" in gcm.stdout


def test_the_context_refuses_renegotiation_and_compression(tmp_path: Path) -> None:
    context = server_context(*issue(make_ca(), "x").write(tmp_path))
    assert context.options & ssl.OP_NO_RENEGOTIATION
    assert context.options & ssl.OP_NO_COMPRESSION
    assert context.minimum_version == ssl.TLSVersion.TLSv1_2


# ---------------------------------------------------------------- what goes through


def test_curl_gets_the_proxied_answer_with_x_forwarded_proto_https(
    lb: LoadBalancer, files: dict[str, str]
) -> None:
    result = subprocess.run(
        [require("curl"), "-sS", "--cacert", files["ca"], "--tlsv1.2", "--tls-max", "1.2",
         f"https://127.0.0.1:{lb.port}/api/echo?x=1"],
        capture_output=True, text=True, timeout=10,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    echo = json.loads(result.stdout)
    assert echo["path"] == "/api/echo"
    assert headers_of(echo)["x-forwarded-proto"] == "https"


def test_stats_metrics_and_status_page_show_the_certificate(lb: LoadBalancer, ca: Issued) -> None:
    entry = lb.client.get("/stats").json()["load-balancer"]["tls"]
    assert entry["subject"] == "CN=lb.test"
    assert entry["issuer"] == ca.cert.subject.rfc4514_string()
    assert 29 * 86400 < entry["expires_in_s"] <= 30 * 86400
    assert entry["not_after"].endswith("Z") and entry["refused"] is None
    metrics = lb.client.get("/metrics").text
    (line,) = [x for x in metrics.splitlines() if x.startswith("lb_tls_certificate_expiry_seconds")]
    assert 'subject="CN=lb.test"' in line
    assert 29 * 86400 < float(line.split()[-1]) <= 30 * 86400
    checked = subprocess.run(
        [promtool(), "check", "metrics"], input=metrics.encode(), capture_output=True, timeout=30
    )
    assert checked.returncode == 0, checked.stdout + checked.stderr
    page = lb.client.get("/lb-status/data").json()
    assert page["load-balancer"]["tls"]["subject"] == "CN=lb.test"


def test_the_heartbeat_socket_over_tls(lb: LoadBalancer, trust: ssl.SSLContext) -> None:
    url = f"wss://127.0.0.1:{lb.port}/api/ws-heartbeat"
    # generous bounds: a busy machine slows the handshakes, not what is checked
    with connect(url, ssl=trust, open_timeout=20, close_timeout=5) as ws:
        ws.send("hb")
        wait_for(lambda: lb.client.get("/stats").json()["load-balancer"]["ws_connections"] == 1, 10)
        assert ws.ping().wait(10)  # the socket answers pings through TLS
    wait_for(lambda: lb.client.get("/stats").json()["load-balancer"]["ws_connections"] == 0, 10)


# ---------------------------------------------------------------- the redirect listener


def test_the_plain_port_redirects_to_the_same_url_on_https(
    lb: LoadBalancer, redirect_port: int
) -> None:
    plain = httpx.Client(base_url=f"http://127.0.0.1:{redirect_port}", trust_env=False)
    with plain:
        answer = plain.get("/api/x?a=1&b=%2F")
        assert answer.status_code == 308
        assert answer.headers["location"] == f"https://127.0.0.1:{lb.port}/api/x?a=1&b=%2F"
        named = plain.post("/blog/post", headers={"Host": "lb.test:8080"}, content=b"x" * 10)
        assert named.status_code == 308
        assert named.headers["location"] == f"https://lb.test:{lb.port}/blog/post"
        assert plain.get("/lb-health").json() == {"status": "healthy"}
        assert plain.head("/lb-health").status_code == 200
        assert plain.get("/lb-health?ready=1").status_code == 200
    status, _, _ = raw_request(redirect_port, b"GET / HTTP/1.1\r\nHost: a b\r\n\r\n")
    assert status == 400
    status, _, _ = raw_request(redirect_port, b"GET http://evil/ HTTP/1.1\r\nHost: x\r\n\r\n")
    assert status == 400


def test_curl_follows_the_redirect_to_the_proxied_answer(
    lb: LoadBalancer, redirect_port: int, files: dict[str, str]
) -> None:
    result = subprocess.run(
        [require("curl"), "-sS", "-L", "--cacert", files["ca"],
         f"http://127.0.0.1:{redirect_port}/api/followed"],
        capture_output=True, text=True, timeout=10,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["path"] == "/api/followed"


# ---------------------------------------------------------------- start-up


def _start(env: dict[str, str], *argv: str) -> subprocess.CompletedProcess[str]:
    command = list(argv) or [sys.executable, "-m", "service"]
    env = {**env, "LB_HOST": "127.0.0.1", "LB_PORT": str(free_port())}
    return subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=30)


def test_bad_files_stop_start_up_with_one_line_naming_the_setting(
    ca: Issued, files: dict[str, str], tmp_path: Path
) -> None:
    other = issue(ca, "other")
    mismatched = tmp_path / "mismatched.key"
    mismatched.write_bytes(other.key_pem)
    expired_cert, expired_key = issue(ca, "old", expired=True).write(tmp_path / "old")
    cases = {
        "LB_TLS_CERT": {"LB_TLS_CERT": str(tmp_path / "missing.pem"), "LB_TLS_KEY": files["key"]},
        "LB_TLS_KEY": {"LB_TLS_CERT": files["cert"], "LB_TLS_KEY": str(mismatched)},
        "expired": {"LB_TLS_CERT": expired_cert, "LB_TLS_KEY": expired_key},
        "LB_HTTP_REDIRECT_PORT": {"LB_HTTP_REDIRECT_PORT": "8080"},
        "LB_UPSTREAM_CA": {"LB_UPSTREAM_CA": files["key"]},  # a key is not a CA bundle
    }
    for name, extra in cases.items():
        result = _start(clean_env(extra))
        assert result.returncode == 2, (name, result.stderr)
        (line,) = result.stderr.strip().splitlines()
        assert line.startswith("load-balancer: configuration error: ")
        assert (name if name != "expired" else "LB_TLS_CERT") in line, line
        if name == "expired":
            assert "expired on" in line
        if name == "LB_TLS_KEY":
            assert "is not the key of the certificate" in line
    # sanic's own command line stops the same way
    result = _start(
        clean_env({"LB_TLS_CERT": files["cert"], "LB_TLS_KEY": str(mismatched)}),
        SANIC, "service.app", "--single-process",
    )  # fmt: skip
    assert result.returncode == 2
    assert "LB_TLS_KEY" in result.stderr and "Traceback" not in result.stderr


def test_python_m_service_serves_https_from_the_settings(
    upstreams: dict[str, UpstreamServer], files: dict[str, str], trust: ssl.SSLContext
) -> None:
    port = free_port()
    env = env_for(
        upstreams, LB_TLS_CERT=files["cert"], LB_TLS_KEY=files["key"],
        LB_HOST="127.0.0.1", LB_PORT=str(port),
    )  # fmt: skip
    process = subprocess.Popen(
        [sys.executable, "-m", "service"], cwd=REPO, env=env,
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
    )  # fmt: skip
    try:
        with httpx.Client(verify=trust, trust_env=False) as client:

            def healthy() -> bool:
                try:
                    return client.get(f"https://127.0.0.1:{port}/lb-health").status_code == 200
                except httpx.TransportError:
                    return process.poll() is not None

            wait_for(healthy, timeout=20)
            assert process.poll() is None
            echo = client.get(f"https://127.0.0.1:{port}/api/m").json()
            assert headers_of(echo)["x-forwarded-proto"] == "https"
    finally:
        process.terminate()
        try:
            process.wait(20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        ({"LB_TLS_CERT": "/x.pem"}, "LB_TLS_CERT and LB_TLS_KEY go together: LB_TLS_KEY"),
        ({"LB_TLS_KEY": "/x.pem"}, "LB_TLS_CERT and LB_TLS_KEY go together: LB_TLS_CERT"),
        ({"LB_HTTP_REDIRECT_PORT": "8080"}, "LB_HTTP_REDIRECT_PORT=8080 redirects to https"),
        ({"LB_HTTP_REDIRECT_PORT": "http"}, "LB_HTTP_REDIRECT_PORT='http' is not valid"),
        ({"LB_UPSTREAM_TLS_VERIFY": "maybe"}, "LB_UPSTREAM_TLS_VERIFY='maybe' is not valid"),
        (
            {"LB_UPSTREAM_CA": "/ca.pem", "LB_UPSTREAM_TLS_VERIFY": "false"},
            "LB_UPSTREAM_CA='/ca.pem' is set but LB_UPSTREAM_TLS_VERIFY=false",
        ),
        ({"LB_UPSTREAM_CA": "/nowhere.pem"}, "LB_UPSTREAM_CA='/nowhere.pem' cannot be used"),
    ],
)
def test_settings_that_cannot_work_together_are_named(env: dict[str, str], expected: str) -> None:
    with pytest.raises(SettingsError) as error:
        tls.check(load_settings(env=env))
    assert str(error.value).startswith(expected), str(error.value)


def test_the_redirect_port_cannot_be_the_tls_port(files: dict[str, str]) -> None:
    env = {"LB_TLS_CERT": files["cert"], "LB_TLS_KEY": files["key"]}
    tls.check(load_settings(env=env))  # a good pair passes
    with pytest.raises(SettingsError, match="is LB_PORT itself"):
        tls.check(load_settings(env={**env, "LB_PORT": "8443", "LB_HTTP_REDIRECT_PORT": "8443"}))
