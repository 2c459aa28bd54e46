"""What a new file changes, and what of it must wait for a restart.

Settings that the running host cannot take while serving are kept as the host started with
them and named in the log line ("needs a restart"): the server's (the listening address and
port and the worker count: Sanic has bound the socket and started the processes; the log
format: every logger was configured at start), and each feature's, as it declares them in
its ``RESTART_ONLY`` (``service.features.RestartOnly``, gathered by
``service.factory.RESTART_ONLY``): the cluster (its Redis connection and its lease in the
shared block), TLS (the listening socket's context), DNS discovery's block size
(``LB_RESOLVER_MAX_TARGETS``), admission control (its tables and counters are laid out in
the block at start-up), the main process's stall watch (``LB_WORKER_STALL_TIMEOUT``).
Everything else is taken as the file (and the environment) now say.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

from service.features import RestartOnly
from service.settings import VARIABLES, Settings

SERVER_RESTART_ONLY = ("port", "workers", "host", "log_format")


def running(
    new: Settings, started: Settings, rules: Sequence[RestartOnly]
) -> tuple[Settings, tuple[str, ...]]:
    """``new`` with every restart-only setting as ``started`` has it, and the variables of
    those whose value ``new`` would change: the server's, then the features' (``rules``,
    in the order they are listed: whole sections, then single fields, then the rest)."""
    sections = [section for rule in rules for section in rule.sections]
    fields = [item for rule in rules for item in rule.fields]
    waiting = [_variable("server", k) for k in SERVER_RESTART_ONLY if _differs(new, started, k)]
    for section in sections:
        before, after = getattr(started, section), getattr(new, section)
        waiting += [_variable(section, key) for key in _changed_keys(before, after)]
    for section, key in fields:
        if getattr(getattr(new, section), key) != getattr(getattr(started, section), key):
            waiting.append(_variable(section, key))
    kept: dict[str, Any] = {key: getattr(started, key) for key in SERVER_RESTART_ONLY}
    kept.update({section: getattr(started, section) for section in sections})
    for section, key in fields:
        part = kept.get(section, getattr(new, section))
        kept[section] = dataclasses.replace(part, **{key: getattr(getattr(started, section), key)})
    settings = dataclasses.replace(new, **kept)
    for rule in rules:
        if rule.keep is not None:
            settings, more = rule.keep(settings, started)
            waiting += more
    return settings, tuple(waiting)


def _differs(new: Settings, started: Settings, key: str) -> bool:
    return bool(getattr(new, key) != getattr(started, key))


def summary(old: Settings, new: Settings) -> str:
    """What changed from ``old`` to ``new``, in a few words, for the log line."""
    parts: list[str] = []
    old_routes = {r.label: r for r in old.routes}  # a prefix may have several routes
    new_routes = {r.label: r for r in new.routes}
    parts += [f"route {p} added" for p in new_routes if p not in old_routes]
    parts += [f"route {p} removed" for p in old_routes if p not in new_routes]
    parts += [
        f"route {p} changed"
        for p, route in new_routes.items()
        if p in old_routes and old_routes[p] != route
    ]
    old_pools = {u.name: u for u in old.upstreams}
    new_pools = {u.name: u for u in new.upstreams}
    parts += [f"upstream {n} added" for n in new_pools if n not in old_pools]
    parts += [f"upstream {n} removed" for n in old_pools if n not in new_pools]
    for name, upstream in new_pools.items():
        before = old_pools.get(name)
        if before is not None and before != upstream:
            fields = [f.name for f in dataclasses.fields(upstream)]
            what = [f for f in fields if getattr(before, f) != getattr(upstream, f)]
            parts.append(f"upstream {name} ({', '.join(what)})")
    for field in dataclasses.fields(new):
        if field.name in ("upstreams", "routes", "source"):
            continue
        before, after = getattr(old, field.name), getattr(new, field.name)
        if before == after:
            continue
        if dataclasses.is_dataclass(after):
            parts += [f"{field.name}.{key}" for key in _changed_keys(before, after)]
        else:
            parts.append(field.name)
    return ", ".join(parts) or "no live setting changed"


def _changed_keys(before: Any, after: Any) -> list[str]:
    names = [f.name for f in dataclasses.fields(after)]
    return [name for name in names if getattr(before, name) != getattr(after, name)]


def _variable(section: str, key: str) -> str:
    for variable in VARIABLES:
        if variable.section == section and variable.key == key:
            return variable.name
    return f"{section}.{key}"
