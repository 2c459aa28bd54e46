"""A key's limited episode in the logs: one line when it starts (by the worker that limited
it) and one when it ends (by the housekeeping worker), never one per request."""

from __future__ import annotations

import logging

from service.admission.policy import Limit

log = logging.getLogger("service.admission")


def describe_key(limit: Limit, label: str) -> str:
    if limit.per_all or label.startswith("untracked") or label.startswith("client "):
        return label
    return f"{limit.spec.per.partition(':')[2] or 'client'} {label}"


def log_start(limit: Limit, label: str) -> None:
    if limit.dry_run:
        log.warning(
            "limit %s (dry run): %s would be limited from now (over %s, burst %d); served "
            "anyway", limit.name, describe_key(limit, label), limit.spec.rate_text, limit.burst,
        )  # fmt: skip
    else:
        log.warning(
            "limit %s: %s is being limited (over %s, burst %d): 429 until it slows down",
            limit.name, describe_key(limit, label), limit.spec.rate_text, limit.burst,
        )  # fmt: skip
