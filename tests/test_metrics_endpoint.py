"""``GET /metrics``: Prometheus text from a real load-balancer process, checked against the
traffic the test sent and against ``/stats``."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from prometheus_client.parser import text_string_to_metric_families
from websockets.sync.client import connect

from tests.support import LoadBalancer, UpstreamServer, closed_port_url, env_for, wait_for


def scrape(balancer: LoadBalancer) -> dict[str, list]:
    """``{sample name: [(labels, value), ...]}`` from one scrape, checking the format."""
    response = balancer.client.get("/metrics")
    assert response.status_code == 200
    # The classic text exposition format (prometheus_client names it 0.0.4 or 1.0.0).
    assert response.headers["content-type"].startswith("text/plain; version=")
    samples: dict[str, list] = {}
    for family in text_string_to_metric_families(response.text):
        for sample in family.samples:
            samples.setdefault(sample.name, []).append((sample.labels, sample.value))
    return samples


def value(samples: dict[str, list], name: str, **labels: str) -> float:
    matches = [v for l, v in samples[name] if all(l.get(k) == x for k, x in labels.items())]
    assert len(matches) == 1, (name, labels, samples.get(name))
    return matches[0]


@pytest.fixture
def metrics_lb(upstreams: dict[str, UpstreamServer]) -> Iterator[LoadBalancer]:
    """A fresh load balancer whose auth service is unreachable."""
    balancer = LoadBalancer(
        env_for(upstreams, AUTH_SERVICE_URL=closed_port_url(), LB_STATS_CACHE_TTL="0")
    )
    yield balancer
    balancer.stop()


def test_metrics_match_traffic_and_stats(metrics_lb: LoadBalancer) -> None:
    client = metrics_lb.client
    for _ in range(7):
        assert client.get("/api/x").status_code == 200
    for _ in range(2):
        assert client.head("/api/x").status_code == 200
    for _ in range(3):
        assert client.get("/api/x?status=404").status_code == 404
    for _ in range(2):
        assert client.get("/blog/post?status=503").status_code == 503
    for _ in range(4):
        assert client.get("/").status_code == 200
    assert client.get("/blog").status_code == 308  # answered by the proxy itself
    sent = 7 + 2 + 3 + 2 + 4 + 1

    samples = scrape(metrics_lb)
    assert value(samples, "lb_requests_total", route="api-gateway", code="2xx") == 9
    assert value(samples, "lb_requests_total", route="api-gateway", code="4xx") == 3
    assert value(samples, "lb_requests_total", route="api-gateway", code="5xx") == 0
    assert value(samples, "lb_requests_total", route="blog-service", code="5xx") == 2
    assert value(samples, "lb_requests_total", route="dashboard-ui", code="2xx") == 4
    assert value(samples, "lb_requests_total", route="local", code="3xx") == 1
    assert sum(v for _, v in samples["lb_requests_total"]) == sent
    assert value(samples, "lb_real_api_requests_total", outcome="success") == 7
    assert value(samples, "lb_real_api_requests_total", outcome="failure") == 3

    # total_requests counts proxied requests: the /blog redirect was answered locally
    total = client.get("/stats").json()["load-balancer"]["total_requests"]
    assert total == sent - 1
    # One histogram per route; together they hold every request, the local answer too.
    count = sum(v for _, v in samples["lb_request_duration_seconds_count"])
    assert count == total + 1
    assert value(samples, "lb_request_duration_seconds_count", route="api-gateway") == 12
    assert value(samples, "lb_request_duration_seconds_count", route="local") == 1
    for route in ("api-gateway", "blog-service", "dashboard-ui", "local"):
        buckets = [
            (float(l["le"]), v)
            for l, v in samples["lb_request_duration_seconds_bucket"]
            if l["route"] == route
        ]
        assert buckets == sorted(buckets)  # bounds ascending, cumulative counts never falling
        route_count = value(samples, "lb_request_duration_seconds_count", route=route)
        assert buckets[-1] == (float("inf"), route_count)
        # Buckets fine enough for 1-3 ms requests: several bounds at or below 5 ms.
        assert len([b for b, _ in buckets if b <= 0.005]) >= 5
    assert 0 < sum(v for _, v in samples["lb_request_duration_seconds_sum"]) < 10

    # Scraping is not traffic: /metrics and /stats are not counted as proxied requests.
    again = scrape(metrics_lb)
    assert sum(v for _, v in again["lb_request_duration_seconds_count"]) == sent


def test_ws_connections_gauge(metrics_lb: LoadBalancer) -> None:
    url = f"ws://127.0.0.1:{metrics_lb.port}/api/ws-heartbeat"
    assert value(scrape(metrics_lb), "lb_ws_connections") == 0
    with connect(url, ping_interval=None) as first, connect(url, ping_interval=None):
        first.send("hb")
        assert value(scrape(metrics_lb), "lb_ws_connections") == 2
    wait_for(lambda: value(scrape(metrics_lb), "lb_ws_connections") == 0, timeout=5)
    assert value(scrape(metrics_lb), "lb_ws_connections") == 0


def test_upstream_up_per_service(metrics_lb: LoadBalancer) -> None:
    samples = scrape(metrics_lb)
    # Labelled by pool name, like lb_target_*, so that PromQL can join them; the /stats
    # key rides along.
    assert {(l["upstream"], l["stats_key"]): v for l, v in samples["lb_upstream_up"]} == {
        ("api-gateway", "api-gateway"): 1.0,
        ("blog-service", "blog_service"): 1.0,
        ("user-service", "user_service"): 1.0,
        ("auth-service", "auth"): 0.0,  # pointed at a closed port
    }
    pools = {l["upstream"] for l, _ in samples["lb_target_up"]}
    assert {l["upstream"] for l, _ in samples["lb_upstream_up"]} <= pools
    document = metrics_lb.client.get("/stats").json()
    assert document["auth"]["service_status"] == "offline"
    assert "refused" in document["auth"]["error"]
