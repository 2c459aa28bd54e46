"""The demo's stand-in services: stdlib ``ThreadingHTTPServer``s in daemon threads.

Each one answers ``GET /stats`` with the payload the real service sends, plus what it alone
serves: the API gateway echoes every ``/api/*`` request as JSON, the blog serves an HTML
page under ``/blog/``, the dashboard UI serves the files of ``static/``. Anything else is a
``404``, as it would be from the real service.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from importlib import resources
from typing import Any
from urllib.parse import urlsplit

# The answer of each service's GET /stats, as in the contract.
STATS = {
    "api-gateway": {"api-gateway": {"service_status": "online", "info": "Proxying API requests"}},
    "blog-service": {"blog_service": {"service_status": "online", "post_count": 3}},
    "auth-service": {"auth": {"service_status": "online", "active_session_count": 0}},
    "user-service": {
        "user_service": {
            "service_status": "online",
            "database": {"status": "healthy"},
            "cache": {"status": "healthy", "hit_ratio": 0},
        }
    },
}

# The environment variable through which the load balancer finds each service.
URL_VARS = {
    "api-gateway": "API_GATEWAY_URL",
    "blog-service": "BLOG_SERVICE_URL",
    "auth-service": "AUTH_SERVICE_URL",
    "user-service": "USER_SERVICE_URL",
    "dashboard-ui": "DASHBOARD_UI_URL",
}

_CONTENT_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
}

_POSTS = (
    ("Why a load balancer counts only real traffic", "Health checks are not users."),
    ("Ten seconds of sliding window", "How requests per second is measured."),
    ("Heartbeats over WebSocket", "Keeping the dashboard out of IDLE."),
)

BLOG_PAGE = (
    '<!doctype html>\n<html lang="en"><head><meta charset="utf-8">'
    "<title>Demo blog</title></head><body>\n<h1>Demo blog</h1>\n"
    "<p>Served by the demo blog service, through the load balancer's <code>/blog/*</code> "
    'route. <a href="/">Back to the dashboard</a></p>\n<ul>\n'
    + "".join(f"<li><strong>{title}</strong>: {summary}</li>\n" for title, summary in _POSTS)
    + "</ul>\n</body></html>\n"
).encode()


Reply = tuple[int, str, bytes]  # status, content type, body


def _json(status: int, payload: Any) -> Reply:
    return status, "application/json", json.dumps(payload).encode()


def _not_found(service: str, path: str) -> Reply:
    return _json(404, {"error": "not found", "service": service, "path": path})


def api_gateway(method: str, path: str, query: str, body_size: int) -> Reply:
    if path == "/stats" and method in ("GET", "HEAD"):
        return _json(200, STATS["api-gateway"])
    if path == "/api" or path.startswith("/api/"):
        echo = {
            "service": "api-gateway (demo)",
            "method": method,
            "path": path,
            "query": query,
            "body_size": body_size,
            "time": time.time(),
        }
        return _json(200, echo)
    return _not_found("api-gateway", path)


def blog_service(method: str, path: str, query: str, body_size: int) -> Reply:
    if path == "/stats":
        return _json(200, STATS["blog-service"])
    if path == "/blog/" or path.startswith("/blog/"):
        return 200, "text/html; charset=utf-8", BLOG_PAGE
    return _not_found("blog-service", path)


def stats_only(name: str) -> Callable[[str, str, str, int], Reply]:
    def handle(method: str, path: str, query: str, body_size: int) -> Reply:
        if path == "/stats":
            return _json(200, STATS[name])
        return _not_found(name, path)

    return handle


def dashboard_ui() -> Callable[[str, str, str, int], Reply]:
    """Serve the files of ``static/``, read once; ``/`` is ``index.html``."""
    folder = resources.files(__package__).joinpath("static")
    files: dict[str, Reply] = {}
    for entry in folder.iterdir():
        suffix = "." + entry.name.rsplit(".", 1)[-1]
        if entry.is_file() and suffix in _CONTENT_TYPES:
            files["/" + entry.name] = (200, _CONTENT_TYPES[suffix], entry.read_bytes())
    files["/"] = files["/index.html"]

    def handle(method: str, path: str, query: str, body_size: int) -> Reply:
        # No /stats here: the dashboard UI is not aggregated, and the page's GET /stats must
        # be answered by the load balancer itself.
        return files.get(path) or _not_found("dashboard-ui", path)

    return handle


HANDLERS: dict[str, Callable[[], Callable[[str, str, str, int], Reply]]] = {
    "api-gateway": lambda: api_gateway,
    "blog-service": lambda: blog_service,
    "auth-service": lambda: stats_only("auth-service"),
    "user-service": lambda: stats_only("user-service"),
    "dashboard-ui": dashboard_ui,
}


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, so the load balancer can reuse connections
    timeout = 120  # an idle keep-alive connection's thread ends after this
    # Headers and body go out in separate writes; without this, Nagle plus the client's
    # delayed ACK hold the body back ~40 ms and every request looks that slow.
    disable_nagle_algorithm = True
    server_version = "demo"
    answer: Callable[[str, str, str, int], Reply]

    def log_message(self, format: str, *args: Any) -> None:
        pass  # the demo's terminal is for the load balancer's output

    def do_GET(self) -> None:
        parts = urlsplit(self.path)
        body_size = self._drain_body()
        status, content_type, body = type(self).answer(
            self.command, parts.path, parts.query, body_size
        )
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-cache")
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    do_POST = do_PUT = do_PATCH = do_DELETE = do_OPTIONS = do_HEAD = do_GET

    def _drain_body(self) -> int:
        """Read (and discard) the request body, plain or chunked; return its size."""
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            size = 0
            while length := int(self.rfile.readline().split(b";")[0].strip() or b"0", 16):
                size += len(self.rfile.read(length))
                self.rfile.readline()
            while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                pass  # trailers
            return size
        length = int(self.headers.get("Content-Length") or 0)
        return len(self.rfile.read(length)) if length else 0


class DemoService:
    """One stand-in service on 127.0.0.1: ``start()``, then ``url``, then ``stop()``."""

    def __init__(self, name: str) -> None:
        self.name = name
        handler = type(f"{name}-handler", (_Handler,), {"answer": staticmethod(HANDLERS[name]())})
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, name=name, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def start(self) -> DemoService:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()


def start_all() -> list[DemoService]:
    return [DemoService(name).start() for name in URL_VARS]
