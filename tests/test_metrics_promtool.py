"""``/metrics`` checked by Prometheus' own ``promtool check metrics``, and the honesty of
``lb_target_up`` (a target never contacted, or one whose last contact failed, is not up)."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support import REPO, LoadBalancer, UpstreamServer, closed_port_url, env_for
from tests.support.tools import require
from tests.test_metrics_endpoint import scrape, value

CACHED = REPO / ".ci" / "cache" / "prometheus" / "usr" / "bin" / "promtool"


def promtool() -> str:
    """``$PROMTOOL``, else promtool on PATH, else the copy ``.ci/get-promtool`` unpacks."""
    return os.environ.get("PROMTOOL") or require("promtool", also=(str(CACHED),))


@pytest.fixture(scope="module")
def half_down_lb(upstreams: dict[str, UpstreamServer]) -> Iterator[LoadBalancer]:
    balancer = LoadBalancer(env_for(upstreams, AUTH_SERVICE_URL=closed_port_url()))
    yield balancer
    balancer.stop()


def test_promtool_accepts_metrics_under_traffic(half_down_lb: LoadBalancer) -> None:
    for path in ("/api/x", "/api/x?status=404", "/blog/post", "/", "/blog"):
        half_down_lb.client.get(path)
    text = half_down_lb.client.get("/metrics").content
    assert b'lb_request_duration_seconds_bucket{le="0.001",route="api-gateway"}' in text
    checked = subprocess.run(
        [promtool(), "check", "metrics"], input=text, capture_output=True, timeout=30
    )
    # promtool exits 1 on any problem, lint ones included, and names it on stdout/stderr.
    assert checked.returncode == 0, (checked.stdout, checked.stderr)
    assert checked.stdout.strip() == b"" and checked.stderr.strip() == b""


def test_promtool_catches_a_bad_exposition() -> None:
    """The check is real: a counter without _total and a histogram without +Inf fail."""
    bad = b"# HELP x_requests Bad.\n# TYPE x_requests counter\nx_requests 1\n"
    checked = subprocess.run(
        [promtool(), "check", "metrics"], input=bad, capture_output=True, timeout=30
    )
    assert checked.returncode != 0


def test_target_up_is_honest(half_down_lb: LoadBalancer) -> None:
    samples = scrape(half_down_lb)  # the scrape itself asked every aggregated service
    # auth's only target refused its /stats call: down in both families, which now join.
    assert value(samples, "lb_upstream_up", upstream="auth-service") == 0
    assert value(samples, "lb_target_up", upstream="auth-service") == 0
    assert value(samples, "lb_upstream_up", upstream="blog-service") == 1
    assert value(samples, "lb_target_up", upstream="blog-service") == 1
    assert value(samples, "lb_pools_without_live_target") == 1
    assert value(samples, "lb_draining") == 0


def test_never_contacted_target_is_not_up(upstreams: dict[str, UpstreamServer]) -> None:
    balancer = LoadBalancer(env_for(upstreams))
    try:
        samples = scrape(balancer)
        # Nobody has asked the dashboard UI anything yet (it has no /stats to aggregate).
        assert value(samples, "lb_target_up", upstream="dashboard-ui") == 0
        document = balancer.client.get("/stats").json()
        (target,) = document["load-balancer"]["upstreams"]["dashboard-ui"]["targets"]
        assert target["reachable"] is None and target["state"] == "up"
        assert balancer.client.get("/").status_code == 200
        assert value(scrape(balancer), "lb_target_up", upstream="dashboard-ui") == 1
    finally:
        balancer.stop()


def test_promtool_is_the_real_one() -> None:
    version = subprocess.run([promtool(), "--version"], capture_output=True, timeout=30)
    assert b"promtool, version" in version.stdout + version.stderr
    assert Path(promtool()).name == "promtool"
