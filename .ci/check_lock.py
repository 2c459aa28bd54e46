"""CI: the virtualenv holds exactly requirements-test.lock, and requirements.lock agrees with it.

Run with the virtualenv's Python after the README's install command. A package that
pyproject.toml asks for and the lock lacks is installed unpinned by that command, and a pin
that pyproject.toml no longer allows makes it fail: either way the fix is `bash .ci/lock`.
The Docker image installs requirements.lock, so its versions must be the tested ones.
"""

from __future__ import annotations

import re
import sys
from importlib import metadata
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
PIN = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==(\S+)")
NOT_LOCKED = {"pip", "sanic-lb"}  # the installer, and the project itself (editable)


def canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def pins(lock: str) -> dict[str, str]:
    lines = (REPO / lock).read_text().splitlines()
    return {canonical(m[1]): m[2] for line in lines if (m := PIN.match(line))}


def main() -> int:
    tested, runtime = pins("requirements-test.lock"), pins("requirements.lock")
    installed = {
        canonical(dist.metadata["Name"]): dist.version
        for dist in metadata.distributions()
        if canonical(dist.metadata["Name"]) not in NOT_LOCKED
    }
    problems = [
        f"requirements.lock pins {name}=={version}, requirements-test.lock "
        f"{tested.get(name, 'nothing')}"
        for name, version in sorted(runtime.items())
        if tested.get(name) != version
    ]
    problems += [
        f"installed {name}=={version}, requirements-test.lock pins {tested.get(name, 'nothing')}"
        for name, version in sorted(installed.items())
        if tested.get(name) != version
    ]
    problems += [
        f"{name} is locked but not installed" for name in sorted(tested.keys() - installed.keys())
    ]
    for problem in problems:
        print(f"check_lock: {problem}", file=sys.stderr)
    if problems:
        print("check_lock: refresh the lock files with `bash .ci/lock`", file=sys.stderr)
        return 1
    print(f"check_lock: the virtualenv is requirements-test.lock ({len(tested)} packages)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
