"""Tracing: W3C Trace Context through the load balancer, and spans exported over OTLP/HTTP.

Real things: the load balancer as a process (``sanic service.app``, two workers for the
export), an upstream that records the ``traceparent`` it gets, a WebSocket server, and an
OTLP/HTTP receiver that decodes every body with opentelemetry-proto's
``ExportTraceServiceRequest``.
"""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx
import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from websockets.sync.client import connect
from websockets.sync.server import ServerConnection, serve

from service.settings import SettingsError, load_settings
from service.tracing.context import parse_traceparent, valid_tracestate
from service.tracing.sampling import sampler
from tests.support import (
    LoadBalancer,
    UpstreamServer,
    closed_port_url,
    env_for,
    free_port,
    wait_for,
)

TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
PARENT = "00f067aa0ba902b7"
VALID = f"00-{TRACE}-{PARENT}-01"
STATE = "congo=t61rcWkgMzE,rojo=00f067aa0ba902b7"

INVALID = [
    f"00-{TRACE}-{PARENT}-01-extra",  # version 00 with more than 55 characters
    f"00-{TRACE.upper()}-{PARENT}-01",  # upper-case hex
    f"00-{'0' * 32}-{PARENT}-01",  # all-zero trace id
    f"00-{TRACE}-{'0' * 16}-01",  # all-zero parent id
    f"ff-{TRACE}-{PARENT}-01",  # version ff
    f"0g-{TRACE}-{PARENT}-01",  # version not hex
    f"00-{TRACE[:-1]}-{PARENT}-01",  # short trace id
    f"00_{TRACE}_{PARENT}_01",  # wrong separators
    f"00-{TRACE}-{PARENT}-1",  # short flags
    f"01-{TRACE}-{PARENT}-01x",  # a future version, but no '-' after the 55th character
    "",
    "garbage",
]


# ---------------------------------------------------------------- parsing, in process


def test_valid_traceparents_are_read() -> None:
    parent = parse_traceparent(VALID)
    assert parent is not None and parent.trace_id == TRACE and parent.parent_id == PARENT
    assert parent.sampled
    assert parse_traceparent(f"00-{TRACE}-{PARENT}-00").sampled is False  # type: ignore[union-attr]
    # a future version: its first 55 characters read as version 00, the rest ignored
    future = parse_traceparent(f"cc-{TRACE}-{PARENT}-01-what-the-future-holds")
    assert future is not None and future.trace_id == TRACE


@pytest.mark.parametrize("value", INVALID)
def test_invalid_traceparents_are_refused(value: str) -> None:
    assert parse_traceparent(value) is None


def test_tracestate_is_kept_only_when_valid_and_bounded() -> None:
    assert valid_tracestate([STATE]) == STATE
    assert valid_tracestate(["congo=t61rcWkgMzE", "rojo=1"]) == "congo=t61rcWkgMzE,rojo=1"
    assert valid_tracestate(["tenant@vendor=x, ,a=b"]) is not None  # empty members allowed
    assert valid_tracestate(["Upper=x"]) is None  # keys are lower case
    assert valid_tracestate(["a=b,a=c"]) is None  # a key twice
    assert valid_tracestate(["a=b=c"]) is None  # '=' in a value
    assert valid_tracestate(["novalue"]) is None
    assert valid_tracestate([",".join(f"k{i}=v" for i in range(33))]) is None  # 33 members
    assert valid_tracestate(["a=" + "x" * 255, "b=" + "y" * 255]) is None  # over 512
    assert valid_tracestate([]) is None


def test_samplers_follow_the_specification() -> None:
    low, high = "0" * 16 + "0" * 15 + "1", "0" * 16 + "f" * 16
    assert sampler("parentbased_always_on", 1.0)(TRACE, False) is False
    assert sampler("parentbased_always_on", 1.0)(TRACE, None) is True
    assert sampler("parentbased_always_off", 1.0)(TRACE, True) is True
    assert sampler("parentbased_always_off", 1.0)(TRACE, None) is False
    assert sampler("always_on", 1.0)(TRACE, False) is True
    assert sampler("always_off", 1.0)(TRACE, True) is False
    ratio = sampler("traceidratio", 0.5)
    assert ratio(low, None) is True and ratio(high, None) is False
    assert sampler("parentbased_traceidratio", 0.0)(low, None) is False


