"""Who the client is: the TCP peer, or, behind trusted proxies, the address they name.

With ``LB_TRUSTED_PROXIES`` empty (the default) the client is the TCP peer, whatever
``X-Forwarded-For`` says: the load balancer is the front door, so that header was written
by the client itself. When the peer is a trusted proxy, the client is the rightmost
``X-Forwarded-For`` address that is not itself trusted (nginx's ``real_ip_recursive on``):
each proxy appends the address it saw, so everything right of the first untrusted entry was
written by proxies we trust, and everything left of it by whoever that client is. Only the
entries walked are looked at: garbage a client puts at the left of the header cannot move
the answer. A malformed entry met on the walk (not an IP address) makes the answer the peer:
never a 500, and never an address we cannot vouch for. Nor is an address that no proxy can
have received a request from over the network (loopback, unspecified, link-local: see
:func:`believable`): a host in a trusted network writing ``X-Forwarded-For: 127.0.0.1``
would otherwise pass ``LB_ADMIN_ALLOW`` and pick its rate-limit key at will.

That address is what the access log shows, what upstreams get as ``X-Real-IP``, what rate
limits key on and what ``LB_ADMIN_ALLOW`` checks: :func:`client_address`, computed once per
request and kept on ``request.ctx``. Admission control keys an IPv6 client by its network
(``LB_IPV6_CLIENT_PREFIX``, /64 by default: one host is usually given a whole /64, so its
/128s would be 2^64 separate budgets): :meth:`ClientAddresses.key_of`.
"""

from __future__ import annotations

from collections.abc import Iterable
from ipaddress import IPv4Address, IPv4Network, IPv6Address, IPv6Network, ip_address, ip_network

from sanic import Request

Network = IPv4Network | IPv6Network
Address = IPv4Address | IPv6Address
_CACHE_SIZE = 1024  # peers judged per worker, kept so a proxy's address is parsed once


def believable(address: Address, peer: Address | None = None) -> bool:
    """Whether ``address``, named by ``peer`` (a trusted proxy, in a PROXY protocol header or
    ``X-Forwarded-For``), can be the client. Never an unspecified address (``0.0.0.0``,
    ``::``: no packet comes from it). A loopback or link-local address only when ``peer``
    is one of the same kind: such an address does not cross a router, so it can come only
    from a proxy on this host (or link); from anywhere else it is a forgery, or a
    misconfigured balancer, and believing it would let a remote client be "127.0.0.1" to
    ``LB_ADMIN_ALLOW`` (whose default is loopback). ``peer`` None: never."""
    if address.is_unspecified:
        return False
    if address.is_loopback:
        return peer is not None and peer.is_loopback
    if address.is_link_local:
        return peer is not None and peer.is_link_local
    return True


def parse_address(text: str) -> Address | None:
    """An address as written in ``X-Forwarded-For`` or by the socket (``[v6]`` brackets, a
    port after a v4 address or a bracketed v6 one, and a zone allowed; an IPv4-mapped IPv6
    address is its IPv4 address); None if it is not one."""
    text = text.strip()
    if text.startswith("["):  # [v6] or [v6]:port
        text = text[1 : text.find("]")] if "]" in text else ""
    elif text.count(":") == 1:  # v4:port, as some proxies write it
        text = text.partition(":")[0]
    try:
        address = ip_address(text.split("%", 1)[0])
    except ValueError:
        return None
    if isinstance(address, IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


class ClientAddresses:
    """The resolver for one worker: the trusted networks, which peers it has judged, and
    how wide an IPv6 client's admission key is (``ipv6_prefix`` bits)."""

    def __init__(self, trusted: Iterable[Network], ipv6_prefix: int = 64) -> None:
        self.trusted = tuple(trusted)
        self.ipv6_prefix = ipv6_prefix
        self._peers: dict[str, bool] = {}
        self._keys: dict[str, str] = {}  # IPv6 client -> its admission key

    def _trusted(self, address: Address) -> bool:
        return any(address in network for network in self.trusted)

    def _peer_trusted(self, peer: str) -> bool:
        known = self._peers.get(peer)
        if known is None:
            address = parse_address(peer)
            known = address is not None and self._trusted(address)
            if len(self._peers) >= _CACHE_SIZE:
                self._peers.clear()
            self._peers[peer] = known
        return known

    def trusts(self, peer: str) -> bool:
        """Whether the TCP peer ``peer`` (as the socket gives it) is a trusted proxy."""
        return bool(self.trusted) and self._peer_trusted(peer)

    def resolve(self, peer: str, forwarded_for: list[str]) -> str:
        """The client of a request from ``peer`` carrying these ``X-Forwarded-For`` values."""
        if not self.trusted or not forwarded_for or not self._peer_trusted(peer):
            return peer
        entries = ",".join(forwarded_for).split(",")
        client: Address | None = None
        for entry in reversed(entries):
            address = parse_address(entry)
            if address is None or not believable(address):
                return peer  # malformed or impossible where we had to read it: the peer
            client = address
            if not self._trusted(address):
                break
        # every entry trusted: the leftmost is the client (nginx does the same)
        return str(client) if client is not None else peer

    def of(self, request: Request) -> str:
        """The client of ``request``, computed once and kept on ``request.ctx``."""
        ctx = request.ctx
        known: str | None = getattr(ctx, "client_address", None)
        if known is None:
            if self.trusted:
                known = self.resolve(request.ip, request.headers.getall("x-forwarded-for", []))
            else:
                known = request.ip
            ctx.client_address = known
        return known

    def trusts_peer(self, request: Request) -> bool:
        """Whether the TCP peer of ``request`` is a trusted proxy (its forwarding headers
        are kept and extended rather than replaced, ``service.proxying.headers``)."""
        return bool(self.trusted) and self._peer_trusted(request.ip)

    def key_of(self, request: Request) -> str:
        """What admission control counts ``request``'s client as: its address, or for an
        IPv6 client its ``/ipv6_prefix`` network (``2001:db8:1:2::/64``)."""
        client = self.of(request) if self.trusted else request.ip
        if ":" not in client:  # IPv4, the common case: the address itself
            return client
        key = self._keys.get(client)
        if key is None:
            key = self._network_of(client)
            if len(self._keys) >= _CACHE_SIZE:
                self._keys.clear()
            self._keys[client] = key
        return key

    def _network_of(self, client: str) -> str:
        address = parse_address(client)
        if address is None:
            return client
        if address.version == 4 or self.ipv6_prefix == 128:
            return str(address)
        return str(ip_network(f"{address}/{self.ipv6_prefix}", strict=False))


def client_address(request: Request) -> str:
    """The real client of ``request`` (see the module docstring)."""
    return request.app.ctx.lb.client_addresses.of(request)
