"""The real programs the tests start (Redis, dnsmasq, chromium, openssl, ...), found once.

A missing one fails the test that needs it with the command that installs it, never a skip:
``bash .ci/test`` (the README's test command) installs every one of them when missing.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

INSTALL = "bash .ci/test (the README's test command) installs it; or bash .ci/tools"


def require(command: str, *, also: tuple[str, ...] = ()) -> str:
    """The path of ``command`` (on PATH, in /usr/sbin, or one of ``also``), else fail."""
    found = shutil.which(command) or shutil.which(command, path="/usr/sbin:/sbin")
    if found:
        return found
    for path in also:
        if Path(path).exists():
            return path
    pytest.fail(f"{command} not found: {INSTALL}")