@pytest.mark.parametrize(
    "variable, value",
    [
        ("OTEL_TRACES_SAMPLER", "sometimes"),
        ("OTEL_TRACES_SAMPLER_ARG", "1.5"),
        ("OTEL_EXPORTER_OTLP_ENDPOINT", "localhost:4318"),
        ("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "ftp://collector/v1/traces"),
        ("OTEL_RESOURCE_ATTRIBUTES", "=nokey"),
        ("OTEL_SERVICE_NAME", ""),
    ],
)
def test_a_bad_otel_setting_stops_start_up_naming_it(variable: str, value: str) -> None:
    with pytest.raises(SettingsError, match=variable):
        load_settings(env={variable: value})


def test_headers_are_never_echoed_in_an_error() -> None:
    with pytest.raises(SettingsError) as caught:
        load_settings(env={"OTEL_EXPORTER_OTLP_HEADERS": "authorization=secret-token,broken"})
    assert "secret-token" not in str(caught.value)


def test_endpoints_as_the_sdks_read_them() -> None:
    base = load_settings(env={"OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4318/"}).tracing
    assert base.export_url == "http://c:4318/v1/traces"
    own = load_settings(
        env={
            "OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4318",
            "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://d:9/x",
        }
    ).tracing
    assert own.export_url == "http://d:9/x"
    assert load_settings(env={}).tracing.export_url == ""


def test_a_default_configuration_imports_no_exporter() -> None:
    """Memory matters: without an endpoint neither protobuf nor opentelemetry is loaded."""
    code = (
        "import sys\n"
        "from service.factory import create_app\n"
        "from service.settings import load_settings\n"
        "create_app(load_settings(env={}))\n"
        "loaded = [m for m in sys.modules if m.startswith(('google', 'opentelemetry'))]\n"
        "loaded += [m for m in sys.modules if m == 'service.tracing.export']\n"
        "print(loaded)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]", out.stdout


# ---------------------------------------------------------------- real servers


class Capture:
    """An upstream answering 200, keeping each request's path and trace headers."""

    def __init__(self) -> None:
        seen: list[dict[str, str]] = []
        self.seen = seen

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self) -> None:
                seen.append(
                    {
                        "path": self.path,
                        "traceparent": self.headers.get("traceparent", ""),
                        "tracestate": self.headers.get("tracestate", ""),
                        "count": str(len(self.headers.get_all("traceparent") or [])),
                    }
                )
                self.send_response(200)
                self.send_header("content-length", "2")
                self.end_headers()
                self.wfile.write(b"ok")

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_port}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def of(self, path: str) -> dict[str, str]:
        return wait_for(lambda: next((s for s in self.seen if s["path"] == path), None)).value

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


class Receiver:
    """An OTLP/HTTP receiver: POST /v1/traces bodies decoded, spans kept with the pid of
    the worker that exported them."""

    def __init__(self, port: int = 0) -> None:
        spans: list[dict[str, Any]] = []
        self.spans = spans
        self.status = 200

        receiver = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["content-length"]))
                assert self.path == "/v1/traces"
                assert self.headers["content-type"] == "application/x-protobuf"
                request = ExportTraceServiceRequest()
                request.ParseFromString(body)
                for resource_spans in request.resource_spans:
                    resource = {a.key: _value(a.value) for a in resource_spans.resource.attributes}
                    for scope_spans in resource_spans.scope_spans:
                        for span in scope_spans.spans:
                            spans.append(_span(span, resource, self.headers))
                self.send_response(receiver.status)
                self.send_header("content-length", "0")
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_port}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def trace(self, trace_id: str) -> list[dict[str, Any]]:
        return [s for s in self.spans if s["trace_id"] == trace_id]

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def _value(value: Any) -> Any:
    return getattr(value, value.WhichOneof("value"))


def _span(span: Any, resource: dict[str, Any], headers: Any) -> dict[str, Any]:
    return {
        "trace_id": span.trace_id.hex(),
        "span_id": span.span_id.hex(),
        "parent": span.parent_span_id.hex(),
        "name": span.name,
        "kind": span.kind,
        "attributes": {a.key: _value(a.value) for a in span.attributes},
        "error": span.status.code == 2,
        "resource": resource,
        "auth": headers.get("authorization"),
        "duration_ns": span.end_time_unix_nano - span.start_time_unix_nano,
    }


