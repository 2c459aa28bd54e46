"""The PROXY protocol header, v1 and v2, parsed strictly: the one place that knows its format.

HAProxy's specification ("The PROXY protocol, Versions 1 & 2", haproxy.org's
``doc/proxy-protocol.txt``; the sections cited below are its) is how a TCP balancer (AWS NLB,
GCP, Azure, HAProxy's ``send-proxy``, nginx's ``proxy_protocol on``) tells the server behind
it who connected: it writes one header first on the connection, then the client's bytes.

Two questions, both on bytes only (no I/O, no state):

- :func:`missing`: how many more bytes the header needs *at least*. The reader
  (``service.frontdoor.proxy_protocol``) never asks the socket for more than that, so it
  never reads past the header's end: behind the header come the client's own bytes, and
  with TLS those are the handshake's, which the TLS layer must get whole (§9's sample code
  does the same with ``MSG_PEEK``: it consumes exactly the header's bytes).
- :func:`parse`: what a whole header says: the client's address and port, or ``None`` when
  it names none (v1 ``UNKNOWN``; v2 ``LOCAL``, a balancer's own health check; a v2 family the
  front door does not route, ``AF_UNSPEC`` or ``AF_UNIX``): the connection's peer is then the
  client (§2.1, §2.2).

Anything else is :class:`ProxyHeaderError`, with a reason fit for the log, and the connection
is closed: §2.1 "Any sequence which does not exactly match the protocol must be discarded and
cause the receiver to abort the connection"; §2.2 "Receivers must drop connections presenting
unexpected values"; §2 "The receiver MUST NOT start processing the connection before it
receives a complete and valid PROXY protocol header".
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv6Address, ip_address

# §2.1: "PROXY" SP protocol SP src SP dst SP srcport SP dstport CRLF, at most 107 bytes with
# the CRLF ("PROXY UNKNOWN" and two full IPv6 addresses with ports: the worst case)
V1_PREFIX = b"PROXY "
V1_MAX = 107
V1_MIN = len(b"PROXY UNKNOWN\r\n")  # the shortest header there is
# §2.1: the fewest characters each field after the protocol can have, per protocol: an
# IPv4 address in dotted decimal (7: "0.0.0.0"), an IPv6 address (2: "::"), a port (1)
_V1_FIELD_MIN = {b"TCP4": (7, 7, 1, 1), b"TCP6": (2, 2, 1, 1)}
# §2.1: ports are decimal numbers 0-65535 (no sign, no leading zero: "0" alone is zero)
_V1_PORT = re.compile(rb"0|[1-9][0-9]{0,4}")
# §2.1: addresses are ASCII digits, dots, hex digits and colons only (no zone index)
_V1_ADDRESS = re.compile(rb"[0-9A-Fa-f.:]+")

# §2.2: the binary header: a 12-byte signature, then version and command (one byte), family
# and transport (one byte), and the length of what follows (two bytes, network order): "the
# length of the protocol header in bytes is always exactly 16 + this value"
V2_SIGNATURE = b"\r\n\r\n\x00\r\nQUIT\n"
V2_FIXED = 16
V2_VERSION = 0x2  # the high nibble of byte 13; any other "must" be refused
V2_LOCAL, V2_PROXY = 0x0, 0x1  # the low nibble of byte 13: the command
AF_UNSPEC, AF_INET, AF_INET6, AF_UNIX = 0x0, 0x1, 0x2, 0x3  # byte 14, high nibble
TRANSPORT_UNSPEC, STREAM, DGRAM = 0x0, 0x1, 0x2  # byte 14, low nibble
# §2.2: the address block's size per family (src and dst addresses, then both ports;
# AF_UNIX: two 108-byte paths); the rest of the length is TLVs (§2.2.7)
_V2_ADDRESS_BLOCK = {AF_INET: 12, AF_INET6: 36, AF_UNIX: 216}
# §2.2: the length field is 16 bits, so this is the longest header the specification allows;
# the reader's buffer never grows beyond it
V2_MAX = V2_FIXED + 0xFFFF


class ProxyHeaderError(ValueError):
    """Not a valid PROXY protocol header; the message says why (for the log)."""


@dataclass(frozen=True, slots=True)
class ProxyHeader:
    """What a header said: its version, and the client's address and port (``None``: the
    header names no client, and the connection's peer is the client)."""

    version: int
    source: tuple[IPv4Address | IPv6Address, int] | None


