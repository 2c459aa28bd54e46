"""nginx's stand-in in a smoke run (``--smoke`` without nginx installed): the same answers, slower.

``python -m bench._upstream [--files PREFIX=DIR ...] PORT [PORT ...]`` answers on every port,
HTTP/1.1 keep-alive: a path under a ``PREFIX`` gets the file of that name in ``DIR`` (one
named ``sse`` as a chunked ``text/event-stream``, as nginx's SSI sends it), any other path
``{"ok":true}``, as the benchmarks' nginx configurations do. Smoke runs check that a
benchmark still starts and measures, not how fast; a full run needs the real nginx.
"""

from __future__ import annotations

import argparse
import signal
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

OK = b'{"ok":true}'


def handler(files: dict[str, Path]) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_GET(self) -> None:
            path = self.path.split("?", 1)[0]
            for prefix, folder in files.items():
                if path.startswith(prefix):
                    self._file(folder / path[len(prefix) :])
                    return
            self._answer(200, "application/json", OK)

        def _file(self, file: Path) -> None:
            if not file.is_file():
                self._answer(404, "text/plain", b"not found")
            elif file.name == "sse":
                self.send_response(200)
                self.send_header("Content-Type", "text/event-stream")
                self.send_header("Transfer-Encoding", "chunked")
                self.end_headers()
                body = file.read_bytes()
                self.wfile.write(b"%x\r\n%s\r\n0\r\n\r\n" % (len(body), body))
            else:
                self._answer(200, "application/octet-stream", file.read_bytes())

        def _answer(self, status: int, kind: str, body: bytes) -> None:
            self.send_response(status)
            self.send_header("Content-Type", kind)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: object) -> None:
            pass

    return Handler


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--files", action="append", default=[], help="PREFIX=DIR")
    parser.add_argument("ports", type=int, nargs="+")
    args = parser.parse_args()
    files = {p: Path(d) for p, d in (item.split("=", 1) for item in args.files)}
    servers = [ThreadingHTTPServer(("127.0.0.1", port), handler(files)) for port in args.ports]
    for server in servers:
        server.daemon_threads = True
        threading.Thread(target=server.serve_forever, daemon=True).start()
    signal.sigwait({signal.SIGTERM, signal.SIGINT})


if __name__ == "__main__":
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM, signal.SIGINT})
    main()