SERVER, CLIENT = 2, 3


@pytest.fixture(scope="module")
def capture() -> Iterator[Capture]:
    server = Capture()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def plain(upstreams: dict[str, UpstreamServer], capture: Capture) -> Iterator[LoadBalancer]:
    """No export: trace context only."""
    balancer = LoadBalancer(
        env_for(
            upstreams,
            API_GATEWAY_URL=capture.url,
            BLOG_SERVICE_URL=closed_port_url(),
            LB_ACCESS_LOG="true",
        )
    )
    yield balancer
    balancer.stop()


def ids(traceparent: str) -> tuple[str, str, str]:
    version, trace_id, parent_id, flags = traceparent.split("-")
    assert version == "00" and parse_traceparent(traceparent) is not None
    return trace_id, parent_id, flags


def test_a_valid_traceparent_continues_the_trace(plain: LoadBalancer, capture: Capture) -> None:
    response = plain.client.get(
        "/api/continue", headers={"traceparent": VALID, "tracestate": STATE}
    )
    assert response.status_code == 200
    got = capture.of("/api/continue")
    trace_id, parent_id, flags = ids(got["traceparent"])
    assert (trace_id, flags) == (TRACE, "01")
    assert parent_id != PARENT  # the load balancer's span, not the client's
    assert got["tracestate"] == STATE and got["count"] == "1"
    unsampled = f"00-{TRACE}-{PARENT}-00"
    plain.client.get("/api/unsampled", headers={"traceparent": unsampled})
    assert ids(capture.of("/api/unsampled")["traceparent"])[2] == "00"
    # a later version is answered with version 00, its known fields kept
    plain.client.get("/api/future", headers={"traceparent": f"42-{TRACE}-{PARENT}-01-more"})
    assert ids(capture.of("/api/future")["traceparent"])[0] == TRACE


@pytest.mark.parametrize("index", range(len(INVALID)))
def test_an_invalid_traceparent_is_never_forwarded(
    plain: LoadBalancer, capture: Capture, index: int
) -> None:
    path = f"/api/invalid/{index}"
    headers = {"traceparent": INVALID[index], "tracestate": STATE}
    assert plain.client.get(path, headers=headers).status_code == 200
    got = capture.of(path)
    trace_id, _, flags = ids(got["traceparent"])  # a new trace, valid
    assert got["traceparent"] != INVALID[index] and trace_id != TRACE
    assert flags == "01"  # the default sampler starts new traces sampled
    assert got["tracestate"] == ""  # dropped with the traceparent it came with


def test_two_traceparent_fields_are_none(plain: LoadBalancer, capture: Capture) -> None:
    headers = [("traceparent", VALID), ("traceparent", f"00-{TRACE}-{PARENT}-00")]
    plain.client.get("/api/two-fields", headers=headers)
    got = capture.of("/api/two-fields")
    assert got["count"] == "1" and ids(got["traceparent"])[0] != TRACE


def test_no_traceparent_starts_a_trace_logged_with_its_span(
    plain: LoadBalancer, capture: Capture
) -> None:
    plain.client.get("/api/fresh")
    trace_id, parent_id, _ = ids(capture.of("/api/fresh")["traceparent"])
    line = wait_for(
        lambda: next((x for x in plain.output if "path=/api/fresh " in x), None), timeout=5
    ).value
    # appended after the fields there were: the span logged is the upstream's parent
    assert line.rstrip().endswith(f"trace_id={trace_id} span_id={parent_id}")
    assert "request_id=" in line


def test_a_502_body_and_its_log_line_carry_the_trace(plain: LoadBalancer) -> None:
    response = plain.client.get("/blog/down", headers={"traceparent": VALID})
    assert response.status_code == 502
    body = response.json()
    assert body["trace_id"] == TRACE and body["error"] == "upstream unreachable"
    line = wait_for(
        lambda: next((x for x in plain.output if "path=/blog/down " in x), None), timeout=5
    ).value
    assert f"trace_id={TRACE} span_id=" in line


