"""The front door against real processes and raw sockets: slow clients cut off at the head
deadline, the connection cap, WebSocket protocol errors, readiness while draining, a worker
killed with SIGKILL replaced, and one stopped with SIGSTOP, serving or before its first
stamp. (Malformed heads: ``test_frontdoor_corpus.py``; SIGTERM during start-up and to the
process group: ``test_process.py``.)"""

from __future__ import annotations

import contextlib
import os
import selectors
import signal
import socket
import threading
import time
from pathlib import Path

import httpx

from service.frontdoor.liveness import STARTUP_ALLOWANCE
from tests.support import (
    LoadBalancer,
    UpstreamServer,
    children,
    env_for,
    slow_request_in_flight,
    wait_for,
)
from tests.support.rawws import frame, open_websocket, read_close_code
from tests.support.shm import left_in_shm, shm_mapped, shm_semaphores

SLOW_HEAD = b"GET /api/slow HTTP/1.1\r\nHost: a\r\nX-Slow: " + b"a" * 200


HEADER_TIMEOUT = 4.0


def test_slowloris_connections_are_closed_at_the_header_deadline(
    upstreams: dict[str, UpstreamServer],
) -> None:
    env = env_for(upstreams, LB_HEADER_TIMEOUT=str(HEADER_TIMEOUT))
    balancer = LoadBalancer(env, workers=2)
    sockets: list[socket.socket] = []
    silent: list[socket.socket] = []
    normal: list[tuple[float, int | str]] = []  # (answered, seconds after opened_at; status)
    done = threading.Event()

    def meanwhile() -> None:  # normal requests, each on a new connection, from another thread
        while not done.wait(0.2):
            try:
                status: int | str = httpx.get(
                    f"{balancer.url}/lb-health", trust_env=False, timeout=10
                ).status_code
            except httpx.HTTPError as error:
                status = repr(error)
            normal.append((time.monotonic() - opened_at, status))

    normal_requests = threading.Thread(target=meanwhile)
    try:
        selector = selectors.DefaultSelector()
        opened_at = time.monotonic()
        for _ in range(100):
            sock = socket.create_connection(("127.0.0.1", balancer.port), timeout=5)
            sock.setblocking(False)
            sockets.append(sock)
            selector.register(sock, selectors.EVENT_READ)
        for _ in range(10):  # these never send a byte: the same deadline holds for them
            sock = socket.create_connection(("127.0.0.1", balancer.port), timeout=5)
            sock.setblocking(False)
            silent.append(sock)
            selector.register(sock, selectors.EVENT_READ)
        normal_requests.start()
        closed_after: dict[socket.socket, float] = {}
        answers: dict[socket.socket, bytes] = {}
        sent = 0
        next_byte = time.monotonic()
        while len(closed_after) < len(sockets) + len(silent) and time.monotonic() - opened_at < 20:
            now = time.monotonic()
            if now >= next_byte and sent < len(SLOW_HEAD):  # one byte a second, on each
                for sock in sockets:
                    if sock not in closed_after:
                        with contextlib.suppress(OSError):
                            sock.send(SLOW_HEAD[sent : sent + 1])
                sent += 1
                next_byte = now + 1.0
            for key, _ in selector.select(timeout=0.1):
                sock = key.fileobj
                assert isinstance(sock, socket.socket)
                try:
                    data = sock.recv(65536)
                except (ConnectionResetError, BlockingIOError):
                    data = b""
                answers[sock] = answers.get(sock, b"") + data
                if not data:
                    closed_after[sock] = time.monotonic() - opened_at
                    selector.unregister(sock)
        done.set()
        normal_requests.join()
        assert len(closed_after) == 110, f"{len(closed_after)} of 100 + 10 closed"
        first_closed = min(closed_after.values())
        assert first_closed >= HEADER_TIMEOUT - 0.5  # not before the deadline...
        # ...and all soon after it: a busy machine's margin, far below Sanic's own 60-s timeout
        assert max(closed_after.values()) < HEADER_TIMEOUT + 8
        assert all(answers[sock].startswith(b"HTTP/1.1 408 ") for sock in sockets)
        assert all(answers[sock] == b"" for sock in silent)  # nothing to answer: just closed
        # the 110 held connections starve no one: normal requests were answered meanwhile
        assert {status for _, status in normal} == {200}, normal
        served_while_held = [answered for answered, _ in normal if answered < first_closed]
        assert len(served_while_held) >= 3, normal
    finally:
        done.set()
        if normal_requests.is_alive():
            normal_requests.join()
        for sock in sockets + silent:
            sock.close()
        balancer.stop()


