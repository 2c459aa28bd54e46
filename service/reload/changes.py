"""What a new file changes, and what of it must wait for a restart.

Settings that the running host cannot take while serving are kept as the host started with
them and named in the log line ("needs a restart"): the listening address and port and the
worker count (Sanic has bound the socket and started the processes), the log format (every
logger was configured at start), the cluster (its Redis connection and its lease in the
shared block), TLS (the listening socket's context), the main process's stall watch
(``LB_WORKER_STALL_TIMEOUT``), the sizes of the shared block
(``LB_RESOLVER_MAX_TARGETS``), and admission control (``[[limits]]``, ``LB_RATE_LIMIT`` and
the rest of its section, each pool's ``MAX_REQUESTS``): its tables and counters are laid out
in the block at start-up. Everything else is taken as the file (and the environment) now
say; a route a reload adds is covered by the limits the host started with
(``service.admission.replan``).
"""

from __future__ import annotations

import dataclasses
from typing import Any

from service.settings import VARIABLES, Settings

SERVER_RESTART_ONLY = ("port", "workers", "host", "log_format")
# whole sections: the cluster (its Redis connection, its lease in the block) and TLS (the
# listening socket's context, its rotation and redirect listener, the upstreams' CA)
SECTIONS_RESTART_ONLY = ("cluster", "tls", "admission")
# single fields: a size of the shared block; the main process's watch over the workers
FIELDS_RESTART_ONLY = (("resolver", "max_targets"), ("frontdoor", "worker_stall_timeout"))


def running(new: Settings, started: Settings) -> tuple[Settings, tuple[str, ...]]:
    """``new`` with every restart-only setting as ``started`` has it, and the variables of
    those whose value ``new`` would change (in the order of ``--help``)."""
    waiting = [_variable("server", k) for k in SERVER_RESTART_ONLY if _differs(new, started, k)]
    for section in SECTIONS_RESTART_ONLY:
        before, after = getattr(started, section), getattr(new, section)
        waiting += [_variable(section, key) for key in _changed_keys(before, after)]
    for section, key in FIELDS_RESTART_ONLY:
        if getattr(getattr(new, section), key) != getattr(getattr(started, section), key):
            waiting.append(_variable(section, key))
    if new.limits != started.limits:
        waiting.append("[[limits]]")
    upstreams, caps_changed = _pool_caps_as_started(new, started)
    waiting += caps_changed
    kept: dict[str, Any] = {key: getattr(started, key) for key in SERVER_RESTART_ONLY}
    kept.update({section: getattr(started, section) for section in SECTIONS_RESTART_ONLY})
    for section, key in FIELDS_RESTART_ONLY:
        part = kept.get(section, getattr(new, section))
        kept[section] = dataclasses.replace(part, **{key: getattr(getattr(started, section), key)})
    kept.update(limits=started.limits, upstreams=upstreams)
    return dataclasses.replace(new, **kept), tuple(waiting)


def _pool_caps_as_started(new: Settings, started: Settings) -> tuple[tuple[Any, ...], list[str]]:
    """``new``'s upstreams with each pool's ``max_requests`` as the host started with it (0
    for a pool it did not start with: its counters are not in the block), and the variables
    of those that differ."""
    caps = {u.name: u.max_requests for u in started.upstreams}
    upstreams, waiting = [], []
    for upstream in new.upstreams:
        cap = caps.get(upstream.name, 0)
        if upstream.max_requests != cap:
            waiting.append(f"{upstream.url_env.removesuffix('_URL')}_MAX_REQUESTS")
        upstreams.append(dataclasses.replace(upstream, max_requests=cap))
    return tuple(upstreams), waiting


def _differs(new: Settings, started: Settings, key: str) -> bool:
    return bool(getattr(new, key) != getattr(started, key))


def summary(old: Settings, new: Settings) -> str:
    """What changed from ``old`` to ``new``, in a few words, for the log line."""
    parts: list[str] = []
    old_routes = {r.prefix: r for r in old.routes}
    new_routes = {r.prefix: r for r in new.routes}
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
