"""``LB_PROXY_PROTOCOL``: the client's address through a TCP balancer (a real HAProxy in front).

One HAProxy per module (Debian's ``haproxy``, TCP mode) sends ``send-proxy`` (v1) and
``send-proxy-v2`` from 127.0.0.9, the one trusted proxy; clients connect to it from their
own loopback addresses (127.0.0.2, .3, ...), so the upstream, the access log, a per-client
rate limit and ``LB_ADMIN_ALLOW`` can each be seen telling them apart. The load balancer
behind it runs with ``--workers 2``; a second one serves TLS (the header before the
handshake). Raw sockets send what HAProxy never would: malformed, truncated, over-long,
late and forged headers. The parser's strictness is checked on bytes too.
"""

from __future__ import annotations

import json
import socket
import ssl
import struct
import subprocess
import sys
import time
from collections.abc import Iterator
from ipaddress import ip_address
from typing import Any

import httpx
import pytest
from websockets.sync.client import connect

from service.frontdoor import check_lines
from service.frontdoor.client import believable
from service.frontdoor.proxy_header import ProxyHeaderError, missing, parse
from service.reload.changes import running
from service.factory import RESTART_ONLY
from service.settings import SettingsError, load_settings
from tests.support import REPO, LoadBalancer, UpstreamServer, env_for
from tests.support.certs import Issued, issue, make_ca
from tests.support.haproxy import HAProxy
from tests.support.tools import require
from tests.support.waiting import wait_for

TRUSTED = "127.0.0.8/29"  # HAProxy connects from 127.0.0.9; .14 is a raw trusted peer
HAPROXY_SOURCE = "127.0.0.9"
HEADER_TIMEOUT = 2.0
ADMIN = "127.0.0.70"  # the one client LB_ADMIN_ALLOW lets in
V2_SIGNATURE = b"\r\n\r\n\x00\r\nQUIT\n"
REQUEST = b"GET /api/echo HTTP/1.1\r\nHost: lb.test\r\nConnection: close\r\n\r\n"


# ------------------------------------------------------------------------------ fixtures


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    folder = tmp_path_factory.mktemp("tls")
    ca: Issued = make_ca()
    cert, key = issue(ca, "lb.test").write(folder)
    (folder / "ca.pem").write_bytes(ca.cert_pem)
    trust = ssl.create_default_context(cafile=str(folder / "ca.pem"))
    return {"cert": cert, "key": key, "trust": trust}


def _env(upstreams: dict[str, UpstreamServer], **extra: str) -> dict[str, str]:
    return env_for(
        upstreams,
        LB_PROXY_PROTOCOL="true",
        LB_TRUSTED_PROXIES=TRUSTED,
        LB_HEADER_TIMEOUT=str(HEADER_TIMEOUT),
        **extra,
    )


@pytest.fixture(scope="module")
def lb(upstreams: dict[str, UpstreamServer]) -> Iterator[LoadBalancer]:
    # three requests per client a minute: each test below uses client addresses of its own
    env = _env(upstreams, LB_RATE_LIMIT="3/min burst=3", LB_ADMIN_ALLOW=f"{ADMIN}/32")
    balancer = LoadBalancer(env, workers=2)
    yield balancer
    balancer.stop()


@pytest.fixture(scope="module")
def lb_tls(upstreams: dict[str, UpstreamServer], files: dict[str, Any]) -> Iterator[LoadBalancer]:
    env = _env(upstreams, LB_TLS_CERT=files["cert"], LB_TLS_KEY=files["key"])
    balancer = LoadBalancer(env, tls=files["trust"])
    yield balancer
    balancer.stop()


