"""A default configuration's worker does not import what only a configured feature uses.

Each process of ``sanic service.app --workers 2`` holds every module it imported; a package
that a default configuration never calls is memory for nothing (issue 23: idle PSS). So
dnspython (DNS discovery), prometheus_client (the first ``/metrics`` scrape), cryptography
(TLS), redis (cluster figures), OpenTelemetry and protobuf (trace export) and httpcore (the
transport is our own) stay out of a default worker, and come in when their feature does.

The worker here is real: ``create_app(load_settings(env=...))`` served by Sanic in one
process, its modules listed once the server has started (every ``before_server_start`` and
``after_server_start`` listener has run), then stopped.

Sanic's sync manager (the process holding the workers' states) runs ``multiprocessing``'s
server and nothing else: it imports neither Sanic nor the service
(``frontdoor.supervision._no_main_module_for_children``). And the shared block holds memory
only where it was written: its rows for sixteen workers are not all there for two.
"""

from __future__ import annotations

import ctypes
import json
import os
import re
import subprocess
import sys
import sysconfig
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


def test_the_sync_manager_imports_neither_sanic_nor_the_service(
    upstreams: dict[str, UpstreamServer],
) -> None:
    """Of ``sanic service.app``'s spawned children, the one that is not a worker maps no
    file from site-packages: Sanic's compiled dependencies (multidict, ujson, uvloop...)
    would be there had it imported Sanic's command-line script, the main module."""
    balancer = LoadBalancer(env_for(upstreams), workers=1)
    try:
        workers = {
            int(pid) for pid in re.findall(r"Starting worker \[(\d+)\]", "".join(balancer.output))
        }
        spawned = [pid for pid in children(balancer.process.pid) if b"spawn_main" in _cmdline(pid)]
        managers = [pid for pid in spawned if pid not in workers]
        assert len(workers) == 1 and len(managers) == 1, (workers, spawned)
        site_packages = sysconfig.get_paths()["purelib"]
        assert _mapped_under(workers.pop(), site_packages)  # it would see Sanic's
        assert _mapped_under(managers[0], site_packages) == set()
    finally:
        balancer.stop()


def _cmdline(pid: int) -> bytes:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return b""


def _mapped_under(pid: int, folder: str) -> set[str]:
    """The files under ``folder`` that process ``pid`` maps (its shared libraries)."""
    fields = (line.split(None, 5) for line in Path(f"/proc/{pid}/maps").read_text().splitlines())
    folder = os.path.realpath(folder)  # the maps name files by their real paths
    return {f[5] for f in fields if len(f) == 6 and f[5].startswith(folder + "/")}


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