def test_json_access_lines_carry_the_trace(
    upstreams: dict[str, UpstreamServer], capture: Capture
) -> None:
    env = env_for(
        upstreams, API_GATEWAY_URL=capture.url, LB_ACCESS_LOG="true", LB_LOG_FORMAT="json"
    )
    balancer = LoadBalancer(env)
    try:
        balancer.client.get("/api/json-line", headers={"traceparent": VALID})
        _, span_id, _ = ids(capture.of("/api/json-line")["traceparent"])
        line = wait_for(
            lambda: next((x for x in balancer.output if '"path":"/api/json-line"' in x), None),
            timeout=5,
        ).value
        import json

        record = json.loads(line)
        assert record["trace_id"] == TRACE and record["span_id"] == span_id
        assert list(record)[-2:] == ["trace_id", "span_id"]
    finally:
        balancer.stop()


def test_a_websocket_tunnel_carries_the_trace(upstreams: dict[str, UpstreamServer]) -> None:
    seen: list[str] = []

    def handle(ws: ServerConnection) -> None:
        seen.append(ws.request.headers.get("traceparent", ""))
        for message in ws:
            ws.send(message)

    server = serve(handle, "127.0.0.1", 0)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    port = server.socket.getsockname()[1]
    balancer = LoadBalancer(env_for(upstreams, API_GATEWAY_URL=f"http://127.0.0.1:{port}"))
    try:
        url = f"ws://127.0.0.1:{balancer.port}/api/ws"
        with connect(url, additional_headers={"traceparent": VALID}) as ws:
            ws.send("hi")
            assert ws.recv(timeout=5) == "hi"
        trace_id, parent_id, flags = ids(seen[0])
        assert (trace_id, flags) == (TRACE, "01") and parent_id != PARENT
    finally:
        balancer.stop()
        server.shutdown()


# ---------------------------------------------------------------- export


@pytest.fixture(scope="module")
def receiver() -> Iterator[Receiver]:
    server = Receiver()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def exporting(
    upstreams: dict[str, UpstreamServer], capture: Capture, receiver: Receiver
) -> Iterator[LoadBalancer]:
    """Two workers exporting every request; the api pool has a refused target (never
    ejected) drawn once in ten, so about one request in ten is retried (within the retry
    budget of a fifth)."""
    env = env_for(
        upstreams,
        API_GATEWAY_URL=f"{closed_port_url()},{capture.url};weight=9",
        API_GATEWAY_BALANCE="round_robin",
        API_GATEWAY_MAX_FAILS="100000",
        OTEL_EXPORTER_OTLP_ENDPOINT=receiver.url,
        OTEL_EXPORTER_OTLP_HEADERS="authorization=Bearer%20t0ken",
        OTEL_SERVICE_NAME="front-door",
        OTEL_RESOURCE_ATTRIBUTES="deployment.environment=test",
    )
    balancer = LoadBalancer(env, workers=2)
    yield balancer
    balancer.stop()


def _sampled(n: int, tag: str) -> list[tuple[str, str, str]]:
    return [(f"{tag}{i:04x}".ljust(32, "a"), f"{i + 1:016x}", f"/api/{tag}/{i}") for i in range(n)]


