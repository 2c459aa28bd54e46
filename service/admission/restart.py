"""What of admission a reload cannot take while serving: its tables and counters are laid
out in the shared block at start-up, so its whole section, the ``[[limits]]`` and each
pool's ``MAX_REQUESTS`` stay as the host started with them (``service.reload.changes``); a
route a reload adds is covered by the limits the host started with (``Gate.replan``)."""

from __future__ import annotations

import dataclasses

from service.features import RestartOnly
from service.settings import Settings


def keep_as_started(new: Settings, started: Settings) -> tuple[Settings, list[str]]:
    """``new`` with the ``[[limits]]`` and each pool's ``max_requests`` as the host started
    with them (0 for a pool it did not start with: its counters are not in the block), and
    the variables of those that differ."""
    waiting = ["[[limits]]"] if new.limits != started.limits else []
    caps = {u.name: u.max_requests for u in started.upstreams}
    upstreams = []
    for upstream in new.upstreams:
        cap = caps.get(upstream.name, 0)
        if upstream.max_requests != cap:
            waiting.append(f"{upstream.url_env.removesuffix('_URL')}_MAX_REQUESTS")
        upstreams.append(dataclasses.replace(upstream, max_requests=cap))
    kept = dataclasses.replace(new, limits=started.limits, upstreams=tuple(upstreams))
    return kept, waiting


RESTART_ONLY = RestartOnly(sections=("admission",), keep=keep_as_started)
