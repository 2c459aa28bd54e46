"""Certificate rotation without a restart, as a Kubernetes Secret mount rotates it (a new
directory and one atomic swap of the ``..data`` symlink), on a load balancer with two
workers: within 5 s every worker hands new handshakes the new certificate, a download
running on the old one finishes, a bad new pair is refused (logged once) while the old one
stays, and an expiry within 14 days is logged once."""

from __future__ import annotations

import hashlib
import os
import signal
import socket
import ssl
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path

import pytest

from tests.support import LoadBalancer, UpstreamServer, env_for
from tests.support.certs import DAY, Issued, SecretMount, issue, make_ca
from tests.support.net import socket_owner
from tests.support.processes import children
from tests.support.waiting import wait_for

DOWNLOAD = 48 * 1024 * 1024
SWITCH_WITHIN = 5.0  # seconds, as the issue asks


@pytest.fixture(scope="module")
def ca() -> Issued:
    return make_ca()


def fingerprint(tls: ssl.SSLSocket) -> str:
    der = tls.getpeercert(binary_form=True)
    assert der is not None
    return hashlib.sha256(der).hexdigest()


def new_handshakes(lb: LoadBalancer, trust: ssl.SSLContext, count: int = 12) -> dict[str, set[int]]:
    """Open ``count`` connections at once; per served certificate, the workers that served it."""
    workers = children(lb.process.pid)
    seen: dict[str, set[int]] = {}
    with ExitStack() as stack:
        opened = []
        for _ in range(count):
            raw = socket.create_connection(("127.0.0.1", lb.port), timeout=5)
            opened.append(stack.enter_context(trust.wrap_socket(raw, server_hostname="127.0.0.1")))
        for tls in opened:
            owner = socket_owner(lb.port, tls.getsockname()[1], workers)
            seen.setdefault(fingerprint(tls), set()).add(owner or 0)
    return seen


def served_by_every_worker(lb: LoadBalancer, trust: ssl.SSLContext, pair: Issued) -> bool:
    """Only ``pair`` is served, and each of the two workers was seen serving it (connections
    are spread by the kernel, so a few rounds may be needed to see both)."""
    owners: set[int] = set()
    for _ in range(40):
        seen = new_handshakes(lb, trust)
        if set(seen) != {pair.fingerprint}:
            return False
        owners |= seen[pair.fingerprint]
        if len(owners - {0}) == 2:
            return True
    raise AssertionError(f"connections reached only workers {owners}")


def lines(lb: LoadBalancer, text: str) -> list[str]:
    return [line for line in list(lb.output) if text in line]


@pytest.fixture(scope="module")
def first(ca: Issued) -> Issued:
    return issue(ca, "first")


@pytest.fixture(scope="module")
def mount(first: Issued, tmp_path_factory: pytest.TempPathFactory) -> SecretMount:
    return SecretMount(tmp_path_factory.mktemp("secret") / "tls", first)


@pytest.fixture(scope="module")
def trust(ca: Issued, tmp_path_factory: pytest.TempPathFactory) -> ssl.SSLContext:
    path = tmp_path_factory.mktemp("ca") / "ca.pem"
    path.write_bytes(ca.cert_pem)
    return ssl.create_default_context(cafile=str(path))


@pytest.fixture(scope="module")
def lb(
    upstreams: dict[str, UpstreamServer], mount: SecretMount, trust: ssl.SSLContext
) -> Iterator[LoadBalancer]:
    env = env_for(upstreams, LB_TLS_CERT=mount.cert, LB_TLS_KEY=mount.key, LB_ACCESS_LOG="false")
    balancer = LoadBalancer(env, workers=2, tls=trust)
    yield balancer
    balancer.stop()


