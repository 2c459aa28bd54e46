"""The ``resolve`` entries of the settings, each with its place in the shared block.

An entry is one ``url;resolve`` item of an upstream's target list: a host name, a scheme and
port for the addresses it resolves to, a weight, and its position in the list (its targets
sort there among the pool's). Every process numbers the entries the same way, from the same
settings, so ``number`` is also the entry's record in the block (``state.DiscoveryState``).
"""

from __future__ import annotations

from dataclasses import dataclass
from ipaddress import IPv4Address, IPv6Address
from urllib.parse import urlsplit

from service.pools import ORDER_STEP, Member
from service.settings import Settings


@dataclass(frozen=True, slots=True)
class Entry:
    number: int  # across every upstream: the entry's record in the shared block
    pool: str
    position: int  # in the upstream's target list
    url: str  # as configured: scheme://name[:port]
    host: str
    weight: int

    def target_url(self, address: IPv4Address | IPv6Address) -> str:
        """The target URL for one of the name's addresses: same scheme and port."""
        parts = urlsplit(self.url)
        host = f"[{address}]" if address.version == 6 else str(address)
        return f"{parts.scheme}://{host}" + (f":{parts.port}" if parts.port else "")

    def order(self, rank: int) -> float:
        """Where its ``rank``-th address sorts in the pool (``Member.order``)."""
        return float(self.position * ORDER_STEP + rank)

    def owns(self, member: Member) -> bool:
        """Whether a pool member came from this entry (its name, scheme and port)."""
        if member.origin != self.host:
            return False
        mine, theirs = urlsplit(self.url), urlsplit(member.url)
        return (mine.scheme, mine.port) == (theirs.scheme, theirs.port)


def entries_of(settings: Settings) -> tuple[Entry, ...]:
    found: list[Entry] = []
    for upstream in settings.upstreams:
        for position, spec in enumerate(upstream.targets):
            if spec.resolve:
                found.append(
                    Entry(len(found), upstream.name, position, spec.url, spec.host, spec.weight)
                )
    return tuple(found)
