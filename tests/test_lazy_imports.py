"""A default configuration's worker does not import what only a configured feature uses.

Each process of ``sanic service.app --workers 2`` holds every module it imported; a package
that a default configuration never calls is memory for nothing (issue 23: idle PSS). So
dnspython (DNS discovery), prometheus_client (the first ``/metrics`` scrape), cryptography
(TLS), redis (cluster figures), OpenTelemetry and protobuf (trace export) and httpcore (the
transport is our own) stay out of a default worker, and come in when their feature does.

The worker here is real: ``create_app(load_settings(env=...))`` served by Sanic in one
process, its modules listed once the server has started (every ``before_server_start`` and
``after_server_start`` listener has run), then stopped.
"""

from __future__ import annotations

import json
import subprocess
import sys

from tests.support import REPO, clean_env, free_port

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
