"""One DNS lookup of a name, A and AAAA together, on dnspython's asyncio resolver.

The answer is one of three kinds, because they call for different actions:

- **addresses** (``ok``): the name's A and AAAA records, and the lowest TTL among them;
- **no address** (``nxdomain``, ``nodata``): the name does not exist or has no address
  record. That is an answer (a headless Service with no ready pod gives it), and the entry
  then has no target;
- **failure** (``timeout``, ``servfail``, ``refused``, ``no_servers``, ``error``): no answer
  at all; the caller keeps the last good set.

dnspython is imported when a :class:`Resolver` is made (a ``resolve`` entry is configured, or
``--check`` asks), not with this module: a default configuration never looks a name up, and
its processes would otherwise each hold the package (about 4.5 MiB, 100 modules) for nothing.

``search``/``ndots`` come from /etc/resolv.conf (as the system resolver would use them, so a
Kubernetes short name such as ``blog-service-headless`` finds its namespace); ``LB_RESOLVER``
replaces only its name servers.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv6Address, ip_address
from typing import TYPE_CHECKING

from service.settings import ResolverSettings
from service.settings.loading import resolver_address

if TYPE_CHECKING:
    import dns.resolver

OK, NXDOMAIN, NODATA = "ok", "nxdomain", "nodata"
TIMEOUT, SERVFAIL, REFUSED, NO_SERVERS, ERROR = (
    "timeout",
    "servfail",
    "refused",
    "no_servers",
    "error",
)
RESULTS = (OK, NXDOMAIN, NODATA, TIMEOUT, SERVFAIL, REFUSED, NO_SERVERS, ERROR)
NO_ADDRESS = frozenset({NXDOMAIN, NODATA})

Address = IPv4Address | IPv6Address


@dataclass(frozen=True, slots=True)
class Lookup:
    """What one lookup found: ``result`` (one of :data:`RESULTS`), the addresses sorted (v4
    first), the lowest record TTL (None when there was no record), and a short reason."""

    result: str
    addresses: tuple[Address, ...] = ()
    ttl: float | None = None
    detail: str = ""

    @property
    def answered(self) -> bool:
        """An answer to act on: addresses, or the news that there are none."""
        return self.result == OK or self.result in NO_ADDRESS


class Resolver:
    """``await resolver.lookup(name)`` -> :class:`Lookup`; never raises for DNS trouble."""

    def __init__(self, settings: ResolverSettings) -> None:
        import dns.asyncresolver  # here, not at the top: see the module's docstring
        import dns.nameserver
        import dns.resolver

        try:
            resolver = dns.asyncresolver.Resolver(configure=True)
        except dns.resolver.NoResolverConfiguration:
            resolver = dns.asyncresolver.Resolver(configure=False)
        if settings.servers:
            resolver.nameservers = [
                dns.nameserver.Do53Nameserver(ip, port)
                for ip, port in map(resolver_address, settings.servers)
            ]
        resolver.timeout = settings.timeout
        resolver.lifetime = settings.timeout
        resolver.cache = None  # the refresher keeps the answer; a second cache would hide TTLs
        self._resolver = resolver

    @property
    def servers(self) -> list[str]:
        """The servers asked, as ``ip:port`` (``[v6]:port``)."""
        import dns.nameserver  # imported already by __init__

        shown = []
        for server in self._resolver.nameservers:
            if isinstance(server, dns.nameserver.Do53Nameserver):
                ip, port = server.address, server.port
            else:  # a plain address string (older dnspython)
                ip, port = str(server), self._resolver.port
            shown.append(f"[{ip}]:{port}" if ":" in ip else f"{ip}:{port}")
        return shown

    async def lookup(self, name: str) -> Lookup:
        if not self._resolver.nameservers:
            return Lookup(NO_SERVERS, detail="no DNS server configured (LB_RESOLVER, resolv.conf)")
        a, aaaa = await asyncio.gather(self._query(name, "A"), self._query(name, "AAAA"))
        for part in (a, aaaa):
            if not part.answered:
                return part  # a failure of either: the set is not known
        addresses = sorted({*a.addresses, *aaaa.addresses}, key=_address_order)
        if addresses:
            ttls = [t for t in (a.ttl, aaaa.ttl) if t is not None]
            return Lookup(OK, tuple(addresses), min(ttls) if ttls else None)
        kind = NXDOMAIN if NXDOMAIN in (a.result, aaaa.result) else NODATA
        return Lookup(
            kind, detail=f"{name} {'does not exist' if kind == NXDOMAIN else 'has no address'}"
        )

    async def _query(self, name: str, kind: str) -> Lookup:
        import dns.exception  # imported already by __init__
        import dns.resolver

        try:
            answer = await self._resolver.resolve(name, kind, search=True, raise_on_no_answer=False)
        except dns.resolver.NXDOMAIN:
            return Lookup(NXDOMAIN)
        except dns.exception.Timeout:
            return Lookup(
                TIMEOUT, detail=f"timeout: no answer within {self._resolver.lifetime:g} s"
            )
        except dns.resolver.NoNameservers as exc:
            return _server_failure(exc)
        except (dns.exception.DNSException, OSError) as exc:
            return Lookup(ERROR, detail=f"{type(exc).__name__}: {exc}")
        if answer.rrset is None:
            return Lookup(NODATA)
        addresses = tuple(ip_address(record.address) for record in answer.rrset)
        return Lookup(OK, addresses, float(answer.rrset.ttl))


def _server_failure(exc: dns.resolver.NoNameservers) -> Lookup:
    """Every server failed: by the rcode they answered with (SERVFAIL, REFUSED), if any."""
    errors = exc.kwargs.get("errors") or []
    text = " ".join(str(error) for error in errors) + " " + str(exc)
    if "REFUSED" in text:
        return Lookup(REFUSED, detail="refused by the DNS server")
    if "SERVFAIL" in text:
        return Lookup(SERVFAIL, detail="SERVFAIL from the DNS server")
    return Lookup(ERROR, detail=str(exc))


def _address_order(address: Address) -> tuple[int, int]:
    return address.version, int(address)