def test_spans_are_exported_with_links_and_attributes(
    exporting: LoadBalancer, capture: Capture, receiver: Receiver
) -> None:
    requests = _sampled(60, "e")
    for trace_id, parent, path in requests:
        with httpx.Client(base_url=exporting.url, trust_env=False) as client:  # new connection
            response = client.get(
                path, headers={"traceparent": f"00-{trace_id}-{parent}-01", "user-agent": "t/1"}
            )
        assert response.status_code == 200
    # a sampled parent is always exported: every trace, from both workers
    wait_for(lambda: all(receiver.trace(t) for t, _, _ in requests), timeout=10)
    retried = 0
    for trace_id, parent, path in requests:
        spans = wait_for(lambda t=trace_id: len(receiver.trace(t)) >= 2, timeout=5) and (
            receiver.trace(trace_id)
        )
        (server,) = [s for s in spans if s["kind"] == SERVER]
        clients = [s for s in spans if s["kind"] == CLIENT]
        assert server["parent"] == parent and server["name"] == "GET /api"
        assert server["attributes"] == {
            "http.request.method": "GET",
            "url.path": path,
            "http.route": "/api",
            "http.response.status_code": 200,
            "client.address": "127.0.0.1",
            "user_agent.original": "t/1",
        }
        assert server["resource"]["service.name"] == "front-door"
        assert server["resource"]["deployment.environment"] == "test"
        assert server["auth"] == "Bearer t0ken"
        assert all(c["parent"] == server["span_id"] for c in clients)
        answered = [c for c in clients if c["attributes"].get("http.response.status_code") == 200]
        (ok,) = answered
        assert ok["attributes"]["server.address"] == "127.0.0.1"
        assert ok["attributes"]["network.peer.address"] == "127.0.0.1"
        assert ok["attributes"]["server.port"] == int(capture.url.rsplit(":", 1)[1])
        assert ok["attributes"]["lb.upstream"] == "api-gateway"
        # the traceparent sent upstream names the attempt's span
        assert ids(capture.of(path)["traceparent"]) == (trace_id, ok["span_id"], "01")
        if len(clients) == 2:
            retried += 1
            (refused,) = [c for c in clients if c is not ok]
            assert refused["attributes"]["error.type"] == "refused" and refused["error"]
    assert retried >= 2  # a retry shows as two children
    pids = {s["resource"]["process.pid"] for s in receiver.spans}
    assert len(pids) == 2  # spans from both workers


def test_unsampled_parents_are_never_exported(
    exporting: LoadBalancer, capture: Capture, receiver: Receiver
) -> None:
    unsampled = _sampled(10, "d")
    for trace_id, parent, path in unsampled:
        exporting.client.get(path, headers={"traceparent": f"00-{trace_id}-{parent}-00"})
        assert ids(capture.of(path)["traceparent"])[2] == "00"
    marker = _sampled(1, "c")[0]
    exporting.client.get(marker[2], headers={"traceparent": f"00-{marker[0]}-{marker[1]}-01"})
    wait_for(lambda: receiver.trace(marker[0]), timeout=10)
    time.sleep(2.5)  # past two export turns of either worker
    assert not [t for t, _, _ in unsampled if receiver.trace(t)]


def test_exporting_shows_in_stats_and_metrics(exporting: LoadBalancer) -> None:
    section = exporting.client.get("/stats").json()["load-balancer"]["tracing"]
    assert section["spans_exported"] > 0 and section["spans_dropped"] == 0
    metrics = exporting.client.get("/metrics").text
    assert "lb_tracing_spans_dropped_total 0.0" in metrics


def test_a_collector_down_under_load_fails_no_request(
    upstreams: dict[str, UpstreamServer], capture: Capture
) -> None:
    port = free_port()
    env = env_for(
        upstreams,
        API_GATEWAY_URL=capture.url,
        OTEL_EXPORTER_OTLP_ENDPOINT=f"http://127.0.0.1:{port}",
    )
    balancer = LoadBalancer(env)
    receiver = None
    try:

        def one(i: int) -> tuple[int, float]:
            started = time.monotonic()
            status = balancer.client.get(f"/api/down/{i}").status_code
            return status, time.monotonic() - started

        with ThreadPoolExecutor(8) as pool:
            results = list(pool.map(one, range(300)))
        assert {status for status, _ in results} == {200}
        assert max(took for _, took in results) < 2.0  # generous; never an export's wait

        def dropped() -> float:
            for line in balancer.client.get("/metrics").text.splitlines():
                if line.startswith("lb_tracing_spans_dropped_total "):
                    return float(line.split()[1])
            return 0.0

        wait_for(lambda: dropped() > 0, timeout=10)
        wait_for(lambda: any("span export to" in x and "failed" in x for x in balancer.output))
        # the collector comes back: recovery logged once, failure logged once
        receiver = Receiver(port)
        balancer.client.get("/api/down/again")
        wait_for(lambda: any("works again" in x for x in balancer.output), timeout=10)
        assert sum("span export to" in x and "failed" in x for x in balancer.output) == 1
        assert sum("works again" in x for x in balancer.output) == 1
    finally:
        balancer.stop()
        if receiver is not None:
            receiver.stop()
