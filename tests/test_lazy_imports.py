"""A default configuration's worker does not import what only a configured feature uses.

Each process of ``sanic service.app --workers 2`` holds every module it imported; a package
that a default configuration never calls is memory for nothing (issue 23: idle PSS). So
dnspython (DNS discovery), prometheus_client (the first ``/metrics`` scrape), cryptography
(TLS), redis (cluster figures), OpenTelemetry and protobuf (trace export) and httpcore (the
transport is our own) stay out of a default worker, and come in when their feature does.

The worker here is real: ``create_app(load_settings(env=...))`` served by Sanic in one
process, its modules listed once the server has started (every ``before_server_start`` and
``after_server_start`` listener has run), then stopped.

Sanic's sync manager (``multiprocessing``'s server holding the workers' states) is no
process at all: threads of the main process serve it (``frontdoor.sync_manager``), one Python
interpreter fewer in the group. And the shared block holds memory only where it was written:
its rows for sixteen workers are not all there for two.
"""

from __future__ import annotations

import ctypes
import json
import os
import re
import subprocess
import sys
from pathlib import Path

from service.sharedmem import Plan, SharedBlock
from tests.support import (
    REPO,
    LoadBalancer,
    UpstreamServer,
    children,
    clean_env,
    env_for,
    free_port,
)

UNUSED_BY_DEFAULT = (
    "dns",
    "prometheus_client",
    "cryptography",
    "redis",
    "opentelemetry",
    "google",
    "httpcore",
)

SERVE = """\
import json, sys
from service.factory import create_app
from service.settings import load_settings

app = create_app(load_settings(env=json.loads(sys.argv[1])), name="lazy_imports")


@app.after_server_start
async def report(app, _loop=None):
    print("MODULES " + json.dumps(sorted(sys.modules)), flush=True)
    app.stop()


app.run(host="127.0.0.1", port=int(sys.argv[2]), single_process=True, access_log=False)
"""


def worker_modules(env: dict[str, str]) -> set[str]:
    """The top-level packages a served worker has imported, with ``env`` as its settings."""
    done = subprocess.run(
        [sys.executable, "-c", SERVE, json.dumps(env), str(free_port())],
        cwd=REPO,
        env=clean_env(),
        capture_output=True,
        text=True,
        timeout=60,
    )
    lines = [line for line in done.stdout.splitlines() if line.startswith("MODULES ")]
    assert lines, f"no module list (exit {done.returncode}):\n{done.stdout}\n{done.stderr}"
    return {name.split(".")[0] for name in json.loads(lines[0].removeprefix("MODULES "))}


def test_a_default_worker_imports_no_feature_only_package() -> None:
    loaded = worker_modules({})
    assert "sanic" in loaded and "service" in loaded  # it did serve
    assert sorted(loaded & set(UNUSED_BY_DEFAULT)) == []


def test_a_configured_resolve_entry_brings_dnspython() -> None:
    """The other side: discovery, once configured, imports it at start-up (so the list above
    would see it if a default worker did)."""
    loaded = worker_modules({"BLOG_SERVICE_URL": "http://localhost:9;resolve"})
    assert "dns" in loaded


def test_the_sync_manager_is_no_process_of_its_own(upstreams: dict[str, UpstreamServer]) -> None:
    """``sanic service.app --workers 2`` is the main process, the two workers and
    ``multiprocessing``'s resource tracker: of the main process's spawned children (a spawned
    manager server runs the same ``spawn_main`` as a worker), none is not a worker."""
    balancer = LoadBalancer(env_for(upstreams), workers=2)
    try:
        workers = {
            int(pid) for pid in re.findall(r"Starting worker \[(\d+)\]", "".join(balancer.output))
        }
        descendants = children(balancer.process.pid)
        spawned = {pid for pid in descendants if b"spawn_main" in _cmdline(pid)}
        tracker = [pid for pid in descendants if b"resource_tracker" in _cmdline(pid)]
        assert len(workers) == 2 and spawned == workers, (workers, spawned)
        assert sorted(descendants) == sorted([*workers, *tracker]) and len(tracker) == 1
        assert balancer.client.get("/lb-health").status_code == 200
    finally:
        balancer.stop()


def _cmdline(pid: int) -> bytes:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return b""


def test_the_shared_block_holds_only_the_pages_written() -> None:
    """Allocated, its header written, a row claimed and one field of it written: most of
    the block's pages do not exist (``multiprocessing.RawArray`` writes zeros over all)."""
    plan = Plan()
    field = plan.per_worker(100_000)  # rows of 800 kB, 12.8 MB in all
    raw = plan.allocate()
    block = SharedBlock(raw, plan)
    row = block.claim(os.getpid())
    block.mem[row.at + field.at + field.width - 1] = 1.0
    size_kib = plan.size * 8 // 1024
    assert block.mem[row.at + field.at + field.width - 1] == 1.0
    assert _resident_kib(ctypes.addressof(raw)) < size_kib // 8, size_kib


def _resident_kib(address: int) -> int:
    """The resident KiB of this process's mapping that holds ``address``."""
    inside = False
    for line in Path("/proc/self/smaps").read_text().splitlines():
        head = line.split(None, 1)[0]
        if "-" in head and not head.endswith(":"):
            start, end = (int(part, 16) for part in head.split("-"))
            inside = start <= address < end
        elif inside and head == "Rss:":
            return int(line.split()[1])
    raise AssertionError(f"no mapping holds {address:#x}")
