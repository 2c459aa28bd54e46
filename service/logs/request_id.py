"""Request ids: the client's ``X-Request-ID`` when it is sane, else one made here.

"Sane" is what a log line and a header can carry without escaping: 1 to 128 RFC 9110
token characters. Anything else (too long, spaces, quotes, control bytes, non-ASCII) is
replaced, not repaired: an id that cannot be trusted to be unique is still useful to the
client as a correlation key only if it comes back unchanged, and a mangled one would not.

Generated ids are a per-worker random prefix plus a counter: unique across workers and
restarts with overwhelming probability, and cheaper than a UUID per request.
"""

from __future__ import annotations

import itertools
import re
import secrets
from contextvars import ContextVar

HEADER = "X-Request-ID"
MAX_LENGTH = 128
_TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]{1," + str(MAX_LENGTH) + "}")

# The id of the request being handled in this task, for every log line about it.
current: ContextVar[str] = ContextVar("request_id", default="")


class RequestIds:
    """One per worker: ``for_request(header_value)`` -> the id this request goes by."""

    def __init__(self) -> None:
        self._prefix = secrets.token_hex(6)
        self._counter = itertools.count(1)

    def for_request(self, offered: str | None) -> str:
        if offered is not None and _TOKEN.fullmatch(offered):
            return offered
        return f"{self._prefix}-{next(self._counter):x}"


def is_sane(value: str) -> bool:
    return _TOKEN.fullmatch(value) is not None
