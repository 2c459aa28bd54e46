"""What a process holds in /dev/shm, read from its memory map."""

from __future__ import annotations

from pathlib import Path


def shm_semaphores(pid: int) -> set[str]:
    """The named semaphores (``/dev/shm/sem.*``) a process has open, from its memory map:
    other engineers' processes use /dev/shm at the same time, so only these are ours."""
    try:
        maps = Path(f"/proc/{pid}/maps").read_text()
    except OSError:
        return set()
    return {line.split()[-1] for line in maps.splitlines() if "/dev/shm/sem." in line}
