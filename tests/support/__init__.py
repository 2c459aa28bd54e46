"""What the tests and the benchmarks share: servers, the load-balancer process, waiting.

- :mod:`tests.support.servers`: ``UpstreamServer``, ``Knob`` (``knob_maker``,
  ``knobs_on_one_port``), ``SilentServer``, ``ClosingServer``, ``start_upstreams``,
  ``URL_VARS``, ``STATS_PAYLOADS``;
- :mod:`tests.support.processes`: ``LoadBalancer``, ``env_for``, ``clean_env``,
  ``python_m_service``, ``sanic_until_exit`` (a start-up that must fail), ``two_replicas``,
  ``slow_request_in_flight``, and the process tree from /proc (``children``, ``rss_kib``,
  ``cpu_ticks``, ``open_fds``);
- :mod:`tests.support.net`: ``free_port``, ``closed_port_url``, ``raw_request``;
- :mod:`tests.support.waiting`: ``wait_for``.
"""

from tests.support.net import closed_port_url, free_port, raw_request
from tests.support.processes import (
    REPO,
    SANIC,
    LoadBalancer,
    children,
    clean_env,
    cpu_ticks,
    env_for,
    open_fds,
    python_m_service,
    rss_kib,
    sanic_until_exit,
    slow_request_in_flight,
    two_replicas,
)
from tests.support.servers import (
    STATS_PAYLOADS,
    URL_VARS,
    ClosingServer,
    Knob,
    SilentServer,
    UpstreamServer,
    knob_maker,
    knobs_on_one_port,
    start_upstreams,
)
from tests.support.waiting import Waited, wait_for

__all__ = [
    "REPO",
    "SANIC",
    "STATS_PAYLOADS",
    "URL_VARS",
    "ClosingServer",
    "Knob",
    "LoadBalancer",
    "SilentServer",
    "UpstreamServer",
    "Waited",
    "children",
    "clean_env",
    "closed_port_url",
    "cpu_ticks",
    "env_for",
    "free_port",
    "knob_maker",
    "knobs_on_one_port",
    "open_fds",
    "python_m_service",
    "raw_request",
    "rss_kib",
    "sanic_until_exit",
    "slow_request_in_flight",
    "start_upstreams",
    "two_replicas",
    "wait_for",
]