def starts_like_one(received: bytes | bytearray) -> bool:
    """True if ``received`` begins like a PROXY header (either version), however short."""
    if not received:
        return False
    signature = V1_PREFIX if received[:1] == b"P" else V2_SIGNATURE
    return bytes(received[: len(signature)]) == signature[: len(received)]


def missing(received: bytes | bytearray) -> int:
    """0 if ``received`` is one whole header; else the fewest bytes that can still complete
    it (never more: what follows the header is not ours to read). Raises
    :class:`ProxyHeaderError` as soon as ``received`` cannot be the start of a header."""
    if not received:
        return V1_MIN  # the shortest header there is (a v2 header has 16 bytes at least)
    if not starts_like_one(received):
        raise ProxyHeaderError("the connection does not start with a PROXY protocol header")
    if received[:1] == b"P":
        return _v1_missing(bytes(received))
    return _v2_missing(received)


def parse(header: bytes | bytearray) -> ProxyHeader:
    """What the whole header ``header`` (:func:`missing` said 0) says."""
    if header[:1] == b"P":
        return _v1_parse(bytes(header))
    return _v2_parse(bytes(header))


# --- v1 (§2.1) ---------------------------------------------------------------------------


def _v1_missing(line: bytes) -> int:
    end = line.find(b"\r\n")
    if end != -1:
        if end + 2 != len(line):  # cannot happen to the reader: it reads no further
            raise ProxyHeaderError("bytes after the v1 header's CRLF in the same read")
        return 0
    # §2.1: "If the CRLF sequence is not found in the first 107 characters, the receiver
    # should declare the line invalid"; "The receiver must not tolerate a single CR or LF"
    if len(line) >= V1_MAX:
        raise ProxyHeaderError(f"v1 header longer than {V1_MAX} bytes")
    if b"\n" in line or b"\r" in line[:-1]:
        raise ProxyHeaderError("a lone CR or LF in the v1 header")
    if len(line) < V1_MIN:
        return V1_MIN - len(line)
    if line.startswith(b"PROXY UNKNOWN"):
        # §2.1: for UNKNOWN "the receiver must ignore anything presented before the CRLF"
        need = 1 if line.endswith(b"\r") else 2
    else:
        need = _v1_fewest_to_complete(line)
    if len(line) + need > V1_MAX:
        raise ProxyHeaderError(f"v1 header longer than {V1_MAX} bytes")
    return need


def _v1_fewest_to_complete(line: bytes) -> int:
    """The shortest completion of a TCP4/TCP6 line: the current field's shortest end, each
    field after it with its space, and the CRLF."""
    protocol, *fields = line[len(V1_PREFIX) :].split(b" ")
    shortest = _V1_FIELD_MIN.get(protocol)
    if shortest is None or not fields:
        raise ProxyHeaderError("v1 header with a protocol other than TCP4, TCP6 or UNKNOWN")
    if len(fields) > len(shortest):
        raise ProxyHeaderError("v1 header with more than six fields")
    current = len(fields) - 1
    if current == len(shortest) - 1 and fields[-1].endswith(b"\r"):
        return 1  # only the LF is missing
    rest = sum(1 + n for n in shortest[current + 1 :])
    return max(0, shortest[current] - len(fields[-1])) + rest + 2


def _v1_parse(line: bytes) -> ProxyHeader:
    if len(line) > V1_MAX or not line.endswith(b"\r\n"):
        raise ProxyHeaderError("v1 header not ended by CRLF within 107 bytes")
    if b"\r" in line[:-2] or b"\n" in line[:-2]:
        raise ProxyHeaderError("a lone CR or LF in the v1 header")
    parts = line[:-2].split(b" ")
    if parts[0] != b"PROXY" or len(parts) < 2:
        raise ProxyHeaderError("malformed v1 header")
    if parts[1] == b"UNKNOWN":
        return ProxyHeader(1, None)  # §2.1: the rest of the line is ignored
    if len(parts) != 6 or parts[1] not in _V1_FIELD_MIN:
        raise ProxyHeaderError("malformed v1 header: expected PROXY TCP4|TCP6 src dst sport dport")
    source = _v1_address(parts[2], parts[1])
    _v1_address(parts[3], parts[1])  # checked, though only the source is used
    source_port = _v1_port(parts[4])
    _v1_port(parts[5])
    return ProxyHeader(1, (source, source_port))