@pytest.fixture(scope="module")
def haproxy(
    lb: LoadBalancer, lb_tls: LoadBalancer, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[HAProxy]:
    to_lb = f"127.0.0.1:{lb.port} source {HAPROXY_SOURCE}"
    proxy = HAProxy(
        require("haproxy"),
        tmp_path_factory.mktemp("haproxy"),
        {
            "v1": f"{to_lb} send-proxy",
            "v2": f"{to_lb} send-proxy-v2",
            # a health check over PROXY v2: HAProxy sends it as LOCAL
            "checked": f"{to_lb} send-proxy-v2 check inter 200 check-send-proxy",
            # TLS passes through HAProxy untouched, after the PROXY header
            "tls": f"127.0.0.1:{lb_tls.port} source {HAPROXY_SOURCE} send-proxy",
        },
        extra={"checked": "option httpchk GET /lb-health"},
    )
    yield proxy
    proxy.stop()


def client_from(address: str, base_url: str, verify: ssl.SSLContext | bool = True) -> httpx.Client:
    """An httpx client whose connections leave from ``address`` (a 127.0.0.x of its own)."""
    transport = httpx.HTTPTransport(local_address=address, verify=verify, retries=0)
    return httpx.Client(base_url=base_url, transport=transport, trust_env=False, timeout=10.0)


def forwarded_for(response: httpx.Response) -> str:
    headers = {name.lower(): value for name, value in response.json()["headers"]}
    return headers["x-forwarded-for"]


def logged(balancer: LoadBalancer, text: str) -> bool:
    return any(text in line for line in list(balancer.output))


def raw(port: int, data: bytes, *, source: str, wait: float = 5.0, shut: bool = False) -> bytes:
    """Send ``data`` from ``source`` and read until the server closes (b"" if it closed
    without a word, a reset included); ``shut``: end our side after sending."""
    with socket.socket() as sock:
        sock.bind((source, 0))
        sock.settimeout(wait)
        sock.connect(("127.0.0.1", port))
        sock.sendall(data)
        if shut:
            sock.shutdown(socket.SHUT_WR)
        received = b""
        try:
            while chunk := sock.recv(65536):
                received += chunk
        except ConnectionResetError:
            pass
    return received


def v2(command: int, family: int, block: bytes, version: int = 2) -> bytes:
    return (
        V2_SIGNATURE
        + bytes([version << 4 | command, family])
        + struct.pack("!H", len(block))
        + block
    )


def inet(source: str, port: int = 40000) -> bytes:
    return socket.inet_aton(source) + socket.inet_aton("127.0.0.1") + struct.pack("!HH", port, 80)


# ------------------------------------------------------------ the client, through HAProxy


@pytest.mark.parametrize(
    ("listener", "clients"),
    [("v1", ("127.0.0.2", "127.0.0.3")), ("v2", ("127.0.0.4", "127.0.0.5"))],
)
def test_the_upstream_and_the_access_log_see_each_client(
    lb: LoadBalancer, haproxy: HAProxy, listener: str, clients: tuple[str, ...]
) -> None:
    for address in clients:
        with client_from(address, haproxy.url(listener)) as client:
            response = client.get("/api/echo")
        assert response.status_code == 200
        assert forwarded_for(response) == address  # not HAProxy's 127.0.0.9
        wait_for(lambda a=address: logged(lb, f"client={a} method=GET path=/api/echo"))
    assert not logged(lb, f"client={HAPROXY_SOURCE} method=GET path=/api/echo")


def test_a_per_client_rate_limit_tells_two_clients_behind_haproxy_apart(
    haproxy: HAProxy,
) -> None:
    with client_from("127.0.0.20", haproxy.url("v2")) as first:
        statuses = [first.get("/api/echo").status_code for _ in range(4)]
    assert statuses == [200, 200, 200, 429]  # LB_RATE_LIMIT=3/min burst=3, per client
    with client_from("127.0.0.21", haproxy.url("v1")) as second:
        assert second.get("/api/echo").status_code == 200  # the other client is not limited


def test_lb_admin_allow_checks_the_address_from_the_header(haproxy: HAProxy) -> None:
    with client_from(ADMIN, haproxy.url("v1")) as admin:
        assert admin.get("/metrics").status_code == 200
    with client_from("127.0.0.71", haproxy.url("v2")) as other:
        assert other.get("/metrics").status_code == 403


def test_workers_2_every_worker_takes_the_header(lb: LoadBalancer, haproxy: HAProxy) -> None:
    clients = [f"127.0.0.{n}" for n in range(100, 116)]
    for address in clients:  # a connection each: SO_REUSEPORT spreads them over the workers
        with client_from(address, haproxy.url("v2")) as client:
            assert forwarded_for(client.get("/api/echo")) == address
    workers = set()
    for address in clients:
        wait_for(lambda a=address: logged(lb, f"client={a} "))
        line = next(line for line in list(lb.output) if f"client={address} " in line)
        workers.add(line.split("worker=", 1)[1].split()[0])
    assert len(workers) == 2  # 16 connections all on one worker: 1 in 32768


def test_haproxys_v2_health_check_is_local_and_served(haproxy: HAProxy) -> None:
    assert wait_for(lambda: haproxy.server_status("checked") == ("UP", "L7OK"), 10)


def test_a_websocket_through_haproxy(lb: LoadBalancer, haproxy: HAProxy) -> None:
    sock = socket.socket()
    sock.bind(("127.0.0.30", 0))
    sock.connect(("127.0.0.1", haproxy.ports["v1"]))
    url = f"ws://127.0.0.1:{haproxy.ports['v1']}/api/ws-heartbeat"
    with connect(url, sock=sock, open_timeout=10, close_timeout=5) as ws:
        ws.send("hb")
        assert ws.ping().wait(10)  # the socket answers through HAProxy


def test_tls_behind_haproxy_the_header_comes_before_the_handshake(
    lb_tls: LoadBalancer, haproxy: HAProxy, files: dict[str, Any]
) -> None:
    with client_from("127.0.0.31", haproxy.url("tls", "https"), files["trust"]) as client:
        response = client.get("/api/echo")
        again = client.get("/api/echo")  # the same TLS connection, kept alive
    assert response.status_code == again.status_code == 200
    headers = {name.lower(): value for name, value in response.json()["headers"]}
    assert headers["x-forwarded-for"] == "127.0.0.31"
    assert headers["x-forwarded-proto"] == "https"  # TLS is the front door's, after the header
    # a client that is no trusted proxy speaks TLS at once, as without LB_PROXY_PROTOCOL
    with client_from("127.0.0.32", lb_tls.url, files["trust"]) as direct:
        assert forwarded_for(direct.get("/api/echo")) == "127.0.0.32"


# ------------------------------------------------------------------- raw: what HAProxy won't


def test_v2_local_is_served_as_a_connection_from_the_peer(lb: LoadBalancer) -> None:
    answer = raw(lb.port, v2(0x0, 0x00, b"") + REQUEST, source=HAPROXY_SOURCE)
    assert answer.startswith(b"HTTP/1.1 200")
    echoed = json.loads(answer.partition(b"\r\n\r\n")[2])
    assert dict((k.lower(), v) for k, v in echoed["headers"])["x-forwarded-for"] == HAPROXY_SOURCE


def test_v2_with_tlvs_is_accepted_and_its_tlvs_skipped(lb: LoadBalancer) -> None:
    tlvs = b"\x04\x00\x03abc" + b"\x02\x00\x07lb.test"  # NOOP, AUTHORITY
    answer = raw(lb.port, v2(0x1, 0x11, inet("198.51.100.4") + tlvs) + REQUEST, source="127.0.0.9")
    echoed = json.loads(answer.partition(b"\r\n\r\n")[2])
    assert dict((k.lower(), v) for k, v in echoed["headers"])["x-forwarded-for"] == "198.51.100.4"


def test_when_the_headers_address_is_a_trusted_proxy_its_forwarded_for_is_read(
    lb: LoadBalancer,
) -> None:
    header = b"PROXY TCP4 127.0.0.12 127.0.0.1 40000 80\r\n"  # 127.0.0.12 is in TRUSTED
    request = REQUEST.replace(b"\r\n\r\n", b"\r\nX-Forwarded-For: 203.0.113.50\r\n\r\n")
    assert raw(lb.port, header + request, source=HAPROXY_SOURCE).startswith(b"HTTP/1.1 200")
    wait_for(lambda: logged(lb, "client=203.0.113.50 method=GET"))


BAD_HEADERS = {
    "v1 leading zero": b"PROXY TCP4 198.51.100.04 127.0.0.1 40000 80\r\n",
    "v1 unknown protocol": b"PROXY TCP5 198.51.100.4 127.0.0.1 40000 80\r\n",
    "v1 family mismatch": b"PROXY TCP6 198.51.100.4 127.0.0.1 40000 80\r\n",
    "v1 port out of range": b"PROXY TCP4 198.51.100.4 127.0.0.1 65536 80\r\n",
    "v1 two spaces": b"PROXY TCP4  198.51.100.4 127.0.0.1 40000 80\r\n",
    "v1 lone LF": b"PROXY TCP4 198.51.100.4 127.0.0.1 40000 80\n",
    "v1 over 107 bytes": b"PROXY UNKNOWN " + b"f" * 100 + b"\r\n",
    "v2 version 1": v2(0x1, 0x11, inet("198.51.100.4"), version=1),
    "v2 unknown command": v2(0x2, 0x11, inet("198.51.100.4")),
    "v2 unknown family": v2(0x1, 0x41, inet("198.51.100.4")),
    "v2 address block too short": v2(0x1, 0x11, inet("198.51.100.4")[:8]),
    "v2 TLV past the end": v2(0x1, 0x11, inet("198.51.100.4") + b"\x04\x00\x09abc"),
    "no header at all": b"",
}


@pytest.mark.parametrize("header", BAD_HEADERS.values(), ids=BAD_HEADERS.keys())
def test_a_bad_header_from_a_trusted_peer_closes_the_connection(
    lb: LoadBalancer, upstreams: dict[str, UpstreamServer], header: bytes
) -> None:
    before = upstreams["api-gateway"].hits["/api/echo"]
    assert raw(lb.port, header + REQUEST, source=HAPROXY_SOURCE) == b""  # no answer at all
    assert upstreams["api-gateway"].hits["/api/echo"] == before
    wait_for(lambda: logged(lb, f"PROXY protocol: closed a connection from {HAPROXY_SOURCE}"))


@pytest.mark.parametrize(
    "part", [b"PROXY TCP4 198.51.100.4 127.0", v2(0x1, 0x11, inet("198.51.100.4"))[:20]]
)
def test_a_truncated_header_closes_the_connection(lb: LoadBalancer, part: bytes) -> None:
    started = time.monotonic()
    assert raw(lb.port, part, source=HAPROXY_SOURCE, shut=True) == b""
    assert time.monotonic() - started < HEADER_TIMEOUT  # at the end of the stream, not later


def test_a_header_that_does_not_come_in_time_closes_the_connection(lb: LoadBalancer) -> None:
    started = time.monotonic()
    assert raw(lb.port, b"PROXY TCP4 1", source=HAPROXY_SOURCE, wait=10) == b""
    assert HEADER_TIMEOUT - 0.2 < time.monotonic() - started < HEADER_TIMEOUT + 3


def test_the_reason_is_logged_once_per_peer_and_minute(lb_tls: LoadBalancer) -> None:
    peer = "127.0.0.14"  # trusted, and not used elsewhere: a line of its own
    for _ in range(3):
        assert raw(lb_tls.port, b"PROXY TCP9 x\r\n", source=peer) == b""
    wait_for(lambda: logged(lb_tls, f"closed a connection from {peer}"))
    time.sleep(0.3)
    lines = [line for line in list(lb_tls.output) if f"closed a connection from {peer}" in line]
    assert len(lines) == 1
    assert "malformed v1 header" in lines[0]


@pytest.mark.parametrize(
    "header",
    [b"PROXY TCP4 198.51.100.4 127.0.0.1 40000 80\r\n", v2(0x1, 0x11, inet("198.51.100.4"))],
    ids=["v1", "v2"],
)
def test_a_forged_header_from_an_untrusted_peer_is_a_bad_request(
    lb: LoadBalancer, upstreams: dict[str, UpstreamServer], header: bytes
) -> None:
    before = upstreams["api-gateway"].hits["/api/echo"]
    answer = raw(lb.port, header + REQUEST, source="127.0.0.40")
    assert answer.startswith(b"HTTP/1.1 400")
    assert b"PROXY protocol header is taken only from LB_TRUSTED_PROXIES" in answer
    assert upstreams["api-gateway"].hits["/api/echo"] == before


def test_a_forged_header_before_tls_fails_the_handshake(
    lb_tls: LoadBalancer, files: dict[str, Any]
) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.41", 0))
        sock.settimeout(10)
        sock.connect(("127.0.0.1", lb_tls.port))
        sock.sendall(b"PROXY TCP4 198.51.100.4 127.0.0.1 40000 80\r\n")
        with pytest.raises((ssl.SSLError, ConnectionError)):
            files["trust"].wrap_socket(sock, server_hostname="lb.test")


# ------------------------------------------------------------------------ the parser, bytes


def whole(header: bytes, after: bytes = b"") -> Any:
    """Read ``header`` (then ``after``, the stream's next bytes) as the reader does: never
    more than ``missing`` asks for, which must not reach past a valid header's end."""
    stream, received = header + after, b""
    while (need := missing(received)) > 0:
        assert len(received) + need <= len(stream), "asked past the stream's end"
        received = stream[: len(received) + need]
    assert received == header
    return parse(received)


@pytest.mark.parametrize(
    ("header", "source"),
    [
        (b"PROXY TCP4 192.168.0.1 192.168.0.11 56324 443\r\n", ("192.168.0.1", 56324)),
        (b"PROXY TCP4 255.255.255.255 255.255.255.255 65535 65535\r\n", ("255.255.255.255", 65535)),
        (b"PROXY TCP6 2001:db8::1 ::1 0 443\r\n", ("2001:db8::1", 0)),
        (
            b"PROXY TCP6 " + b"ffff:" * 7 + b"ffff " + b"ffff:" * 7 + b"ffff 65535 65535\r\n",
            ("ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff", 65535),
        ),  # 104 bytes
        (b"PROXY UNKNOWN\r\n", None),
        (b"PROXY UNKNOWN " + b"f" * 91 + b"\r\n", None),  # 107 bytes: the longest allowed
        (v2(0x1, 0x11, inet("203.0.113.9", 1234)), ("203.0.113.9", 1234)),
        (v2(0x1, 0x21, bytes(15) + b"\x01" + bytes(16) + b"\x04\xd2\x00\x50"), ("::1", 1234)),
        (v2(0x0, 0x11, inet("203.0.113.9")), None),  # LOCAL: its addresses ignored
        (v2(0x1, 0x00, b""), None),  # AF_UNSPEC
        (v2(0x1, 0x31, bytes(216)), None),  # AF_UNIX
    ],
)
def test_headers_are_read_exactly_and_understood(header: bytes, source: Any) -> None:
    parsed = whole(header)
    assert parsed.source == (None if source is None else (ip_address(source[0]), source[1]))


@pytest.mark.parametrize("header", BAD_HEADERS.values(), ids=BAD_HEADERS.keys())
def test_bad_headers_are_refused_by_the_parser(header: bytes) -> None:
    if not header:
        with pytest.raises(ProxyHeaderError):
            missing(b"GET / HTTP/1.1\r\n")
        return
    with pytest.raises(ProxyHeaderError):
        whole(header, REQUEST)


def test_believable_addresses() -> None:
    remote, loopback = ip_address("198.51.100.1"), ip_address("127.0.0.9")
    assert believable(ip_address("203.0.113.5"), remote)
    assert not believable(ip_address("0.0.0.0"), loopback)
    assert not believable(ip_address("::"), loopback)
    assert not believable(ip_address("127.0.0.1"), remote)  # a remote balancer's "localhost"
    assert believable(ip_address("127.0.0.2"), loopback)  # a balancer on this very host
    assert not believable(ip_address("169.254.1.1"), remote)
    assert not believable(ip_address("fe80::1"), remote)
    assert not believable(ip_address("::1"), None)


# ------------------------------------------------------------------------------ settings


def test_the_setting_is_parsed_once_and_checked() -> None:
    assert load_settings(env={}).frontdoor.proxy_protocol is False
    on = load_settings(env={"LB_PROXY_PROTOCOL": "true", "LB_TRUSTED_PROXIES": "10.0.0.0/8"})
    assert on.frontdoor.proxy_protocol is True
    with pytest.raises(SettingsError, match="LB_PROXY_PROTOCOL='maybe'"):
        load_settings(env={"LB_PROXY_PROTOCOL": "maybe", "LB_TRUSTED_PROXIES": "10.0.0.0/8"})
    with pytest.raises(SettingsError, match="LB_PROXY_PROTOCOL=true needs LB_TRUSTED_PROXIES"):
        load_settings(env={"LB_PROXY_PROTOCOL": "true"})
    (line,) = check_lines(on).listen
    assert "PROXY protocol" in line and "10.0.0.0/8" in line
    assert check_lines(load_settings(env={})) == ((), (), 0)
    # a reload cannot change it: the listener was set up for it
    kept, waiting = running(load_settings(env={}), on, RESTART_ONLY)
    assert kept.frontdoor.proxy_protocol is True and "LB_PROXY_PROTOCOL" in waiting


def test_the_start_up_error_names_the_variable(
    upstreams: dict[str, UpstreamServer],
) -> None:
    env = env_for(upstreams, LB_PROXY_PROTOCOL="yes please")
    done = subprocess.run(
        [sys.executable, "-m", "service", "--check"], cwd=REPO, env=env, capture_output=True
    )
    assert done.returncode == 2
    assert b"LB_PROXY_PROTOCOL='yes please' is not valid" in done.stderr