def test_rotation_by_symlink_swap_in_every_worker_while_a_download_goes_on(
    lb: LoadBalancer, mount: SecretMount, trust: ssl.SSLContext, ca: Issued, first: Issued
) -> None:
    assert served_by_every_worker(lb, trust, first)

    # A long download on the old certificate, read slowly: most of it is still to come.
    raw = socket.create_connection(("127.0.0.1", lb.port), timeout=10)
    download = trust.wrap_socket(raw, server_hostname="127.0.0.1")
    download.sendall(
        b"GET /api/big?bytes=%d HTTP/1.1\r\nHost: lb\r\nConnection: close\r\n\r\n" % DOWNLOAD
    )
    received = b""
    while b"\r\n\r\n" not in received or len(received) < 256 * 1024:
        received += download.recv(65536)
    head, _, body = received.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200") and b"content-length: %d" % DOWNLOAD in head.lower()
    assert fingerprint(download) == first.fingerprint

    # cert-manager renews: a new directory, ..data swapped. This one expires in 7 days.
    second = issue(ca, "second", valid_for=7 * DAY)
    mount.swap(second)
    waited = wait_for(lambda: served_by_every_worker(lb, trust, second), SWITCH_WITHIN, step=0.2)
    print(f"every worker served the new certificate after {waited.elapsed:.2f} s")

    # The download goes on, on the connection (and the certificate) it started with.
    total = len(body)
    while chunk := download.recv(1 << 20):
        total += len(chunk)
    assert total == DOWNLOAD
    assert fingerprint(download) == first.fingerprint
    download.close()

    # logged once for the host (by one worker), the expiry because it is within 14 days
    wait_for(lambda: lines(lb, "TLS certificate CN=second expires"), 5)
    assert len(lines(lb, "TLS certificate rotated: now serving CN=second")) == 1
    assert not lines(lb, "TLS certificate CN=first expires")  # 30 days: no warning
    (warning,) = lines(lb, "TLS certificate CN=second expires")
    assert "in 7.0 days" in warning or "in 6.9 days" in warning
    stats = lb.client.get("/stats").json()["load-balancer"]["tls"]
    assert stats["subject"] == "CN=second" and stats["rotations"] == 1


def test_a_bad_new_pair_is_refused_once_and_the_old_one_stays(
    lb: LoadBalancer, mount: SecretMount, trust: ssl.SSLContext, ca: Issued
) -> None:
    served = lb.client.get("/stats").json()["load-balancer"]["tls"]
    current = next(iter(new_handshakes(lb, trust, 1)))
    assert current == served["fingerprint_sha256"]

    mismatched = issue(ca, "mismatched")
    mount.swap(mismatched, key_of=issue(ca, "someone else"))
    refusal = "TLS certificate files changed but cannot be served"
    wait_for(lambda: lines(lb, refusal), 10, step=0.2)
    for _ in range(3):  # still the old pair, in whichever worker answers
        assert set(new_handshakes(lb, trust)) == {current}
    wait_for(lambda: lb.client.get("/stats").json()["load-balancer"]["tls"]["refused"], 5)
    (line,) = lines(lb, refusal)  # once for the host, not per worker nor per poll
    assert "LB_TLS_KEY" in line and "is not the key of the certificate" in line

    good = issue(ca, "good again")
    mount.swap(good)
    wait_for(lambda: served_by_every_worker(lb, trust, good), SWITCH_WITHIN, step=0.2)
    assert lb.client.get("/stats").json()["load-balancer"]["tls"]["refused"] is None


