"""The strict check of a request head and of a chunk-size line, before Sanic parses them.

Sanic's parser is lenient where leniency lets a proxy and its upstream disagree about where
a request ends (request smuggling): it keeps a header name with whitespace before the colon
(``Transfer-Encoding : chunked`` is then not framing to Sanic but may be to an upstream that
trims names), forwards NUL and bare CR in values, and reads chunk sizes with ``int(x, 16)``,
which accepts ``0x0``. This module states the grammar the front door accepts; anything else
is refused with 400 before a byte is forwarded. It only reads bytes: no I/O, no state.
"""

from __future__ import annotations

import re

# RFC 9110 §5.6.2: token = 1*tchar
_TCHAR = rb"!#$%&'*+\-.^_`|~0-9A-Za-z"
_TOKEN = re.compile(rb"[" + _TCHAR + rb"]+")
# RFC 9112 §3: request-line = method SP request-target SP HTTP-version; the target is
# visible ASCII only (RFC 3986 characters; no controls, no spaces, no obs-text).
_REQUEST_LINE = rb"([" + _TCHAR + rb"]+) [\x21-\x7e]+ (HTTP/1\.[01])"
# RFC 9112 §5.1: field-line = field-name ":" OWS field-value OWS, no whitespace between the
# name and the colon ("MUST respond with 400"). RFC 9110 §5.5: a value holds no NUL, CR or
# LF; other controls but HTAB are not field-vchar either. obs-text (0x80-0xFF) is field-vchar
# ("a recipient SHOULD treat [it] as opaque data"): the proxy forwards field values as the
# bytes that came, so it passes. A line starting with whitespace (obs-fold, §5.2) does not
# start with a token, so it is refused.
_FIELD_LINE = rb"\r\n[" + _TCHAR + rb"]+:[\t\x20-\x7e\x80-\xff]*"
# The whole head in one match (no bare CR or LF can hide anywhere: values exclude both)...
_HEAD = re.compile(_REQUEST_LINE + rb"(?:" + _FIELD_LINE + rb")*")
# ...then only the fields that decide the framing, found by name (case-insensitively).
_FRAMING_FIELD = re.compile(
    rb"\r\n(host|content-length|transfer-encoding):[ \t]*([\t\x20-\x7e]*)", re.IGNORECASE
)
_DIGITS = re.compile(rb"[0-9]+")
# RFC 9112 §7.1: chunk = chunk-size [ chunk-ext ] CRLF; chunk-size = 1*HEXDIG (no "0x", no
# sign, no spaces); §7.1.1: chunk-ext = *( BWS ";" BWS name [ BWS "=" BWS token/quoted ) ].
# The line is checked with the CRLF that ends the previous chunk's data (or the head), so a
# chunk whose data is longer than its size is refused too.
_QUOTED = rb'"(?:[\t !#-\[\]-~\x80-\xff]|\\[\t -~\x80-\xff])*"'
_EXT_VALUE = rb"(?:[" + _TCHAR + rb"]+|" + _QUOTED + rb")"
_CHUNK_EXT = rb"(?:[ \t]*;[ \t]*[" + _TCHAR + rb"]+(?:[ \t]*=[ \t]*" + _EXT_VALUE + rb")?)*"
CHUNK_LINE = re.compile(rb"\r\n[0-9A-Fa-f]{1,16}" + _CHUNK_EXT + rb"\r\n")
# RFC 9112 §2.2: a bare CR (not followed by LF) anywhere in the head is invalid; a bare LF
# would be a line ending to some parsers and not to others.
_BARE_CR_OR_LF = re.compile(rb"\r(?!\n)|(?<!\r)\n")


# A field name holding "_" (names are tokens, which hold no ":", once check_head passed).
_UNDERSCORED_NAME = re.compile(rb"\r\n[" + _TCHAR.replace(b"_", b"") + rb"]*_")


def underscored_names(head: bytes | bytearray) -> int:
    """How many header fields of a checked ``head`` have a name holding ``_``
    (``Transfer_Encoding``): upstreams that map ``-`` and ``_`` to one name (CGI, WSGI) would
    read them as the header they imitate. One scan for ``_``, the names only when there is
    one (usually there is none, or it is in the path or a cookie)."""
    if b"_" not in head:
        return 0
    return len(_UNDERSCORED_NAME.findall(head))


class HeadError(ValueError):
    """A request head the front door refuses; the message is the 400's detail."""


def has_bare_line_break(received: bytes | bytearray, start: int = 0) -> bool:
    """True if a head still arriving already holds a bare CR or LF at or after ``start``,
    so it is refused at once rather than at the deadline (a client using bare LFs never
    sends CRLFCRLF). A CR that is the last byte received may be the first half of a CRLF
    still in flight."""
    match = _BARE_CR_OR_LF.search(received, start)
    if match is None:
        return False
    return not (match.start() == len(received) - 1 and received.endswith(b"\r"))


def check_head(head: bytes | bytearray) -> None:
    """Raise :class:`HeadError` unless ``head`` (the bytes before the blank line) is a
    well-formed HTTP/1.x request head whose body framing is unambiguous."""
    match = _HEAD.fullmatch(head)
    if match is None:
        raise HeadError(_what_is_malformed(bytes(head)))
    version = match.group(2)
    hosts = 0
    lengths: list[bytes] = []
    encodings: list[bytes] = []
    for field in _FRAMING_FIELD.finditer(head):
        name = field.group(1).lower()
        if name == b"host":
            hosts += 1
        elif name == b"content-length":
            lengths.append(field.group(2).rstrip(b" \t"))
        else:
            encodings.append(field.group(2).rstrip(b" \t"))
    # RFC 9112 §3.2: exactly one Host in HTTP/1.1, at most one in HTTP/1.0.
    if hosts > 1 or (hosts == 0 and version == b"HTTP/1.1"):
        raise HeadError("a request needs exactly one Host header")
    _check_framing(lengths, encodings, version)


def _what_is_malformed(head: bytes) -> str:
    """The 400's detail for a head that did not match (only on the refusal path)."""
    if _BARE_CR_OR_LF.search(head):
        return "bare CR or LF in the request head"
    request_line, _, _ = head.partition(b"\r\n")
    if re.fullmatch(_REQUEST_LINE, request_line) is None:
        return "malformed request line"
    return "malformed header field"


def _check_framing(lengths: list[bytes], encodings: list[bytes], version: bytes) -> None:
    """RFC 9112 §6.1-6.3: one way to find the end of the body, and only one."""
    if lengths and encodings:
        raise HeadError("both Content-Length and Transfer-Encoding")
    if len(lengths) > 1 or len(encodings) > 1:
        raise HeadError("repeated Content-Length or Transfer-Encoding")
    if lengths and _DIGITS.fullmatch(lengths[0]) is None:
        raise HeadError("Content-Length is not a number")
    if encodings:
        if version == b"HTTP/1.0":
            raise HeadError("Transfer-Encoding in an HTTP/1.0 request")
        # Only "chunked" is accepted (the proxy forwards, it does not decode gzip etc.).
        if encodings[0].lower() != b"chunked":
            raise HeadError("unsupported Transfer-Encoding")
