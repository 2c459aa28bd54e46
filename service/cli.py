"""``python -m service``: the container's command, and a command line that explains itself.

- ``--help`` lists every setting with its variable, default and meaning, generated from the
  settings model (``service.settings.model.VARIABLES`` and the dataclass defaults), so it
  cannot drift from what the loader reads;
- ``--check`` (nginx's ``-t``) loads and validates the configuration, prints the effective
  routes and pools (and what each ``;resolve`` name resolves to from here: a failed lookup
  is a warning) and exits 0, or prints one line naming the bad setting and exits 2;
- with no option it serves ``service.app`` on ``LB_HOST:LB_PORT`` with ``LB_WORKERS``
  workers. An ``LB_HOST`` that does not resolve, or a port that cannot be listened on, ends
  with one line naming the cause and exit status 2, like every other bad setting, instead
  of a traceback from inside the server.
"""

from __future__ import annotations

import argparse
import dataclasses
import errno
import os
import socket
import sys
from collections.abc import Sequence
from typing import Any, NoReturn

from service import tls
from service.features import CheckLines
from service.settings import SettingsError, load_settings
from service.settings import model
from service.settings.loading import CONFIG_ENV, DEFAULTS_FILE, MODELS

PROG = "python -m service"
SECTION_MODELS = MODELS  # the model part each VARIABLES section's defaults come from


def fail(message: str) -> NoReturn:
    print(f"load-balancer: {message}", file=sys.stderr)
    raise SystemExit(2)


def default_of(section: str, key: str) -> Any:
    for item in dataclasses.fields(SECTION_MODELS[section]):
        if item.name == key:
            if item.default is not dataclasses.MISSING:
                return item.default
            if item.default_factory is not dataclasses.MISSING:
                return item.default_factory()
    raise KeyError(f"{section}.{key}")


