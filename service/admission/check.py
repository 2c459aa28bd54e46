"""``python -m service --check``'s part for admission control: who the client is taken to
be, the limits and the caps."""

from __future__ import annotations

from service.features import CheckLines
from service.settings import Settings

ORDER = 10  # after the pools, before discovery's lookups


def check_lines(settings: Settings) -> CheckLines:
    return CheckLines(lines=tuple(admission_lines(settings)), order=ORDER)


def admission_lines(settings: Settings) -> list[str]:
    """Admission control as ``--check`` prints it: the client address, limits and caps."""
    admission = settings.admission
    trusted = ", ".join(map(str, admission.trusted_proxies)) or "none: the TCP peer is the client"
    lines = [
        f"admission: trusted proxies {trusted}; an IPv6 client counts as its "
        f"/{admission.ipv6_client_prefix}"
    ]
    limits = ([admission.rate_limit] if admission.rate_limit else []) + list(settings.limits)
    for spec in limits:
        where = ", ".join(spec.routes) or "every proxied route"
        extra = "".join(
            [
                f", methods {','.join(spec.methods)}" if spec.methods else "",
                f", path {spec.path_prefix}" if spec.path_prefix else "",
                " (dry run)" if spec.dry_run else "",
            ]
        )
        lines.append(
            f"  limit {spec.name}: {spec.rate_text} burst {spec.burst} per {spec.per} on "
            f"{where}{extra}"
        )
    caps = [f"{u.name} {u.max_requests}" for u in settings.upstreams if u.max_requests]
    if caps:
        lines.append(f"  max_requests in flight: {', '.join(caps)}")
    if admission.max_client_requests:
        lines.append(f"  per client in flight: {admission.max_client_requests}")
    return lines
