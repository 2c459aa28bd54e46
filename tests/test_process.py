"""The real commands: ``sanic service.app --workers 2`` and ``python -m service``; how they
stop, on a signal to the main process or to the whole process group."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import threading
import time
from pathlib import Path

import httpx
import pytest

from tests.support import (
    python_m_service,
    REPO,
    SANIC,
    LoadBalancer,
    UpstreamServer,
    children,
    env_for,
    free_port,
    slow_request_in_flight,
    wait_for,
)
from tests.support.shm import group_members, left_in_shm, shm_mapped, shm_names, shm_semaphores


def test_two_workers_serve_and_drain_on_sigterm(upstreams: dict[str, UpstreamServer]) -> None:
    balancer = LoadBalancer(env_for(upstreams), workers=2)
    try:
        assert balancer.client.get("/lb-health").status_code == 200
        assert balancer.workers_ready == 2
        for _ in range(6):  # fresh connections, so both workers are likely to answer
            with httpx.Client(base_url=balancer.url, trust_env=False) as client:
                echo = client.get("/api/proc?n=1").json()
            assert echo["upstream"] == "api-gateway"
            assert echo["raw_path"] == "/api/proc?n=1"

        # in flight upstream when the SIGTERM comes
        thread, result = slow_request_in_flight(balancer, upstreams["api-gateway"], 2, 10)
        started = time.monotonic()
        returncode = balancer.stop(signal.SIGTERM)
        thread.join(10)
        assert result.get("status") == 200, result
        assert result["body"]["raw_path"] == "/api/slow?delay=2"  # type: ignore[index]
        assert returncode == 0
        assert time.monotonic() - started < 10
    finally:
        balancer.stop(signal.SIGKILL)


def test_python_m_service(upstreams: dict[str, UpstreamServer]) -> None:
    with python_m_service(env_for(upstreams)) as (process, url):
        assert process.poll() is None
        assert httpx.get(f"{url}/blog/x", trust_env=False).json()["upstream"] == "blog-service"
        process.send_signal(signal.SIGTERM)
        assert process.wait(20) == 0


GRACEFUL_SHUTDOWN_S = 15  # app.config.GRACEFUL_SHUTDOWN_TIMEOUT (service/factory.py)


@pytest.mark.parametrize("workers", [1, 2])
def test_sigterm_during_startup_exits(upstreams: dict[str, UpstreamServer], workers: int) -> None:
    """A pod stopped while it is still starting must still go away (Kubernetes sends SIGTERM),
    with status 0 and without leaving its semaphores in /dev/shm."""
    port = free_port()
    process = subprocess.Popen(
        [
            SANIC,
            "service.app",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--workers",
            str(workers),
        ],
        cwd=REPO,
        env=env_for(upstreams),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        # The worker processes exist (spawned) but are not serving yet.
        assert wait_for(lambda: len(_spawned(process.pid)) >= workers, timeout=20, step=0.02)
        semaphores = shm_semaphores(process.pid)
        mapped = shm_mapped([process.pid])
        process.send_signal(signal.SIGTERM)
        assert process.wait(GRACEFUL_SHUTDOWN_S) == 0
        # the shared block (its locks are robust mutexes inside it: no named semaphore)
        assert mapped, "the main process maps the shared block"
        assert wait_for(lambda: not any(os.path.exists(path) for path in semaphores), timeout=5)
        assert not left_in_shm(mapped)
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
            pytest.fail(f"still running {GRACEFUL_SHUTDOWN_S} s after SIGTERM during start-up")


def _spawned(pid: int) -> list[int]:
    """Children started by multiprocessing's spawn (the workers)."""
    found = []
    for child in children(pid):
        try:
            cmdline = open(f"/proc/{child}/cmdline", "rb").read()
        except OSError:
            continue
        if b"spawn_main" in cmdline:
            found.append(child)
    return found


# ------------------------------------------------------------- the whole process group


