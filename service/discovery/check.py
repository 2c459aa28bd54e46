"""``python -m service --check``'s part for ``;resolve`` entries: each name looked up once,
and what was found printed. A lookup that fails here is a warning, not an error: DNS where
the check runs (a laptop, a CI job) may well differ from DNS where the service runs."""

from __future__ import annotations

import asyncio

from service.discovery.entries import entries_of
from service.discovery.resolver import NO_ADDRESS, OK, Lookup, Resolver
from service.features import CheckLines
from service.settings import Settings

ORDER = 20  # last: after admission's lines


def check_lines(settings: Settings) -> CheckLines:
    return CheckLines(lines=tuple(check_names(settings).splitlines()), order=ORDER)


def check_names(settings: Settings) -> str:
    """The lines ``--check`` prints for discovery ("" when there is no ``resolve`` entry)."""
    entries = entries_of(settings)
    if not entries:
        return ""
    resolver = Resolver(settings.resolver)
    names = sorted({entry.host for entry in entries})

    async def look_up() -> list[Lookup]:
        return await asyncio.gather(*(resolver.lookup(name) for name in names))

    found = dict(zip(names, asyncio.run(look_up()), strict=True))
    servers = ", ".join(resolver.servers) or "none"
    lines = [f"discovery (each name looked up once from here, DNS servers {servers}):"]
    limit = settings.resolver.max_targets
    for entry in entries:
        lookup = found[entry.host]
        label = f"{entry.pool}: {entry.url};resolve"
        if lookup.result == OK:
            targets = [entry.target_url(a) for a in lookup.addresses[:limit]]
            cut = f" (cut from {len(lookup.addresses)})" if len(lookup.addresses) > limit else ""
            lines.append(f"  {label} -> {', '.join(targets)}{cut}; ttl {lookup.ttl:g} s")
        elif lookup.result in NO_ADDRESS:
            lines.append(
                f"  warning: {label}: {entry.host} has no address ({lookup.result.upper()}); "
                "the pool gets no target from it until it has"
            )
        else:
            lines.append(
                f"  warning: {label}: lookup failed ({lookup.detail or lookup.result}); "
                "DNS may differ where the service runs"
            )
    return "\n".join(lines) + "\n"
