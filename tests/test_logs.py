"""Request ids and logs, through real processes: ``X-Request-ID`` in and out and upstream,
every line with time, level and worker, the access log (JSON lines parsed as JSON), a
proxy-made 502 logged once with its reason, and ``python -m service``'s access log on by
default and switchable."""

from __future__ import annotations

import json
import signal
import subprocess
from collections.abc import Iterator

import httpx
import pytest

from service.logs import RequestIds, is_sane
from service.logs.access import Answered
from tests.support import (
    python_m_service,
    LoadBalancer,
    UpstreamServer,
    closed_port_url,
    env_for,
    wait_for,
)


def json_lines(balancer: LoadBalancer) -> list[dict]:
    """Every line the process wrote, each parsed as one JSON object (fails on any other)."""
    return [json.loads(line) for line in list(balancer.output) if line.strip()]


@pytest.fixture(scope="module")
def json_lb(upstreams: dict[str, UpstreamServer]) -> Iterator[LoadBalancer]:
    balancer = LoadBalancer(
        env_for(upstreams, AUTH_SERVICE_URL=closed_port_url(), LB_LOG_FORMAT="json"), workers=2
    )
    yield balancer
    balancer.stop()


def upstream_saw(response: httpx.Response) -> list[str]:
    return [v for k, v in response.json()["headers"] if k.lower() == "x-request-id"]


def test_a_sane_client_id_is_kept_forwarded_and_returned(json_lb: LoadBalancer) -> None:
    response = json_lb.client.get("/api/x", headers={"X-Request-ID": "client-id.42"})
    assert response.status_code == 200
    assert response.headers["x-request-id"] == "client-id.42"
    assert upstream_saw(response) == ["client-id.42"]


@pytest.mark.parametrize("offered", ["has space", "x" * 129, 'quo"te', "é-accent", ""])
def test_an_insane_client_id_is_replaced(json_lb: LoadBalancer, offered: str) -> None:
    response = json_lb.client.get("/api/x", headers={"X-Request-ID": offered.encode()})
    returned = response.headers["x-request-id"]
    assert returned != offered and is_sane(returned)
    assert upstream_saw(response) == [returned]  # one id upstream, the client's one dropped


def test_ids_are_generated_unique_and_on_local_answers(json_lb: LoadBalancer) -> None:
    ids = set()
    for _ in range(20):  # new connections: both workers answer some
        response = httpx.get(json_lb.url + "/lb-health", trust_env=False)
        ids.add(response.headers["x-request-id"])
    assert len(ids) == 20 and all(is_sane(i) for i in ids)
    assert json_lb.client.get("/stats").headers["x-request-id"]
    assert json_lb.client.request("TRACE", "/api/x").headers["x-request-id"]


def test_json_lines_carry_time_level_worker_and_the_request(json_lb: LoadBalancer) -> None:
    rid = "access-check-1"
    assert json_lb.client.get("/blog/post", headers={"X-Request-ID": rid}).status_code == 200
    assert json_lb.client.get("/stats", headers={"X-Request-ID": rid + "s"}).status_code == 200

    def access_lines() -> list[dict]:
        return [r for r in json_lines(json_lb) if r.get("logger") == "service.access"]

    wait_for(lambda: {rid, rid + "s"} <= {r.get("request_id") for r in access_lines()})
    lines = json_lines(json_lb)
    assert len(lines) >= 5
    for record in lines:
        assert set(record) >= {"time", "level", "worker", "logger", "message"}, record
        assert record["time"].endswith("Z") and "T" in record["time"]
        assert isinstance(record["worker"], int)
    (proxied,) = [r for r in access_lines() if r.get("request_id") == rid]
    assert proxied["method"] == "GET" and proxied["path"] == "/blog/post"
    assert proxied["route"] == "blog-service" and proxied["status"] == 200
    assert proxied["target"].startswith("http://127.0.0.1:")
    assert proxied["client"] == "127.0.0.1"
    assert proxied["bytes"] > 0 and proxied["duration_ms"] > 0
    assert (
        str(proxied["worker"])
        in json_lb.client.get("/stats").json()["load-balancer"]["requests_by_worker"]
    )
    (local,) = [r for r in access_lines() if r.get("request_id") == rid + "s"]
    assert local["route"] == "local" and local["path"] == "/stats" and local["bytes"] > 100


