"""The load balancer as a real process, its environment, and its process tree from /proc."""

from __future__ import annotations

import contextlib
import os
import signal
import ssl
import subprocess
import sys
import threading
import time
from collections import deque
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import IO

import httpx

from tests.support.net import free_port
from tests.support.servers import URL_VARS, UpstreamServer
from tests.support.waiting import wait_for

REPO = Path(__file__).resolve().parents[2]
SANIC = str(Path(sys.executable).with_name("sanic"))


def clean_env(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """This process's environment minus LB_/SANIC_/BENCH_ settings, plus ``extra``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("LB_", "SANIC_", "BENCH_"))}
    env.update(extra or {})
    return env


def env_for(upstreams: Mapping[str, UpstreamServer], **extra: str) -> dict[str, str]:
    """A load balancer's environment with ``upstreams`` (by name) as its upstreams' URLs."""
    return clean_env({**{URL_VARS[name]: s.url for name, s in upstreams.items()}, **extra})


class LoadBalancer:
    """A real ``sanic <app>`` process on 127.0.0.1 and an httpx client for it.

    ``workers=None`` runs it with ``--single-process``; otherwise ``--workers N``, and it is
    ready only once every worker has said so. ``cpus`` pins it with ``taskset -c``;
    ``args`` are added to the command line; ``ready`` are the paths that must answer 200
    before the constructor returns. The process's output is read by a thread: the last lines
    kept in ``output`` for diagnosis, written to ``log`` if given, and echoed live with
    ``LB_TEST_LOG=1``.
    """

    def __init__(
        self,
        env: dict[str, str],
        *,
        workers: int | None = None,
        app: str = "service.app",
        name: str = "lb",
        cpus: str | None = None,
        args: Sequence[str] = (),
        ready: Sequence[str] = ("/lb-health",),
        log: Path | None = None,
        timeout: float = 20.0,
        repo: Path = REPO,
        tls: ssl.SSLContext | None = None,
    ) -> None:
        """``repo``: the checkout whose ``service`` runs (benchmarks compare two); ``tls``: the
        process serves HTTPS (``LB_TLS_*`` in ``env``), ``client`` trusts it with this context."""
        self.name = name
        self.port = free_port()
        self.url = f"{'https' if tls else 'http'}://127.0.0.1:{self.port}"
        self.workers = workers
        mode = ["--single-process"] if workers is None else ["--workers", str(workers)]
        argv = [SANIC, app, "--host", "127.0.0.1", "--port", str(self.port), *mode, *args]
        if cpus:
            argv = ["taskset", "-c", cpus, *argv]
        self.output: deque[str] = deque(maxlen=500)
        self.workers_ready = 0
        self._echo = bool(os.environ.get("LB_TEST_LOG"))
        self._log: IO[str] | None = open(log, "w") if log else None
        self.process = subprocess.Popen(
            argv,
            cwd=repo,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        self._reader = threading.Thread(target=self._read_output, daemon=True)
        self._reader.start()
        self.client = httpx.Client(
            base_url=self.url, timeout=30.0, trust_env=False, verify=tls or True
        )
        try:
            self._wait_ready(ready, timeout)
        except BaseException:
            self.stop(signal.SIGKILL)
            raise

    def _read_output(self) -> None:
        assert self.process.stdout is not None
        for raw in iter(self.process.stdout.readline, b""):
            line = raw.decode("utf-8", "replace")
            self.output.append(line)
            if "Worker ready" in line:
                self.workers_ready += 1
            if self._log:
                self._log.write(line)
                self._log.flush()
            if self._echo:
                sys.stderr.write(line)
        self.process.stdout.close()

    def _wait_ready(self, paths: Sequence[str], timeout: float) -> None:
        deadline = time.monotonic() + timeout
        for path in paths:
            while True:
                if self.process.poll() is not None:
                    raise RuntimeError(f"{self.name} exited with {self.process.returncode}")
                if time.monotonic() > deadline:
                    raise RuntimeError(f"{self.name}: {path} did not answer 200 in {timeout} s")
                try:
                    if self.client.get(path).status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                time.sleep(0.05)
        # With several workers, the first one answering is not enough: until the main process
        # has seen every worker's start-up ack (it polls every 0.1 s), a SIGTERM makes Sanic
        # 25.12 spin forever in WorkerManager.wait_for_ack instead of shutting down.
        if self.workers:
            while self.workers_ready < self.workers:
                if time.monotonic() > deadline:
                    raise RuntimeError(f"only {self.workers_ready} of {self.workers} workers ready")
                time.sleep(0.05)
            time.sleep(0.3)

    def pids(self) -> list[int]:
        """The main process and all its descendants."""
        return [self.process.pid, *children(self.process.pid)]

    def rss_kib(self) -> int:
        """Resident memory of the whole process tree, in KiB."""
        return sum(rss_kib(pid) for pid in self.pids())

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 20.0) -> int:
        """``sig`` to the main process; SIGKILL to its whole session after ``timeout``."""
        self.client.close()
        if self.process.poll() is None:
            self.process.send_signal(sig)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()
        # Whatever of its session outlived it (workers orphaned by a SIGKILL to the main
        # process, as when it never became ready): the session is the one started here.
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGKILL)
        self._reader.join(5)
        if self._log:
            self._log.close()
            self._log = None
        return self.process.returncode


@contextlib.contextmanager
def two_replicas(
    env: dict[str, str], workers: int = 2
) -> Iterator[tuple[LoadBalancer, LoadBalancer]]:
    """Two load balancers on the same ``env`` (one cluster), named ``replica-a`` and
    ``replica-b``; both stopped at the end, and a at once if b does not start."""
    a = LoadBalancer(env, workers=workers, name="replica-a")
    try:
        b = LoadBalancer(env, workers=workers, name="replica-b")
    except BaseException:
        a.stop()
        raise
    try:
        yield a, b
    finally:
        a.stop()
        b.stop()


def slow_request_in_flight(
    balancer: LoadBalancer, server: UpstreamServer, delay: float, timeout: float
) -> tuple[threading.Thread, dict[str, object]]:
    """``GET /api/slow?delay=<delay>`` through ``balancer`` from a thread of its own, returned
    once ``server`` has it (in flight upstream; ``AssertionError`` after 5 s): for what a stop
    does to a request in flight. When the thread has ended, the dict holds the ``status``
    and the JSON ``body`` of the answer, or the ``error`` that came instead."""
    result: dict[str, object] = {}

    def slow() -> None:
        try:
            with httpx.Client(base_url=balancer.url, trust_env=False, timeout=timeout) as client:
                response = client.get(f"/api/slow?delay={delay:g}")
                result["status"] = response.status_code
                result["body"] = response.json()
        except Exception as exc:  # reported by the test's assertion on the result
            result["error"] = repr(exc)

    before = server.hits["/api/slow"]
    thread = threading.Thread(target=slow)
    thread.start()
    wait_for(lambda: server.hits["/api/slow"] > before, step=0.02)
    return thread, result


# ------------------------------------------------------------------------ /proc


def sanic_until_exit(env: Mapping[str, str]) -> subprocess.CompletedProcess[str]:
    """``sanic service.app --single-process`` on 127.0.0.1 and a free port, run until it
    exits, its output captured (a 30-s limit): for settings that must stop the start-up."""
    argv = [SANIC, "service.app", "--host", "127.0.0.1", "--port", str(free_port())]
    return subprocess.run(
        [*argv, "--single-process"],
        cwd=REPO,
        env=dict(env),
        capture_output=True,
        text=True,
        timeout=30,
    )


@contextlib.contextmanager
def python_m_service(
    env: Mapping[str, str], *, output: int | IO[bytes] = subprocess.DEVNULL
) -> Iterator[tuple[subprocess.Popen[bytes], str]]:
    """``python -m service`` (the container's command) on 127.0.0.1 and a free port, in its
    own session; yields the process and its URL once ``/lb-health`` answers (or the process
    has ended), and kills its process group if it is still running at the end."""
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "service"],
        cwd=REPO,
        env={**env, "LB_HOST": "127.0.0.1", "LB_PORT": str(port)},
        stdout=output,
        stderr=output,
        start_new_session=True,
    )
    url = f"http://127.0.0.1:{port}"

    def healthy() -> bool:
        try:
            return httpx.get(f"{url}/lb-health", trust_env=False).status_code == 200
        except httpx.TransportError:
            return process.poll() is not None

    try:
        wait_for(healthy, timeout=20, step=0.02)
        # Give the main process time to see the worker's start-up ack: a SIGTERM before
        # that hung Sanic 25.12 (see test_process.py).
        time.sleep(0.5)
        yield process, url
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()


def children(pid: int) -> list[int]:
    """Every descendant of ``pid`` (children of any of its threads), depth first."""
    out: list[int] = []
    with contextlib.suppress(OSError):
        for task in Path(f"/proc/{pid}/task").iterdir():
            for child in (task / "children").read_text().split():
                out += [int(child), *children(int(child))]
    return out


def rss_kib(pid: int) -> int:
    """Resident set size of a process, KiB (0 if it is gone)."""
    with contextlib.suppress(OSError):
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def cpu_ticks(pid: int) -> int:
    """User + system CPU ticks of a process (0 if it is gone)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return int(fields[11]) + int(fields[12])
    except (OSError, IndexError):
        return 0


def open_fds(pid: int) -> int:
    try:
        return len(os.listdir(f"/proc/{pid}/fd"))
    except OSError:
        return 0