def _stop_the_group(
    process: subprocess.Popen[bytes],
    sig: signal.Signals,
    url: str,
    upstream: UpstreamServer,
    order: list[int] | None = None,
) -> None:
    """With a request in flight, ``sig`` to every process of the group at once (systemd's
    KillMode=control-group, ``kill -TERM -PGID``, Ctrl-C in a terminal), or to each pid of
    ``order`` in turn: one graceful stop, exit status 0, nothing left running or in
    /dev/shm."""
    pids = [process.pid, *children(process.pid)]
    held = shm_names(pids)
    mapped = shm_mapped(pids)
    result: dict[str, object] = {}

    def in_flight() -> None:
        try:
            with httpx.Client(base_url=url, trust_env=False, timeout=20) as client:
                result["status"] = client.get("/api/group?delay=0.5").status_code
        except Exception as exc:  # reported by the assertion below
            result["error"] = repr(exc)

    before = upstream.hits["/api/group"]
    thread = threading.Thread(target=in_flight)
    thread.start()
    assert wait_for(lambda: upstream.hits["/api/group"] > before, step=0.02)
    if order is None:
        os.killpg(process.pid, sig)  # started with start_new_session: its pid is the group's id
    for pid in order or ():
        os.kill(pid, sig)
        time.sleep(0.1)
    returncode = process.wait(30)
    thread.join(20)
    assert result == {"status": 200}  # the request in flight finished
    assert returncode == 0
    assert wait_for(lambda: not group_members(process.pid), timeout=10)
    assert mapped, "the group maps the shared block (its locks are inside it)"
    assert not [path for path in held if os.path.exists(path)]  # nothing named is left...
    assert not left_in_shm(mapped)  # ...the block included


@pytest.mark.parametrize("attempt", [1, 2, 3])
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_a_signal_to_the_process_group_is_one_graceful_stop(
    upstreams: dict[str, UpstreamServer], sig: signal.Signals, attempt: int
) -> None:
    balancer = LoadBalancer(env_for(upstreams), workers=2)
    try:
        _stop_the_group(balancer.process, sig, balancer.url, upstreams["api-gateway"])
    finally:
        balancer.stop(signal.SIGKILL)
    assert not [line for line in balancer.output if "Traceback" in line or "ERROR" in line]


def test_signals_to_each_process_in_turn_main_last_are_one_graceful_stop(
    upstreams: dict[str, UpstreamServer],
) -> None:
    """The same stop when the signals come one process at a time (a script or an operator):
    a worker that stopped first is not replaced, since the main process's turn comes."""
    balancer = LoadBalancer(env_for(upstreams), workers=2)
    try:
        workers = [
            int(pid) for pid in re.findall(r"Starting worker \[(\d+)\]", "".join(balancer.output))
        ]
        tracker = [pid for pid in children(balancer.process.pid) if pid not in workers]
        assert len(workers) == 2 and len(tracker) == 1, (workers, tracker)
        order = [workers[0], *tracker, workers[1], balancer.process.pid]
        _stop_the_group(
            balancer.process, signal.SIGTERM, balancer.url, upstreams["api-gateway"], order
        )
    finally:
        balancer.stop(signal.SIGKILL)
    assert not [line for line in balancer.output if "Traceback" in line or "ERROR" in line]
    assert not [line for line in balancer.output if "replacement" in line]  # none started


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_python_m_service_stops_on_a_signal_to_its_group(
    upstreams: dict[str, UpstreamServer], sig: signal.Signals, tmp_path: Path
) -> None:
    log = tmp_path / "service.log"
    with open(log, "wb") as output:
        with python_m_service(env_for(upstreams, LB_WORKERS="2"), output=output) as (process, url):
            assert wait_for(lambda: log.read_text().count("Worker ready") == 2, timeout=20)
            time.sleep(0.3)  # the main process sees both acks (it polls every 0.1 s)
            _stop_the_group(process, sig, url, upstreams["api-gateway"])
    text = log.read_text()
    assert "Traceback" not in text and "ERROR" not in text, text
