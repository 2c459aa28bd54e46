"""The load balancer with its stdout (where the access log goes) written straight to a file,
for benchmarks only: ``sanic bench._logfile:app`` with ``BENCH_STDOUT=<path>``.

Why: a benchmark's load balancer (``tests.support.LoadBalancer``) has its output read through
a pipe by a thread of the benchmark's own process, a Python ``readline`` and a file write
per line. With the access log on that is one line per request, so the benchmark process
would spend CPU of its own on every request, outside the load balancer's figures and on
whichever core it lands. In production a container runtime or systemd takes the output; here
the process itself does: its file descriptor 1 becomes ``BENCH_STDOUT`` (opened to append),
in the main process and again in the worker, before the service is imported. Sanic's own
lines (``Worker ready``) are on stderr, still read by the pipe. Everything else is the
service's.
"""

from __future__ import annotations

import os


def _stdout_to(path: str) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    os.dup2(fd, 1)
    os.close(fd)


_stdout_to(os.environ["BENCH_STDOUT"])

from service.app import app  # after the redirection, on purpose

__all__ = ["app"]