def test_a_proxy_made_502_is_logged_once_with_its_reason(
    upstreams: dict[str, UpstreamServer],
) -> None:
    balancer = LoadBalancer(
        env_for(upstreams, API_GATEWAY_URL=closed_port_url(), LB_LOG_FORMAT="json")
    )
    try:
        response = balancer.client.get("/api/x", headers={"X-Request-ID": "bad-gw-1"})
        assert response.status_code == 502

        def about() -> list[dict]:
            return [r for r in json_lines(balancer) if r.get("request_id") == "bad-gw-1"]

        wait_for(lambda: any(r["logger"] == "service.access" for r in about()))
        errors = [r for r in about() if r["logger"] == "service.proxy"]
        assert len(errors) == 1, about()
        assert errors[0]["level"] == "WARNING"
        assert "502" in errors[0]["message"] and "refused" in errors[0]["message"]
        (access,) = [r for r in about() if r["logger"] == "service.access"]
        assert access["status"] == 502 and access["target"].startswith("http://127.0.0.1:")
        # the ejection the failure caused is about this request too
        assert any("ejected" in r["message"] for r in about())
    finally:
        balancer.stop()


def test_request_ids_are_sane_and_distinct() -> None:
    ids = RequestIds()
    assert ids.for_request("abc") == "abc"
    assert ids.for_request("a" * 128) == "a" * 128
    made = {ids.for_request(None) for _ in range(1000)} | {ids.for_request("a b")}
    assert len(made) == 1001 and all(is_sane(i) for i in made)
    assert RequestIds().for_request(None) != RequestIds().for_request(None)


# ------------------------------------------------------------------ python -m service


def run_service(upstreams: dict[str, UpstreamServer], **extra: str) -> tuple[str, str]:
    """``python -m service`` on a free port: one proxied request, then SIGTERM; its
    (stdout, stderr) and the request id it returned."""
    with python_m_service(env_for(upstreams, **extra), output=subprocess.PIPE) as (process, url):
        rid = httpx.get(url + "/api/x", trust_env=False).headers["x-request-id"]
        process.send_signal(signal.SIGTERM)
        out, err = process.communicate(timeout=20)
    return out.decode() + "\n" + rid, err.decode()


def test_python_m_service_writes_an_access_log_by_default(
    upstreams: dict[str, UpstreamServer],
) -> None:
    out, err = run_service(upstreams)
    *lines, rid = out.strip().splitlines()
    (line,) = [l for l in lines if f"request_id={rid}" in l and "path=/api/x" in l]
    assert " INFO worker=" in line and "service.access:" in line
    assert "route=api-gateway" in line and "status=200" in line and "bytes=" in line
    assert "Worker ready" in err  # the service's own lines go to stderr, in the same format
    assert all(" worker=" in l for l in err.splitlines() if l.strip()), err


def test_python_m_service_access_log_can_be_switched_off(
    upstreams: dict[str, UpstreamServer],
) -> None:
    out, _ = run_service(upstreams, LB_ACCESS_LOG="false")
    *lines, _rid = out.strip().splitlines()
    assert not [l for l in lines if "service.access" in l]


@pytest.mark.parametrize("log_format", ["json", "text"])
def test_access_lines_escape_what_the_client_controls(log_format: str) -> None:
    import io
    from types import SimpleNamespace

    from service.logs import AccessLog

    out = io.BytesIO()
    log = AccessLog(log_format, out, max_lines=2)
    request = SimpleNamespace(
        ip="::1", method="GET", path='/api/"quoted"\\ é', ctx=SimpleNamespace(request_id="r-1")
    )
    for status in (200, 404):  # the second line fills the buffer: written without a flush
        log.write(request, Answered("api-gateway", "", status, 3), 0.002)  # type: ignore[arg-type]
    lines = out.getvalue().decode().splitlines()
    assert len(lines) == 2
    if log_format == "json":
        record = json.loads(lines[1])
        assert record["path"] == '/api/"quoted"\\ é' and record["status"] == 404
        assert record["request_id"] == "r-1" and record["duration_ms"] == 2.0
        assert record["target"] == "" and record["level"] == "INFO"
    else:
        assert 'path="/api/\\"quoted\\"\\\\ é"' in lines[1] and "target=-" in lines[1]
        assert lines[1].endswith("request_id=r-1") and " INFO worker=" in lines[1]
