"""Every benchmark in bench/ still runs: each script's ``--smoke`` mode, end to end.

A benchmark nothing runs rots (bench/README.md, "Smoke runs"): a field it reads goes away, a
profile filter names a file that moved, and the next person to measure finds it broken. So
each script in bench/ (every ``bench/*.py`` but ``harness.py``, ``__init__.py`` and the
``_*.py`` helpers, found here rather than listed, so a new script is covered at once) runs
with ``--smoke``: it starts what it starts itself (the load balancer, Redis, dnsmasq), sends
a few requests through its real code path, and prints its tables. A peer (nginx, wrk,
py-spy) is never used in a smoke run, installed or not: a stand-in or that part skipped. A script
without ``--smoke`` fails here (argparse rejects the option).

The scripts run a few at a time, each in its own process group, stopped if the test ends
early.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from tests.support import REPO

BENCH = REPO / "bench"
HELPERS = {"__init__.py", "harness.py"}
AT_ONCE = 2  # scripts running together: the machine runs the rest of the suite meanwhile
TIMEOUT_S = 150.0
# the longest file of the suite: handed to a test process first (tests/conftest.py), so that
# the other process runs the rest meanwhile instead of waiting for this one at the end
SCHEDULE_FIRST = True
DONE = re.compile(r"^\([\w-]+: \d+ s\)$", re.MULTILINE)  # run_bench's last line, on success


def scripts() -> list[Path]:
    return sorted(
        path
        for path in BENCH.glob("*.py")
        if path.name not in HELPERS and not path.name.startswith("_")
    )


@dataclass
class Smoke:
    script: Path
    returncode: int
    output: str
    seconds: float


def smoke(script: Path) -> Smoke:
    started = time.monotonic()
    proc = subprocess.Popen(
        [sys.executable, str(script), "--smoke"],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    try:
        output, _ = proc.communicate(timeout=TIMEOUT_S)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGTERM)  # run_bench stops what it started
        output, _ = proc.communicate(timeout=30)
        output += f"\n[timed out after {TIMEOUT_S:g} s]"
    return Smoke(script, proc.returncode, output, time.monotonic() - started)


def test_the_discovery_finds_the_benchmarks() -> None:
    names = {path.name for path in scripts()}
    assert {"proxy_bench.py", "record_cost.py", "soak.py"} <= names
    assert not names & HELPERS


def test_every_benchmark_runs_in_smoke_mode() -> None:
    with ThreadPoolExecutor(AT_ONCE) as pool:
        runs = list(pool.map(smoke, scripts()))
    failed = [
        f"--- {run.script.name}: exit {run.returncode} after {run.seconds:.0f} s\n"
        + "\n".join(run.output.splitlines()[-40:])
        for run in runs
        if run.returncode != 0
        or not DONE.search(run.output)
        or not ("req/s" in run.output or "instructions" in run.output)  # its figures
        or "raw results:" not in run.output
    ]
    assert not failed, "\n".join(failed)
