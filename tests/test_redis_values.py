"""Values read from Redis are claims: one real load balancer shares its limit through one
real Redis, and bad entries are written straight into the stream and the members hash the
sync reads (as a broken or hostile replica would). The gate's decisions stay sane: no key is
locked out beyond the bound, no slot is taken by a forged fingerprint, the replica count is
not inflated; every dropped value is counted by kind and logged once.

The tests share one load balancer and run in file order; each uses its own client address.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import orjson
import pytest

from service.admission.policy import compile_limits, key_hash
from service.admission.remote import most_debt, most_per_entry
from service.settings import load_settings
from tests.support import LoadBalancer, UpstreamServer, env_for, wait_for
from tests.support.flood import client_from
from tests.support.redis import RedisServer

RATE, BURST = 20.0, 5
NAME = "values-test"
STREAM, MEMBERS = f"{NAME}:admission", f"{NAME}:admission-replicas"
LIMIT = compile_limits(load_settings(env={"LB_RATE_LIMIT": f"{RATE:g}/s burst={BURST}"}))[0]
WINDOW_S = 1.0  # the sync window at the default publish interval (250 ms): max(1, 4 x 0.25)


@pytest.fixture(scope="module")
def lb(upstreams: dict[str, UpstreamServer], redis: RedisServer) -> Iterator[LoadBalancer]:
    env = env_for(
        upstreams,
        LB_CLUSTER_REDIS_URL=redis.url,
        LB_CLUSTER_NAME=NAME,
        LB_RATE_LIMIT=f"{RATE:g}/s burst={BURST}",
        LB_LIMIT_KEYS="64",
        LB_ACCESS_LOG="false",
    )
    balancer = LoadBalancer(env, workers=1, name="values")
    try:
        wait_for(lambda: cluster_of(balancer)["status"] == "ok", timeout=10)
        yield balancer
    finally:
        balancer.stop()


def stats_of(lb: LoadBalancer) -> dict[str, Any]:
    """``load-balancer`` of /stats (itself under the limit: a 429 is waited out)."""
    with client_from(lb.url, "127.0.0.1") as client:
        while (response := client.get("/stats")).status_code == 429:
            time.sleep(0.1)
        assert response.status_code == 200, response.text
        return response.json()["load-balancer"]


def limits_of(lb: LoadBalancer) -> dict[str, Any]:
    return stats_of(lb)["limits"]


def cluster_of(lb: LoadBalancer) -> dict[str, Any]:
    return limits_of(lb)["cluster"]


def publish(redis: RedisServer, payload: bytes | str, replica: str = "forger-1.0") -> None:
    text = payload.decode() if isinstance(payload, bytes) else payload
    assert redis.command("XADD", STREAM, "*", "r", replica, "p", text).startswith("$")


def entry(keys: list[list[Any]], counts: Any = None) -> bytes:
    return orjson.dumps({"c": counts or {"default": [1, 0]}, "d": {"default": [1, 0]}, "k": keys})


def status_from(lb: LoadBalancer, source: str) -> int:
    with client_from(lb.url, source) as client:
        return client.get("/api/values").status_code


def dropped_moves(lb: LoadBalancer, kind: str, before: int, timeout: float = 5.0) -> None:
    wait_for(lambda: cluster_of(lb)["dropped"][kind] > before, timeout=timeout)


def test_a_huge_count_is_dropped_and_the_key_is_not_locked_out(
    lb: LoadBalancer, redis: RedisServer
) -> None:
    client = "127.0.0.21"
    before = cluster_of(lb)["dropped"]["count"]
    fp = key_hash(LIMIT.name, client)
    # published again until seen: the module's first test may publish before the new
    # service's sync has read the stream once (it reads what arrives after it starts)
    wait_for(
        lambda: (
            publish(redis, entry([[LIMIT.name, fp, 10**12, client]]))
            or cluster_of(lb)["dropped"]["count"] > before
        ),
        timeout=10,
        step=0.3,
    )
    assert status_from(lb, client) == 200  # 10**12 requests' debt would be 1,585 years
    assert any("dropped a value read from Redis (count" in line for line in lb.output)


def test_accepted_counts_never_push_a_key_beyond_the_bound(
    lb: LoadBalancer, redis: RedisServer
) -> None:
    """Twenty entries, each at the most one entry may claim, arrive in one exchange: 25 s
    of debt unbounded; the key is refused, then admitted again within the bound."""
    client = "127.0.0.22"
    most = most_per_entry(LIMIT, WINDOW_S)
    bound = most_debt(LIMIT, WINDOW_S)
    assert (most, bound) == (25, pytest.approx(1.5))
    fp = key_hash(LIMIT.name, client)
    for _ in range(20):
        publish(redis, entry([[LIMIT.name, fp, most, client]]), replica="busy-2.0")
    charged = time.monotonic()
    wait_for(lambda: status_from(lb, client) == 429, timeout=2)
    wait_for(lambda: status_from(lb, client) == 200, timeout=bound + 1.0, step=0.02)
    assert time.monotonic() - charged <= bound + 0.5  # 20 x 25 x 50 ms = 25 s unbounded


def test_forged_fingerprints_take_no_slot(lb: LoadBalancer, redis: RedisServer) -> None:
    """200 fingerprints that are not their key's hash (each claiming the most one entry
    may: 1.25 s of a slot), a fingerprint for a per-limit slot and one out of range. Taken,
    they would fill the 64-key table and a new client would share the overflow bucket;
    dropped, the new client is tracked."""
    before = cluster_of(lb)["dropped"]["fingerprint"]
    most = most_per_entry(LIMIT, WINDOW_S)
    forged = [[LIMIT.name, 1 + i * 7919, most, f"10.9.{i // 256}.{i % 256}"] for i in range(200)]
    forged += [[LIMIT.name, 0, 3, "a key"], [LIMIT.name, 1 << 60, 3, "big"]]
    untracked = limits_of(lb)["table"]["untracked_requests"]
    publish(redis, entry(forged))
    wait_for(
        lambda: cluster_of(lb)["dropped"]["fingerprint"] >= before + len(forged),
        timeout=5, step=0.02,
    )  # fmt: skip
    for source in ("127.0.0.23", "127.0.0.24", "127.0.0.26"):
        assert status_from(lb, source) == 200
    assert limits_of(lb)["table"]["untracked_requests"] == untracked


@pytest.mark.parametrize(
    ("payload", "kind"),
    [
        ("not json", "entry"),
        ("[1, 2, 3]", "entry"),
        (orjson.dumps({"c": {"default": [-5, 0]}, "d": {}, "k": []}), "count"),
        (orjson.dumps({"c": {"default": ["x", 0]}, "d": {}, "k": []}), "count"),
        (orjson.dumps({"c": {}, "d": {}, "k": [["default", 1, 1, "x" * 65]]}), "key"),
        (orjson.dumps({"c": {}, "d": {}, "k": [["default", "1", 1, "y"]]}), "fingerprint"),
        (
            orjson.dumps(
                {"c": {}, "d": {}, "k": [["default", key_hash("default", "y"), 1.5, "y"]]}
            ),
            "count",
        ),
    ],
)
def test_a_malformed_entry_is_dropped_and_counted(
    lb: LoadBalancer, redis: RedisServer, payload: bytes | str, kind: str
) -> None:
    before = cluster_of(lb)["dropped"][kind]
    publish(redis, payload)
    dropped_moves(lb, kind, before)
    assert status_from(lb, "127.0.0.25") == 200


def test_a_replica_in_the_future_is_not_counted_live(lb: LoadBalancer, redis: RedisServer) -> None:
    """A member whose last exchange is a year ahead would count as live for ever, and halve
    this replica's share the day Redis goes."""
    before = cluster_of(lb)["dropped"]["time"]
    redis.command("HSET", MEMBERS, "ghost-1.0", repr(time.time() + 365 * 86400))
    redis.command("HSET", MEMBERS, "nonsense-1.0", "soon")
    wait_for(lambda: cluster_of(lb)["dropped"]["time"] >= before + 2, timeout=5)
    assert cluster_of(lb)["replicas"] == 1
    lines = [line for line in lb.output if "dropped a value read from Redis (time" in line]
    assert len(lines) == 1  # one line a minute per kind, however many are dropped