def _v1_address(text: bytes, protocol: bytes) -> IPv4Address | IPv6Address:
    if _V1_ADDRESS.fullmatch(text) is None:
        raise ProxyHeaderError("malformed address in v1 header")
    try:
        address = ip_address(text.decode("ascii"))  # no leading zeros in IPv4 (Python 3.9.5+)
    except ValueError:
        raise ProxyHeaderError("malformed address in v1 header") from None
    if address.version != (4 if protocol == b"TCP4" else 6):
        kind = protocol.decode()
        raise ProxyHeaderError(f"v1 header: {kind} with an IPv{address.version} address")
    return address


def _v1_port(text: bytes) -> int:
    if _V1_PORT.fullmatch(text) is None or int(text) > 65535:
        raise ProxyHeaderError("malformed port in v1 header")
    return int(text)


# --- v2 (§2.2) ---------------------------------------------------------------------------


def _v2_missing(received: bytes | bytearray) -> int:
    if len(received) < V2_FIXED:
        return V2_FIXED - len(received)
    version, command = received[12] >> 4, received[12] & 0x0F
    if version != V2_VERSION:
        raise ProxyHeaderError(f"v2 header with version {version}")
    if command not in (V2_LOCAL, V2_PROXY):
        raise ProxyHeaderError(f"v2 header with unknown command {command:#x}")
    family, transport = received[13] >> 4, received[13] & 0x0F
    if family > AF_UNIX or transport > DGRAM:
        raise ProxyHeaderError(f"v2 header with unknown family/transport {received[13]:#04x}")
    total = V2_FIXED + int.from_bytes(received[14:16], "big")
    if len(received) > total:  # cannot happen to the reader: it reads no further
        raise ProxyHeaderError("bytes after the v2 header in the same read")
    return total - len(received)


def _v2_parse(header: bytes) -> ProxyHeader:
    if _v2_missing(header) != 0:
        raise ProxyHeaderError("v2 header truncated")
    command, family, transport = header[12] & 0x0F, header[13] >> 4, header[13] & 0x0F
    block = header[V2_FIXED:]
    address_length = _V2_ADDRESS_BLOCK.get(family, 0)
    if command == V2_LOCAL:
        # §2.2: LOCAL "must" be accepted and the real endpoints used; its block is skipped
        return ProxyHeader(2, None)
    if len(block) < address_length:
        raise ProxyHeaderError(
            f"v2 header: {len(block)} bytes of addresses, the family needs {address_length}"
        )
    _check_tlvs(block[address_length:])
    if family in (AF_UNSPEC, AF_UNIX) or transport == TRANSPORT_UNSPEC:
        # §2.2: unspecified or unsupported: "the receiver is free to accept the connection
        # anyway and use the real endpoints addresses"
        return ProxyHeader(2, None)
    if transport != STREAM:
        raise ProxyHeaderError("v2 header for a datagram connection")
    if family == AF_INET:
        source: IPv4Address | IPv6Address = IPv4Address(block[0:4])
        port = int.from_bytes(block[8:10], "big")
    else:
        source = IPv6Address(block[0:16])
        port = int.from_bytes(block[32:34], "big")
    return ProxyHeader(2, (source, port))


def _check_tlvs(tlvs: bytes) -> None:
    """§2.2 (after the address block, "TLV vectors"): type (1 byte), length (2 bytes),
    value; they fill the rest of the header exactly. "A receiver may choose to skip over and
    ignore the TLVs": their content is not used, but their framing must hold."""
    offset = 0
    while offset < len(tlvs):
        if offset + 3 > len(tlvs):
            raise ProxyHeaderError("v2 header: truncated TLV")
        offset += 3 + int.from_bytes(tlvs[offset + 1 : offset + 3], "big")
        if offset > len(tlvs):
            raise ProxyHeaderError("v2 header: a TLV runs past the header's length")