def test_connections_over_the_cap_get_503_and_are_closed(
    upstreams: dict[str, UpstreamServer],
) -> None:
    balancer = LoadBalancer(env_for(upstreams, LB_MAX_CLIENT_CONNECTIONS="5"))  # one process
    idle: list[socket.socket] = []
    try:
        balancer.client.close()  # its keep-alive connection would count against the cap
        for _ in range(5):
            idle.append(socket.create_connection(("127.0.0.1", balancer.port), timeout=5))
        over = httpx.get(f"{balancer.url}/lb-health", trust_env=False, timeout=5)
        assert over.status_code == 503
        assert over.headers["retry-after"] == "1"
        assert over.json()["error"] == "service unavailable"
        idle.pop().close()

        def answers() -> bool:
            return httpx.get(f"{balancer.url}/lb-health", trust_env=False).status_code == 200

        assert wait_for(answers, timeout=5)
    finally:
        for sock in idle:
            sock.close()
        balancer.stop()


WS_ERRORS = [
    ("invalid-utf8", frame(1, b"\xff\xfe"), 1007),
    ("invalid-utf8-across-fragments", frame(1, b"ok\xe2", fin=False) + frame(0, b"\x28\xa1"), 1007),
    ("unmasked-client-frame", frame(1, b"hb", mask=False), 1002),
    ("reserved-bit", frame(1, b"hb", rsv=4), 1002),
    ("reserved-opcode", frame(3, b"x"), 1002),
    ("continuation-first", frame(0, b"x"), 1002),
    ("control-frame-too-long", frame(9, b"x" * 200), 1002),
    ("message-too-big", frame(2, b"x" * (70 * 1024)), 1009),
]


def test_websocket_protocol_errors_close_with_their_code_at_once(
    upstreams: dict[str, UpstreamServer],
) -> None:
    balancer = LoadBalancer(env_for(upstreams, LB_WS_IDLE_TIMEOUT="30"), workers=2)
    try:
        for name, data, expected in WS_ERRORS:
            sock = open_websocket(balancer.port, "/api/ws-heartbeat")
            try:
                sock.sendall(data)
                code, after = read_close_code(sock, timeout=5)
            finally:
                sock.close()
            assert code == expected, name
            assert after < 2.0, (name, after)  # at once, not at the idle timeout
    finally:
        balancer.stop()
    output = "".join(balancer.output)
    assert "never retrieved" not in output
    assert "UnicodeDecodeError" not in output


def test_readiness_is_503_while_draining_and_in_flight_requests_complete(
    upstreams: dict[str, UpstreamServer],
) -> None:
    balancer = LoadBalancer(env_for(upstreams, LB_DRAIN_DELAY="3"), workers=2)
    try:
        assert balancer.client.get("/lb-health?ready=1").status_code == 200
        thread, result = slow_request_in_flight(balancer, upstreams["api-gateway"], 4, 20)
        semaphores = shm_semaphores(balancer.process.pid)
        mapped = shm_mapped([balancer.process.pid])
        balancer.process.send_signal(signal.SIGTERM)
        seen: dict[str, object] = {}

        def readiness_says_draining() -> bool:
            with httpx.Client(base_url=balancer.url, trust_env=False, timeout=2) as client:
                ready = client.get("/lb-health?ready=1")
                if ready.status_code != 503:
                    return False
                seen["ready"] = ready.json()
                seen["live"] = client.get("/lb-health").status_code
                return True

        assert wait_for(readiness_says_draining, timeout=3, step=0.05)
        assert seen["live"] == 200  # liveness stays 200: the process is fine, only leaving
        assert seen["ready"]["status"] == "draining"  # type: ignore[index]
        assert seen["ready"]["error"] == "service unavailable"  # type: ignore[index]
        thread.join(20)
        assert result.get("status") == 200, result
        assert balancer.process.wait(20) == 0
        assert mapped  # the shared block (its locks are robust mutexes inside it)...
        assert not any(os.path.exists(path) for path in semaphores)  # ...no semaphore left
        assert not left_in_shm(mapped)  # ...and the block unlinked
    finally:
        balancer.stop(signal.SIGKILL)


def _stats(balancer: LoadBalancer) -> dict:
    with httpx.Client(base_url=balancer.url, trust_env=False, timeout=5) as client:
        return client.get("/stats").json()["load-balancer"]


