"""What a process holds in /dev/shm, read from its memory map, and what is left of a
process group."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
import os
from pathlib import Path


def shm_semaphores(pid: int) -> set[str]:
    """The named semaphores (``/dev/shm/sem.*``) a process has open: other engineers'
    processes use /dev/shm at the same time, so only these are ours."""
    return {path for path in shm_names([pid]) if path.startswith("/dev/shm/sem.")}


def _shm_lines(pids: Iterable[int]) -> Iterator[list[str]]:
    """The lines of these processes' memory maps that map a file of /dev/shm, as fields
    (address, perms, offset, device, inode, path: the path whole, with any " (deleted)");
    a process already gone is passed over."""
    for pid in pids:
        try:
            maps = Path(f"/proc/{pid}/maps").read_text()
        except OSError:
            continue
        for line in maps.splitlines():
            fields = line.split(None, 5)
            if len(fields) == 6 and fields[5].startswith("/dev/shm/"):
                yield fields


def shm_mapped(pids: Iterable[int]) -> set[str]:
    """The paths in /dev/shm these processes map, as their memory maps name them: the shared
    block is a file there, unlinked as soon as it is made (``pym-<pid>-<random>
    (deleted)``), so a stop, however abrupt, cannot leave it behind."""
    return {fields[5] for fields in _shm_lines(pids)}


def left_in_shm(mapped: Iterable[str]) -> list[str]:
    """Which of ``mapped`` (from :func:`shm_mapped`) still have a name in /dev/shm."""
    return [path for path in mapped if os.path.exists(path.removesuffix(" (deleted)"))]


def shm_names(pids: Iterable[int]) -> set[str]:
    """The names in /dev/shm of what these processes map from it.

    A memory map shows the name a file had when it was mapped: glibc creates a named
    semaphore under a temporary name and links it to its real one, so the map says
    ``sem.XXXXXX (deleted)``. The inode is the same, so the names are found by inode.
    """
    inodes = {int(fields[4]) for fields in _shm_lines(pids)}
    with os.scandir("/dev/shm") as entries:
        return {entry.path for entry in entries if entry.inode() in inodes}


def group_members(pgid: int) -> list[int]:
    """The processes of process group ``pgid`` that still run (zombies not counted: whoever
    reaps orphans here may not be quick)."""
    members = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        state, pgrp = fields[0], int(fields[2])
        if pgrp == pgid and state != "Z":
            members.append(int(entry.name))
    return members
