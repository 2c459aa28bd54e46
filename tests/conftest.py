"""Fixtures: real upstream servers on ephemeral ports, real load-balancer processes, and a
throw-away Redis for the cluster tests.

What the fixtures are built from (servers, the load-balancer process, ``wait_for``...) lives in
:mod:`tests.support`, shared with bench/.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from sanic import Sanic

from tests.support import LoadBalancer, UpstreamServer, env_for, start_upstreams
from tests.support.redis import RedisServer


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Test files that declare ``SCHEDULE_FIRST = True`` (the minute of bench smoke runs) go
    first; the rest keep their order (by file name).

    pytest-xdist (``--dist loadfile``, with ``--no-loadscope-reorder`` in pyproject.toml)
    hands whole files to its two processes in this order, each taking the next as it runs
    dry. Ordered by test count instead (xdist's default), tests/test_bench.py, with two
    tests, went out second to last and kept one process busy for a minute while the other
    had nothing left to run.
    """
    items.sort(key=lambda item: not getattr(getattr(item, "module", None), "SCHEDULE_FIRST", False))


@pytest.fixture(autouse=True)
def _fresh_sanic_registry(request: pytest.FixtureRequest) -> Iterator[None]:
    """Each test may build apps with the same names; Sanic keeps a global registry of them."""
    Sanic._app_registry.clear()
    Sanic.test_mode = True
    yield
    Sanic._app_registry.clear()


@pytest.fixture(scope="module")
def upstreams() -> Iterator[dict[str, UpstreamServer]]:
    servers = start_upstreams()
    yield servers
    for server in servers.values():
        server.stop()


@pytest.fixture(scope="module")
def lb(upstreams: dict[str, UpstreamServer]) -> Iterator[LoadBalancer]:
    """One single-process load balancer per test module, in front of ``upstreams``."""
    balancer = LoadBalancer(env_for(upstreams, LB_READ_TIMEOUT="3", LB_STATS_CACHE_TTL="0"))
    yield balancer
    balancer.stop()


@pytest.fixture(scope="module")
def redis() -> Iterator[RedisServer]:
    """A Redis of its own per test module that asks for one (the cluster's store)."""
    server = RedisServer()
    yield server
    server.close()
