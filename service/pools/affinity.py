"""What keeps a client on one target: the key of a request, and the sticky cookie's ids.

The proxy reads a request's :class:`Affinity` (``service.proxying.affinity``) only for a pool
that hashes or has a sticky cookie (``Pool.keyed``); the pool then chooses with it
(``Pool.choose``). Both are exact across workers and replicas because nothing here depends
on the process: the ring is built from the targets' URLs (``service.pools.hashring``), and a
target's cookie id is :func:`sticky_id`, a truncated SHA-256 of the pool's name and the
target's URL. The id does not reveal the address (nobody can invert the hash short of
guessing every address and port), and it is the same everywhere, for as long as the
target is: a cookie set by one worker or replica is honoured by every other.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

ID_CHARS = 16  # 64 bits of the hash, in hex: no collision within a pool in practice


@dataclass(frozen=True, slots=True)
class Affinity:
    """A request's ``key`` for a hashing pool (None: it has none, so it is balanced as
    usual) and the value of its sticky cookie (None: it carries none)."""

    key: str | None = None
    sticky: str | None = None


@dataclass(frozen=True, slots=True)
class HashOn:
    """``HASH_ON`` parsed once: ``kind`` is ``client``, ``header`` or ``cookie``."""

    kind: str
    name: str = ""

    @classmethod
    def parse(cls, text: str) -> HashOn:
        kind, _, name = text.partition(":")
        return cls(kind, name.lower() if kind == "header" else name)


def sticky_id(pool: str, url: str) -> str:
    """A target's cookie value: opaque, stable, the same in every process."""
    return hashlib.sha256(f"{pool}\n{url}".encode()).hexdigest()[:ID_CHARS]


def set_cookie(name: str, value: str) -> tuple[bytes, bytes]:
    """The ``Set-Cookie`` field naming a target, made once per target (``+ b"; Secure"``
    over TLS): the answers of a client without the cookie each carry it."""
    return b"Set-Cookie", f"{name}={value}; Path=/; HttpOnly; SameSite=Lax".encode("ascii")