class Load:
    """``GET /api/load`` on a new connection each time, from a thread, until ``stop()``:
    how many were answered 200, failed, and answered 200 after ``mark()``."""

    def __init__(self, balancer: LoadBalancer, timeout: float) -> None:
        self.outcomes = {"ok": 0, "failed": 0, "ok_after_mark": 0}
        self._balancer, self._timeout = balancer, timeout
        self._stop, self._marked = threading.Event(), threading.Event()
        self._thread = threading.Thread(target=self._run)
        self._thread.start()

    def mark(self) -> None:
        self._marked.set()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(self._timeout)

    def _run(self) -> None:
        url = self._balancer.url
        while not self._stop.is_set():
            try:
                with httpx.Client(base_url=url, trust_env=False, timeout=self._timeout) as client:
                    ok = client.get("/api/load").status_code == 200
            except httpx.TransportError:
                ok = False
            self.outcomes["ok" if ok else "failed"] += 1
            if ok and self._marked.is_set():
                self.outcomes["ok_after_mark"] += 1


def test_a_killed_worker_is_replaced_and_totals_are_kept(
    upstreams: dict[str, UpstreamServer],
) -> None:
    balancer = LoadBalancer(env_for(upstreams, LB_STATS_CACHE_TTL="0"), workers=2)
    load = Load(balancer, timeout=5)
    outcomes = load.outcomes
    try:

        def both_served() -> dict[str, int] | None:
            """Requests by worker, once each has served enough that losing its row shows."""
            served = _stats(balancer)["requests_by_worker"]
            return served if len(served) == 2 and min(served.values()) >= 10 else None

        served_by = wait_for(both_served, timeout=15).value
        workers = [int(pid) for pid in served_by]
        victim = workers[0]
        os.kill(victim, signal.SIGKILL)
        load.mark()

        def replaced() -> bool:
            figures = _stats(balancer)
            pids = {int(pid) for pid in figures["requests_by_worker"]}
            return figures["workers"] == 2 and victim not in pids and len(pids) == 2

        assert wait_for(replaced, timeout=10, step=0.1)
        new_pid = (
            {int(pid) for pid in _stats(balancer)["requests_by_worker"]} - {workers[1]}
        ).pop()
        assert new_pid in children(balancer.process.pid)
        assert wait_for(lambda: outcomes["ok_after_mark"] >= 20, timeout=10)
        load.stop()
        # The dead row's totals kept: every request the load sent is the only proxied one
        # this service saw, so once the load has stopped the total is what was answered 200,
        # plus at most the failed ones (answered, then cut), not that less the victim's >= 10.
        # Compared once nothing is in flight: a total read while the load runs can be ahead of
        # the client's count by any number of answers (the waits below are for the last
        # answer's sample, recorded after the answer is written).
        ok, failed = outcomes["ok"], outcomes["failed"]
        total_after = wait_for(
            lambda: (t := _stats(balancer)["total_requests"]) >= ok and t, timeout=2
        ).value
        assert total_after <= ok + failed, (ok, failed, total_after)
    finally:
        load.stop()
        balancer.stop()
    died = [line for line in balancer.output if "died" in line and str(victim) in line]
    assert len(died) == 1, died  # logged once
    assert outcomes["failed"] <= 3, outcomes  # at most what the victim held in flight


STALL_TIMEOUT_S = 3  # LB_WORKER_STALL_TIMEOUT for the test; the default is 10 s


def _runs_python(pid: int) -> bool:
    """True once ``pid`` has exec'd multiprocessing's spawned interpreter (its command line
    is the spawn's; before the exec it is still the main process's)."""
    try:
        return b"spawn_main" in Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False