# ---------------------------------------------------------------------- the cluster figures


@pytest.mark.parametrize(
    ("document", "reason"),
    [
        ([1, 2], "not an object"),
        ({"published_at": "soon", "figures": {}}, "not a time"),
        ({"published_at": time.time() + 365 * 86400, "figures": {}}, "in the future"),
        ({"published_at": time.time(), "figures": [1]}, "not an object"),
        (
            {
                "published_at": time.time(),
                "figures": {"rings": {"window": {"resolution_s": 0, "buckets": [[1, [0], [1]]]}}},
            },
            "resolution",
        ),
        ({"published_at": time.time()}, "no field 'figures'"),
    ],
)
def test_a_replicas_document_of_the_wrong_shape_is_skipped_with_its_reason(
    lb: LoadBalancer, redis: RedisServer, document: Any, reason: str
) -> None:
    """/stats still answers with this host's figures, and names the member it skipped."""
    member = f"bad-{reason.split()[0]}-1.0"

    def skipped() -> dict[str, Any] | None:
        # written again each time: the reaper deletes a document without a time
        redis.command("HSET", f"{NAME}:replicas", member, orjson.dumps(document).decode())
        entry = stats_of(lb)
        return entry if entry["cluster"].get("skipped_members") else None

    try:
        entry = wait_for(skipped, timeout=5).value
        assert entry["cluster"]["status"] == "ok" and entry["cluster"]["replicas"] == 1
        skipped = {s["id"]: s["reason"] for s in entry["cluster"]["skipped_members"]}
        assert reason in skipped[member], skipped
    finally:
        redis.command("HDEL", f"{NAME}:replicas", member)
