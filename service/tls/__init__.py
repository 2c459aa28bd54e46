"""TLS: HTTPS at the front door, certificates that rotate, and verified ``https://`` upstreams.

- ``contexts``: the two policies (Mozilla intermediate for clients; system CAs or
  ``LB_UPSTREAM_CA`` for upstreams), each a function making a fresh ``SSLContext``;
- ``pair``: a certificate chain and key read, checked and loaded as one;
- ``rotation``: the pair a worker serves, swapped when the files change;
- ``last_good``: the host's last good pair, which a worker that starts while the files
  cannot be served starts with;
- ``loader``: the Sanic hook that makes each worker's listening context from the settings;
- ``redirect``: the optional plain listener answering 308 to https.

:func:`check` validates the files at start-up (``service.app`` and ``python -m service``
call it after loading the settings), so a bad pair stops start-up with one line naming its
setting, like every other bad setting (in a worker the host started, the host's last good
pair will do). ``startup(app)`` installs the loader, hands the pair the main process
validated to its workers, and in every worker starts the watch on the files and the
redirect listener.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import ssl
from dataclasses import dataclass

from sanic import Sanic

from service import handover
from service.settings import Settings, SettingsError
from service.sharedmem import LEASE_WIDTH, Lease
from service.sharedmem.block import process_alive
from service.tls import redirect
from service.tls.contexts import upstream_context

# The certificate side (pair, rotation, loader) imports cryptography (~40 ms in every process,
# workers included): it is imported only when LB_TLS_CERT is set.

__all__ = ["check", "startup", "upstream_context"]

log = logging.getLogger("service.tls")

# Seconds a worker stays the host's speaker for TLS (the one that logs) without renewing; it
# renews on every look at the files (every second), so another takes over soon after it dies.
SPEAKER_TERM = 3.0


def check(settings: Settings) -> None:
    """Raise SettingsError (naming the variable) unless the TLS settings can be served."""
    tls = settings.tls
    if tls.enabled:
        if not (tls.cert and tls.key):
            missing = "LB_TLS_KEY" if tls.cert else "LB_TLS_CERT"
            raise SettingsError(f"LB_TLS_CERT and LB_TLS_KEY go together: {missing} is not set")
        from service.tls import last_good
        from service.tls.pair import PairError, load_pair, read_files
        from service.tls.rotation import utcnow

        try:
            load_pair(tls.cert, tls.key, read_files(tls.cert, tls.key), utcnow())
        except PairError as exc:
            if last_good.load(utcnow()) is None:  # a replacement worker starts with that
                raise SettingsError(str(exc)) from None
    if tls.http_redirect_port:
        port = tls.http_redirect_port
        if not tls.enabled:
            raise SettingsError(
                f"LB_HTTP_REDIRECT_PORT={port} redirects to https: set LB_TLS_CERT and LB_TLS_KEY"
            )
        if port == settings.port:
            raise SettingsError(f"LB_HTTP_REDIRECT_PORT={port} is LB_PORT itself")
    if tls.upstream_ca and not tls.upstream_verify:
        raise SettingsError(
            f"LB_UPSTREAM_CA={tls.upstream_ca!r} is set but LB_UPSTREAM_TLS_VERIFY=false: "
            "choose one"
        )
    if not tls.upstream_ca:
        return  # the system's CA store: nothing of ours to check
    try:
        upstream_context(tls)
    except (ssl.SSLError, OSError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        raise SettingsError(
            f"LB_UPSTREAM_CA={tls.upstream_ca!r} cannot be used: {reason}"
        ) from None


@dataclass(eq=False)
class _WorkerTls:
    """What one worker runs for TLS besides the listener: the watch, the redirect port."""

    watch: asyncio.Task[None] | None = None
    redirect: asyncio.Server | None = None


def startup(app: Sanic) -> None:
    lb = app.ctx.lb
    tls = lb.settings.tls
    if not (tls.enabled or not tls.upstream_verify):
        return
    speaker_region = lb.plan.shared(LEASE_WIDTH)  # which worker logs for the host
    if tls.enabled:
        from service.tls.loader import SettingsCertLoader

        app.certloader_class = SettingsCertLoader

        @app.main_process_start
        async def hand_over_the_pair(app: Sanic) -> None:
            from service.tls import last_good
            from service.tls.pair import PairError, load_pair, read_files
            from service.tls.rotation import utcnow

            with contextlib.suppress(PairError):  # changed since check(): workers will say
                files = read_files(tls.cert, tls.key)
                load_pair(tls.cert, tls.key, files, utcnow())
                last_good.keep(files, handover.create(app))

        @app.main_process_stop
        async def remove_the_pair(app: Sanic) -> None:
            handover.remove(app)

    running = _WorkerTls()

    @app.after_server_start
    async def start_tls(app: Sanic) -> None:
        lb = app.ctx.lb
        lease, pid = Lease(lb.row.block, speaker_region), os.getpid()

        def speaker() -> bool:
            return lease.hold(pid, SPEAKER_TERM, process_alive)

        if speaker() and not tls.upstream_verify:
            log.warning(
                "LB_UPSTREAM_TLS_VERIFY=false: https upstreams' certificates and host names "
                "are NOT verified"
            )
        if lb.tls is None:
            return  # served without Sanic's worker start-up (test clients): no listener
        host, port = _listening(app)
        if speaker():
            pair = lb.tls.current
            log.info(
                "TLS on port %s: serving %s, expires %s",
                port, pair.subject, pair.not_after.strftime("%Y-%m-%d %H:%M:%S UTC"),
            )  # fmt: skip
        running.watch = asyncio.create_task(lb.tls.watch(speaker))
        if tls.http_redirect_port:
            running.redirect = await redirect.listen(
                host, tls.http_redirect_port, port, lambda: lb.draining,
                lb.settings.frontdoor.header_timeout,
            )  # fmt: skip

    @app.before_server_stop
    async def stop_tls(app: Sanic) -> None:
        if running.watch is not None:
            running.watch.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await running.watch
        if running.redirect is not None:
            running.redirect.close()


def _listening(app: Sanic) -> tuple[str | None, int]:
    """The host and port this worker's TLS server listens on: the socket the main process
    bound and handed over (with workers), else the host and port it was given."""
    for info in app.state.server_info:
        sock = info.settings.get("sock")
        if sock is not None and sock.family in (socket.AF_INET, socket.AF_INET6):
            host, port = sock.getsockname()[:2]
            return host, port
        if info.settings.get("port"):
            return info.settings.get("host"), int(info.settings["port"])
    settings = app.ctx.lb.settings
    return settings.host, settings.port
