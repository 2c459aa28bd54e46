"""Header fields out of a head's bytes, split in C (one regex and ``map``), not field by field.

For a head that a strict parser has already accepted (the front door's ``check_head`` for
requests, llhttp for responses): every field line is a name, a colon and a value without CR
or LF, so the name is what precedes the first colon, and the value is what follows without
the optional whitespace around it (RFC 9112 §5.1), as Sanic and llhttp split them too.
"""

from __future__ import annotations

import operator
import re

# a field line: "\r\n" name ":" value with its OWS, up to the next CRLF or the end of the head
# (greedy, no backtracking: the OWS is stripped after, by map)
_FIELD = re.compile(rb"\r\n([^:\r\n]*):([^\r\n]*)")
_FIRST, _SECOND = operator.itemgetter(0), operator.itemgetter(1)
_STRIP_OWS = operator.methodcaller("strip", b" \t")


def split_fields(head: bytes) -> tuple[list[bytes], list[bytes], list[bytes]]:
    """The names (as sent), lower-case names and values of ``head``'s fields, in order;
    ``head`` starts with its start line and ends before the blank line."""
    pairs = _FIELD.findall(head)
    names = list(map(_FIRST, pairs))
    return names, list(map(bytes.lower, names)), list(map(_STRIP_OWS, map(_SECOND, pairs)))