def _shown(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None or value in ("", ()):
        return "unset"
    if isinstance(value, tuple):
        return ",".join(str(item) for item in value) or "(empty)"
    return str(value)


def help_text() -> str:
    """Every setting, from the model; then the upstreams of the default TOML file."""
    rows = [(CONFIG_ENV, "config/defaults.toml", "TOML file of upstreams, routes and defaults")]
    per_upstream = [
        (
            "<PREFIX>_URL",
            "see below",
            "one target, or a list url[;weight=N][;resolve], url[;weight=N][;resolve]",
        )
    ]
    for variable in model.VARIABLES:
        row = (
            variable.name.replace("{PREFIX}", "<PREFIX>"),
            _shown(default_of(variable.section, variable.key)),
            variable.meaning,
        )
        (per_upstream if variable.section in model.PER_UPSTREAM else rows).append(row)
    width = max(len(name) for name, _, _ in rows + per_upstream) + 2
    dwidth = max(len(default) for _, default, _ in rows + per_upstream) + 2

    def table(entries: list[tuple[str, str, str]]) -> list[str]:
        return [f"  {n:<{width}}{d:<{dwidth}}{m}" for n, d, m in entries]

    lines = [
        f"usage: {PROG} [--help | --check]",
        "",
        "Serve the load balancer (service.app) on LB_HOST:LB_PORT with LB_WORKERS workers.",
        "Settings come from the environment, over the TOML file named by LB_CONFIG; each is",
        "validated once at start-up, and a bad one stops it with one line naming it (exit 2).",
        "",
        "options:",
        "  --help    show this and exit",
        "  --check   load and validate the configuration, print the effective routes and",
        "            pools, exit 0 if it is valid and 2 if it is not (nothing is started)",
        "",
        "A running service reloads the LB_CONFIG file on SIGHUP to its main process (or when",
        "the file changes, with LB_CONFIG_WATCH=true), validated as --check does.",
        "",
        "settings:",
        f"  {'variable':<{width}}{'default':<{dwidth}}meaning",
        *table(rows),
        "",
        "per upstream: <PREFIX> is the upstream's URL variable without _URL (API_GATEWAY...);",
        "each may also be a key of the upstream's [[upstreams]] table in the TOML file:",
        *table(per_upstream),
    ]
    lines += ["", "upstreams of the TOML file (url variable, default, pool name, /stats key):"]
    try:
        settings = load_settings(env={})
    except SettingsError as exc:
        lines.append(f"  (cannot read them: {exc})")
    else:
        for upstream in settings.upstreams:
            key = upstream.stats_key or "not aggregated"
            urls = ", ".join(t.url for t in upstream.targets)
            lines.append(f"  {upstream.url_env:<{width}}{urls}  ({upstream.name}; {key})")
    return "\n".join(lines) + "\n"


def describe(settings: model.Settings, source: str, features: Sequence[object] = ()) -> str:
    """The effective configuration, as ``--check`` prints it: the listener, routes and
    pools, then each feature's part (its module's ``check_lines``, ``service.features``)."""
    parts: list[CheckLines] = [
        check(settings) for f in features if (check := getattr(f, "check_lines", None))
    ]
    lines = [
        f"configuration OK ({source} + environment)",
        f"listen: {settings.host}:{settings.port}, {settings.workers} worker(s); access log "
        f"{'on' if settings.access_log else 'off'}, {settings.log_format} logs",
        "routes (in the order they are tried: longest prefix first, matches first):",
    ]
    lines[2:2] = [line for part in parts for line in part.listen]
    for route in settings.routes:
        extra = f"  ({route.prefix} alone: 308 to {route.prefix}/)" if route.redirect_bare else ""
        to = route.upstream or ", ".join(f"{b.upstream} {b.weight}" for b in route.backends)
        lines.append(f"  {route.label:<12} -> {to}{extra}")
    lines.append("pools:")
    for upstream in settings.upstreams:
        passive, active = upstream.passive, upstream.active
        checks = (
            f"active GET {active.path} every {active.interval} s" if active else "no active checks"
        )
        stats = f"/stats as {upstream.stats_key!r}" if upstream.stats_key else "not aggregated"
        statuses = ",".join(map(str, sorted(passive.fail_statuses))) or "none"
        lines.append(
            f"  {upstream.name}: {upstream.balance}, {stats}, max_fails {passive.max_fails} "
            f"in {passive.fail_timeout} s (failing statuses: {statuses}; at most "
            f"{passive.max_ejection_percent} % ejected), {checks}"
        )
        lines += [
            f"    {t.url}  weight {t.weight}" + ("  (resolve)" if t.resolve else "")
            for t in upstream.targets
        ]
    for part in sorted(parts, key=lambda part: part.order):
        lines += part.lines
    return "\n".join(lines) + "\n"


def check_listen(host: str, port: int, port_variable: str = "LB_PORT") -> None:
    """Exit 2 with one line unless ``host`` resolves and ``host:port`` can be listened on."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except (socket.gaierror, UnicodeError) as exc:
        fail(f"LB_HOST={host!r} does not resolve: {exc}")
    family, kind, proto, _, address = infos[0]
    probe = socket.socket(family, kind, proto)
    try:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as Sanic binds
        probe.bind(address)
    except OSError as exc:
        reason = {
            errno.EADDRINUSE: "the port is already in use",
            errno.EACCES: "permission denied",
            errno.EADDRNOTAVAIL: "the address is not one of this host's",
        }.get(exc.errno or 0, exc.strerror or str(exc))
        fail(f"cannot listen on {host}:{port} (LB_HOST, {port_variable}): {reason}")
    finally:
        probe.close()


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog=PROG, add_help=False)
    parser.add_argument("--help", "-h", action="store_true")
    parser.add_argument("--check", "-t", action="store_true")
    args, unknown = parser.parse_known_args(argv)
    if unknown:
        fail(f"unknown argument {unknown[0]!r}; see {PROG} --help")
    if args.help:
        sys.stdout.write(help_text())
        return
    try:
        settings = load_settings()
        tls.check(settings)
    except SettingsError as exc:
        fail(f"configuration error: {exc}")
    if args.check:
        try:
            socket.getaddrinfo(settings.host, settings.port, type=socket.SOCK_STREAM)
        except (socket.gaierror, UnicodeError) as exc:
            fail(f"LB_HOST={settings.host!r} does not resolve: {exc}")
        from service.factory import FEATURES  # the features' lines: only when asked

        source = os.environ.get(CONFIG_ENV) or str(DEFAULTS_FILE)
        sys.stdout.write(describe(settings, source, FEATURES))
        return
    check_listen(settings.host, settings.port)
    if settings.tls.http_redirect_port:
        check_listen(settings.host, settings.tls.http_redirect_port, "LB_HTTP_REDIRECT_PORT")
    serve(settings)


def serve(settings: model.Settings) -> None:
    from sanic import Sanic
    from sanic.worker.loader import AppLoader

    loader = AppLoader("service.app:app")
    app = loader.load()
    app.prepare(host=settings.host, port=settings.port, workers=settings.workers, access_log=False)
    Sanic.serve(primary=app, app_loader=loader)
