"""Sanic's sync manager, served by threads of the main process instead of a process of its own.

Sanic keeps its worker states in ``multiprocessing.Manager().dict()``: a ``SyncManager``
whose server, in a process it spawns, holds the dict, while the main process and every
spawned worker (each receives the pickled proxy) call it over a Unix socket. That process is
one Python interpreter more in the group, about 11 MiB PSS at idle (issue 23), for a few
dozen calls while workers start and stop. ``ThreadedSyncManager`` runs the same server
(``multiprocessing``'s ``Server`` with ``SyncManager``'s registry, socket and authkey) in the
main process: one daemon thread accepts, and ``Server.handle_request`` serves each connected
proxy in a daemon thread of its own, as the stdlib's accepter does. For Sanic and the
proxies nothing changes: ``dict()`` returns the same ``DictProxy``, whose pickled copies
carry the socket's address and the authkey to the workers, and ``address``, ``shutdown()``
and the state the proxies consult are those of a started manager. Signals are the main
thread's alone (Python runs handlers there; the serving threads block the group's stop and
reload signals, so the kernel delivers those to the main thread), and there is no process
left for a group SIGTERM or SIGHUP to end.

Beyond ``multiprocessing``'s documented API (``get_server``, ``connect``, ``address``), this
relies on the server's ``listener``, ``handle_request`` and ``stop_event`` (which
``serve_client`` reads; ``serve_forever`` would set it, but it also stands in for a server
*process*: it resets ``sys.stdout`` and raises ``SystemExit`` when it ends), on accepting a
connection not authenticating it (``handle_request`` does, so a bare connect wakes the
accepter), and on the manager's ``_address`` and ``_state`` (every proxy's finaliser reads
the state: once ``SHUTDOWN``, a proxy no longer calls the server). ``tests/test_supervision``
checks each of these against the running Python, so an upgrade that changes one fails there
first.
"""

from __future__ import annotations

import contextlib
import signal
import socket
import threading
import time
from collections.abc import Callable, Iterable
from multiprocessing.managers import Server, State, SyncManager
from typing import Any

# what a signal to the whole process group brings; the main thread handles them all
GROUP_SIGNALS = frozenset({signal.SIGINT, signal.SIGTERM, signal.SIGHUP})


class ThreadedSyncManager(SyncManager):
    """A ``SyncManager`` whose server runs in daemon threads of this process (module doc)."""

    _server: Server | None = None
    _accepter: threading.Thread | None = None

    def start(
        self, initializer: Callable[..., object] | None = None, initargs: Iterable[Any] = ()
    ) -> None:
        """Listen on a new Unix socket and serve it from a thread; return once it answers."""
        if initializer is not None:
            raise TypeError("the server runs in this process: there is no process to initialise")
        server = self.get_server()  # a ProcessError unless this manager is new
        server.stop_event = threading.Event()  # type: ignore[attr-defined]
        self._address = server.address
        self._server = server
        self._accepter = threading.Thread(
            target=_accept, args=(server,), name="sync-manager", daemon=True
        )
        self._accepter.start()
        self.connect()  # a round trip: the manager is STARTED once the server answers

    def shutdown(self) -> None:
        """Stop accepting and close the socket (its file goes with it); the manager is then
        shut down, so no proxy calls it again. A thread still serving a connection ends with
        it, or with the process. Idempotent."""
        server, self._server = self._server, None
        if server is None:
            return
        self._state.value = State.SHUTDOWN
        server.stop_event.set()  # type: ignore[attr-defined]
        with contextlib.suppress(OSError), socket.socket(socket.AF_UNIX) as wake:
            wake.settimeout(1.0)
            wake.connect(server.address)  # returns the accepter from its accept()
        if self._accepter is not None:
            self._accepter.join(1.0)
        server.listener.close()


def _accept(server: Server) -> None:
    """``Server.accepter``, ending once the server is stopped (the stdlib's loops for ever,
    and spins once its listener is closed)."""
    signal.pthread_sigmask(signal.SIG_BLOCK, GROUP_SIGNALS)  # the serving threads inherit it
    stop: threading.Event = server.stop_event  # type: ignore[attr-defined]
    while not stop.is_set():
        try:
            connection = server.listener.accept()
        except OSError:  # a connection aborted before it was accepted, or no file left
            time.sleep(0.01)
            continue
        if stop.is_set():
            connection.close()
            return
        threading.Thread(target=server.handle_request, args=(connection,), daemon=True).start()