def test_the_watch_judges_a_change_only_once_it_has_settled(
    ca: Issued, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """In process: a rotation written file by file is not an error; files that stay bad are
    logged once, and again if they go bad again after a good pair; only the speaker logs."""
    from service.settings import TlsSettings
    from service.tls.rotation import LiveCertificate

    a, b = issue(ca, "a"), issue(ca, "b")
    cert, key = a.write(tmp_path)
    live = LiveCertificate(TlsSettings(cert=cert, key=key))
    caplog.set_level("INFO", logger="service.tls")

    def logged(text: str) -> int:
        return sum(text in record.getMessage() for record in caplog.records)

    Path(cert).write_bytes(b.cert_pem)  # the certificate first, its key a moment later
    live.poll(speaker=True)
    assert live.current.subject == "CN=a" and live.refused is None and not caplog.records
    Path(key).write_bytes(b.key_pem)
    live.poll(speaker=True)
    assert live.current.subject == "CN=b" and logged("rotated: now serving CN=b") == 1

    for round_ in (1, 2):
        Path(key).unlink()
        for _ in range(3):
            live.poll(speaker=True)
        assert live.current.subject == "CN=b" and "cannot be read" in (live.refused or "")
        assert logged("cannot be served") == round_
        Path(key).write_bytes(b.key_pem)
        live.poll(speaker=True)
        assert live.refused is None

    Path(key).unlink()
    for _ in range(3):
        live.poll(speaker=False)  # another worker speaks for the host
    assert logged("cannot be served") == 2 and live.refused is not None


def test_a_replacement_worker_serves_the_last_good_pair_while_the_files_are_refused(
    lb: LoadBalancer, mount: SecretMount, trust: ssl.SSLContext, ca: Issued
) -> None:
    """Rotation to an expired certificate is refused (the old pair stays); a worker killed
    meanwhile is replaced by one that serves the host's last good pair (here one a worker
    accepted by rotation, not the start-up one) instead of dying on the files, and the next
    good pair reaches it like every worker."""
    current = lb.client.get("/stats").json()["load-balancer"]["tls"]["fingerprint_sha256"]
    refused = len(lines(lb, "TLS certificate files changed but cannot be served"))
    mount.swap(issue(ca, "expired", expired=True))
    wait_for(lambda: len(lines(lb, "cannot be served")) > refused, 10, step=0.2)
    (line,) = lines(lb, "TLS certificate files changed but cannot be served")[refused:]
    assert "LB_TLS_CERT" in line and "expired on" in line
    assert set(new_handshakes(lb, trust)) == {current}

    workers = children(lb.process.pid)
    victim = min(new_handshakes(lb, trust)[current] - {0})  # a worker: it served one
    ready = lb.workers_ready
    os.kill(victim, signal.SIGKILL)
    wait_for(lambda: lb.workers_ready > ready, 15, step=0.1)
    replacement = (set(children(lb.process.pid)) - set(workers)).pop()
    owners: set[int] = set()
    for _ in range(40):  # the replacement among the workers that serve the last good pair
        seen = new_handshakes(lb, trust)
        assert set(seen) == {current}
        owners |= seen[current]
        if replacement in owners:
            break
    assert replacement in owners, owners
    assert lines(lb, "this worker starts with the host's last good pair")

    good = issue(ca, "after the replacement")
    mount.swap(good)
    wait_for(lambda: served_by_every_worker(lb, trust, good), SWITCH_WITHIN, step=0.2)


MIB = 1024 * 1024  # the largest certificate or key file read


def test_refused_content_is_not_parsed_again_and_a_huge_file_is_not_read_whole(
    ca: Issued, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """In process: the watch reads and hashes the files every second, but content it has
    refused is not parsed again; a file over 1 MiB is refused without being read whole, at
    start-up as on rotation."""
    from service import tls
    from service.settings import SettingsError, TlsSettings, load_settings
    from service.tls import rotation

    a, b = issue(ca, "a"), issue(ca, "b")
    cert, key = a.write(tmp_path)
    live = rotation.LiveCertificate(TlsSettings(cert=cert, key=key))
    parsed: list[str] = []
    real_load_pair = rotation.load_pair

    def counting(*args: object, **kwargs: object) -> object:
        parsed.append(str(args[0]))
        return real_load_pair(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(rotation, "load_pair", counting)
    Path(key).write_bytes(b.key_pem)  # a's certificate, b's key: never servable
    for _ in range(2):
        live.poll(speaker=True)
    assert live.refused and "is not the key" in live.refused and len(parsed) == 2
    for _ in range(5):
        live.poll(speaker=True)
    assert len(parsed) == 2  # the same bytes: the same verdict, not parsed again

    big = Path(cert)
    big.write_bytes(a.cert_pem)
    with big.open("ab") as file:  # a sparse file: 16 MiB that cost no disk
        file.truncate(16 * MIB)
    Path(key).write_bytes(a.key_pem)
    read: list[int] = []
    real_open = open

    def recording_open(path: object, mode: str = "r", *args: object, **kwargs: object) -> object:
        file = real_open(path, mode, *args, **kwargs)  # type: ignore[call-overload]
        if str(path) == cert:
            original = file.read
            file.read = lambda size=-1: read.append(size) or original(size)  # type: ignore[method-assign]
        return file

    monkeypatch.setattr("builtins.open", recording_open)
    for _ in range(2):
        live.poll(speaker=True)
    monkeypatch.setattr("builtins.open", real_open)
    assert live.refused and "over 1024 KiB" in live.refused and "LB_TLS_CERT" in live.refused
    assert read and all(0 < size <= MIB + 1 for size in read), read
    with pytest.raises(SettingsError, match=r"LB_TLS_CERT=.* is over 1024 KiB"):
        tls.check(load_settings(env={"LB_TLS_CERT": cert, "LB_TLS_KEY": key}))
