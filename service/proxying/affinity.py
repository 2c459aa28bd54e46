"""A request's affinity for its pool (``service.pools.affinity``): what the pool hashes on,
the sticky cookie it carries, and the cookie to set when the answer came from another target.

Read only for a pool that hashes or has a sticky cookie (``Pool.keyed``): for every other
pool the proxy does not call in here at all.
"""

from __future__ import annotations

from sanic import Request

from service.frontdoor.client import client_address
from service.pools import Affinity, Pool, Target


def affinity_of(request: Request, pool: Pool) -> Affinity:
    """The key ``HASH_ON`` names (the client address as admission control sees it, a header
    or a cookie; None when absent or empty) and the sticky cookie's value (None: none)."""
    key = None
    hash_on = pool.hash_on
    if hash_on is not None:
        if hash_on.kind == "client":
            key = client_address(request)
        elif hash_on.kind == "header":
            key = request.headers.get(hash_on.name)
        else:
            key = request.cookies.get(hash_on.name)
    sticky = None
    if pool.sticky_cookie and "cookie" in request.headers:  # parsed only when there is one
        sticky = request.cookies.get(pool.sticky_cookie)
    return Affinity(key or None, sticky or None)


def sticky_field(
    request: Request, target: Target, affinity: Affinity
) -> tuple[bytes, bytes] | None:
    """``Set-Cookie`` naming ``target`` when the request's cookie did not (absent, tampered,
    unknown, or naming a target that left rotation); None when it did."""
    if affinity.sticky == target.sticky_id:
        return None
    if request.conn_info is not None and request.conn_info.ssl:
        name, value = target.sticky_field
        return name, value + b"; Secure"
    return target.sticky_field