def _gone(pid: int) -> bool:
    """The process has ended (a zombie not yet reaped counts as ended)."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0] in ("Z", "X")
    except OSError:
        return True


def test_a_stalled_worker_is_killed_and_replaced_and_totals_are_kept(
    upstreams: dict[str, UpstreamServer],
) -> None:
    """A worker whose event loop stops (SIGSTOP: alive to the operating system, silent to
    everyone) is killed and replaced while the other worker keeps answering."""
    env = env_for(upstreams, LB_STATS_CACHE_TTL="0", LB_WORKER_STALL_TIMEOUT=str(STALL_TIMEOUT_S))
    balancer = LoadBalancer(env, workers=2)
    load = Load(balancer, timeout=20)
    outcomes = load.outcomes
    try:
        assert wait_for(lambda: len(_stats(balancer)["requests_by_worker"]) == 2, timeout=15)
        before = _stats(balancer)
        victim, other = (int(pid) for pid in before["requests_by_worker"])
        victims_requests = before["requests_by_worker"][str(victim)]
        os.kill(victim, signal.SIGSTOP)
        stopped_at = time.monotonic()
        load.mark()
        assert wait_for(lambda: outcomes["ok_after_mark"] >= 20, timeout=10)  # the other serves
        wait_for(lambda: _gone(victim), timeout=30, step=0.05)
        killed_after = time.monotonic() - stopped_at
        # Its last stamp was up to a stamp interval (1 s) before the stop, and the main
        # process looks every 0.1 s: about STALL_TIMEOUT_S. On a loaded machine a look can
        # come more than 2 s after the last, which counts as the main process having been
        # stopped itself and gives every worker the timeout again (StallWatch): so up to
        # about twice the timeout, still well under the default's 10 s.
        assert STALL_TIMEOUT_S - 1.0 <= killed_after < 3 * STALL_TIMEOUT_S, killed_after

        def replaced() -> set[int]:
            figures = _stats(balancer)
            pids = {int(pid) for pid in figures["requests_by_worker"]}
            return pids - {other} if figures["workers"] == 2 and victim not in pids else set()

        new_pid = wait_for(replaced, timeout=30, step=0.1).value.pop()
        replaced_after = time.monotonic() - stopped_at
        # killed, then a new worker started and served (the load's next request to it)
        print(f"stalled worker killed after {killed_after:.2f} s, replaced {replaced_after:.2f}")
        assert STALL_TIMEOUT_S <= replaced_after < killed_after + 10, (killed_after, replaced_after)
        assert new_pid in children(balancer.process.pid)
        assert victim not in children(balancer.process.pid)  # killed, not left stopped
        after = _stats(balancer)
        assert after["total_requests"] >= before["total_requests"]
        assert after["requests_by_worker"][str(new_pid)] >= victims_requests  # its row, kept
    finally:
        load.stop()
        balancer.stop()
    about_victim = [line for line in balancer.output if f"[{victim}]" in line]
    told = [line for line in about_victim if "stalled" in line or "died" in line]
    assert len(told) == 1 and "stalled" in told[0], told  # logged once
    assert outcomes["failed"] <= 3, outcomes  # at most what the victim held when it stopped


def test_a_replacement_that_hangs_before_its_first_stamp_is_killed_and_replaced(
    upstreams: dict[str, UpstreamServer],
) -> None:
    """A replacement worker stopped (SIGSTOP) the moment it appears, before it could stamp
    its row once, as one blocked in a start-up listener would be: it has no stamp to grow
    old, yet it is killed and replaced in its turn, logged once, while the other worker
    keeps answering."""
    env = env_for(upstreams, LB_STATS_CACHE_TTL="0", LB_WORKER_STALL_TIMEOUT=str(STALL_TIMEOUT_S))
    balancer = LoadBalancer(env, workers=2)
    load = Load(balancer, timeout=20)
    outcomes = load.outcomes
    main = balancer.process.pid
    try:
        assert wait_for(lambda: len(_stats(balancer)["requests_by_worker"]) == 2, timeout=15)
        victim, other = (int(pid) for pid in _stats(balancer)["requests_by_worker"])
        known = set(children(main))
        os.kill(victim, signal.SIGKILL)

        def newcomer() -> int:
            new = set(children(main)) - known
            return min(new) if new else 0

        hung = wait_for(newcomer, timeout=10, step=0.002).value
        # Stopped once it runs Python, not before: multiprocessing starts it with vfork, and
        # until the child execs, the main process's thread that spawned it (the monitor loop,
        # which also kills stalled workers) is suspended by the kernel. A child stopped in
        # that window stops the main process with it, which no worker can do by hanging (a
        # full run failed so: 60 s without a replacement, nothing logged after the spawn).
        wait_for(lambda: _runs_python(hung), timeout=10, step=0.001)
        os.kill(hung, signal.SIGSTOP)  # within milliseconds of its start: not a stamp yet
        stopped_at = time.monotonic()
        load.mark()
        assert wait_for(lambda: outcomes["ok_after_mark"] >= 20, timeout=10)  # the other serves

        def replaced() -> set[int]:
            figures = _stats(balancer)
            pids = {int(pid) for pid in figures["requests_by_worker"]}
            gone = pids.isdisjoint({victim, hung})
            return pids - {other} if figures["workers"] == 2 and gone else set()

        new_pid = wait_for(replaced, timeout=60, step=0.1).value.pop()
        replaced_after = time.monotonic() - stopped_at
        allowance = STARTUP_ALLOWANCE * STALL_TIMEOUT_S
        assert allowance - 0.5 <= replaced_after < 60, replaced_after
        assert new_pid in children(main)
        assert hung not in children(main)  # killed, not left stopped
        served = outcomes["ok_after_mark"]
        assert wait_for(lambda: outcomes["ok_after_mark"] >= served + 20, timeout=10)
    finally:
        load.stop()
        balancer.stop()
    about_hung = [line for line in balancer.output if f"[{hung}]" in line]
    told = [line for line in about_hung if "stalled" in line or "died" in line]
    assert len(told) == 1 and "stalled" in told[0] and "since it started" in told[0], told
    assert outcomes["failed"] <= 3, outcomes  # at most what the killed worker held
