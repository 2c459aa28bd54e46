"""Where admission keeps its state: its regions of the shared block, reserved at build time.

Shared by the host (one copy, read and written by every worker under the host lock, the
region's :class:`~service.sharedmem.SharedLock`, taken for :data:`LOCK_WAIT_S` at most):

- the **rate table**: one fixed slot per limit (the whole budget of a ``per = "all"`` limit,
  or the *overflow bucket* of a keyed one), then ``LB_LIMIT_KEYS`` hashed slots, each the
  state of one key of one limit (:data:`SLOT` doubles: its fingerprint, its GCRA
  theoretical arrival time, its limited episode, its key's first 64 bytes for ``/stats``
  and the logs);
- the **client table** (only with ``LB_MAX_CLIENT_REQUESTS``): per client, its requests in
  flight, one column per worker row, so that a dead worker's requests can be forgotten;
- the list of slots in a limited episode (for the stop line and ``/stats``' top keys), the
  list of slots with admissions not yet shared with other replicas, the cluster's state
  and the other replicas' figures.

Per worker (in its row, written by that worker alone, summed by readers): per limit its
admitted and limited requests (lifetime, and a 10 s window of 1 s buckets), per pool its
requests in flight and its overloaded ones, and a 15-minute history of limited and
overloaded requests for the status page's chart.

Memory is fixed at start-up whatever the traffic: 128 bytes a key (2 MiB for the default
16,384 keys), and nothing at all when no admission feature is configured.
"""

from __future__ import annotations

from service.sharedmem import LEASE_WIDTH, MAX_WORKER_ROWS, Plan, TimeRing

# ---- a rate-table slot
FP, LIMIT, TAT, UNSYNCED, LIMITED_SINCE, LAST_LIMITED, EPISODE, KEY_LEN = range(8)
KEY_AT = 8  # then the key's first KEY_BYTES bytes
KEY_BYTES = 64
SLOT = KEY_AT + KEY_BYTES // 8
NEIGHBOURHOOD = 8  # slots a key may live in: its bucket and the 7 after it

# ---- a client-table slot: fingerprint, key, then requests in flight per worker row
C_FP, C_KEY_LEN = range(2)
C_KEY_AT = 2
C_COUNTS = C_KEY_AT + KEY_BYTES // 8
CLIENT_SLOT = C_COUNTS + MAX_WORKER_ROWS

# ---- the host's state (written by the worker holding the housekeeping lease)
MODE, FACTOR, REPLICAS, SYNCED_AT, STREAM_MS, STREAM_SEQ, SHARED_KEYS, UNSHARED_KEYS = range(8)
IN_USE, IN_USE_AT = 8, 9  # keys whose state has not decayed, as last counted, and when (wall)
REASON_LEN = 10  # then REASON_BYTES bytes from REASON_AT: why the cluster is degraded
REASON_AT = 11
REASON_BYTES = 120
CLUSTER_WIDTH = REASON_AT + REASON_BYTES // 8
MODE_OFF, MODE_STARTING, MODE_OK, MODE_DEGRADED = 0.0, 1.0, 2.0, 3.0

# The host lock is held for a few microseconds (one decision, no I/O, no ``await``), and a
# dead holder's is taken back at once; a caller that cannot have it within this long (a live
# holder stopped) goes on without it (fails open) and the miss is counted: a limit that is
# briefly inexact beats a proxy that stalls.
LOCK_WAIT_S = 0.05
LOCK_NAME = "admission host"

LIMITED_CAP = 256  # keys in a limited episode at once that are listed (and logged)
DIRTY_CAP = 4096  # slots with unshared admissions listed between two publications
DROPPED_KINDS = 5  # entry, count, fingerprint, key, time (``remote.KINDS``)

# ---- per worker: per limit (and the pseudo-limit of LB_MAX_CLIENT_REQUESTS, last)
ADMITTED, LIMITED = range(2)
PER_LIMIT = 2
# per pool
IN_FLIGHT, OVERLOADED = range(2)
PER_POOL = 2
# the history's values: limited (enforced), would-be limited (dry run), overloaded
H_LIMITED, H_DRY, H_OVERLOADED = range(3)
HISTORY = TimeRing(resolution_s=5.0, in_window=181, slots=184, values=3)
WINDOW_S = 10.0


def window_ring(values: int) -> TimeRing:
    """1 s buckets: the 10 s window of admitted and limited requests."""
    return TimeRing(resolution_s=1.0, in_window=10, slots=12, values=values)


class AdmissionLayout:
    """The regions of the block for ``limits`` limits, ``pools`` pools and ``keys`` hashed
    slots; the client table only if ``client_slots``, the sharing lists only if
    ``cluster``."""

    def __init__(
        self, plan: Plan, *, limits: int, pools: int, keys: int, client_slots: int, cluster: bool
    ) -> None:
        self.limits, self.pools, self.keys = limits, pools, keys
        self.client_slots, self.cluster = client_slots, cluster
        self.rows = plan.rows
        counted = limits + 1  # and LB_MAX_CLIENT_REQUESTS' refusals
        self.window = window_ring(PER_LIMIT * counted)
        self.remote_window = window_ring(PER_LIMIT * max(limits, 1))
        # shared
        self.lock = plan.lock(LOCK_NAME)
        self.lease = plan.shared(LEASE_WIDTH)
        self.state = plan.shared(CLUSTER_WIDTH)
        # the other replicas' lifetime counts per limit, then this host's as last published,
        # then the others' 10 s window
        self.remote = plan.shared(2 * PER_LIMIT * max(limits, 1) + self.remote_window.size)
        self.published_at = self.remote.at + PER_LIMIT * max(limits, 1)
        self.remote_window_at = self.remote.at + 2 * PER_LIMIT * max(limits, 1)
        self.limited_list = plan.shared(LIMITED_CAP)
        # values read from Redis and dropped, by kind (``remote.KINDS``)
        self.dropped = plan.shared(DROPPED_KINDS if cluster else 0)
        self.dirty = plan.shared(2 + DIRTY_CAP if cluster else 0)  # count, overflowed, slots
        self.slots = plan.shared((limits + keys) * SLOT)
        self.clients = plan.shared(client_slots * CLIENT_SLOT)
        # per worker
        self.counters = plan.per_worker(PER_LIMIT * counted)
        self.window_at = plan.per_worker(self.window.size)
        self.pool_counters = plan.per_worker(PER_POOL * pools)
        self.history = plan.per_worker(HISTORY.size)
        self.misc = plan.per_worker(2)  # requests through an overflow bucket, lock timeouts

    def slot_at(self, index: int) -> int:
        """The offset of rate-table slot ``index`` (fixed slots first, then hashed)."""
        return self.slots.at + index * SLOT

    def slot_index(self, at: int) -> int:
        return (at - self.slots.at) // SLOT
