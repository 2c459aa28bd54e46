"""Malformed and ambiguous request heads against the real process (``--workers 2``).

Each case is sent on a fresh connection followed by a pipelined ``GET /api/after``; behind
the load balancer a :class:`RecordingUpstream` keeps every byte. For every case: the answer
is the expected status, no request line naming ``smuggled`` ever reached the upstream, and
the connection is either closed after the answer or answers ``/api/after`` correctly.
Modelled on what nginx 1.22 refuses (RFC 9110 §5.5-5.6, RFC 9112 §2-7).
"""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator

import pytest

from tests.support import LoadBalancer, UpstreamServer, env_for, start_upstreams
from tests.support.recording import RecordingUpstream

AFTER = b"GET /api/after HTTP/1.1\r\nHost: a\r\n\r\n"
SMUGGLED = b"GET /api/smuggled HTTP/1.1\r\nHost: a\r\n\r\n"


def post(*fields: bytes, body: bytes = b"", version: bytes = b"HTTP/1.1") -> bytes:
    head = b"POST /api/x " + version + b"\r\nHost: a\r\n" + b"".join(f + b"\r\n" for f in fields)
    return head + b"\r\n" + body


def get(*fields: bytes, line: bytes = b"GET /api/x HTTP/1.1", host: bool = True) -> bytes:
    host_line = b"Host: a\r\n" if host else b""
    return line + b"\r\n" + host_line + b"".join(f + b"\r\n" for f in fields) + b"\r\n"


def smuggling(*fields: bytes, first: bytes = b"0\r\n\r\n", version: bytes = b"HTTP/1.1") -> bytes:
    """A POST with ``fields`` whose body is ``first`` then the smuggled request: by default
    an empty chunked body (``0``, no trailer), so the smuggled request follows it."""
    return post(*fields, body=first + SMUGGLED, version=version)


def chunked(first: bytes) -> bytes:
    """A chunked POST whose body starts with ``first``, the smuggled request after it."""
    return smuggling(b"Transfer-Encoding: chunked", first=first)


# (id, bytes sent before the pipelined /api/after, expected status of the first answer)
REFUSED: list[tuple[str, bytes, int]] = [
    # where does the body end? (RFC 9112 §6)
    ("te-space-before-colon", smuggling(b"Content-Length: 4", b"Transfer-Encoding : chunked"), 400),
    ("cl-space-before-colon", post(b"Content-Length : 41", body=SMUGGLED), 400),
    ("te-tab-before-colon", smuggling(b"Transfer-Encoding\t: chunked"), 400),
    ("cl-and-te", smuggling(b"Content-Length: 5", b"Transfer-Encoding: chunked"), 400),
    ("te-and-cl", smuggling(b"Transfer-Encoding: chunked", b"Content-Length: 5"), 400),
    ("cl-twice-same", post(b"Content-Length: 0", b"Content-Length: 0", body=SMUGGLED), 400),
    ("cl-twice-different", post(b"Content-Length: 0", b"Content-Length: 41", body=SMUGGLED), 400),
    ("cl-list", post(b"Content-Length: 0, 41", body=SMUGGLED), 400),
    ("cl-negative", post(b"Content-Length: -1", body=SMUGGLED), 400),
    ("cl-plus", post(b"Content-Length: +0", body=SMUGGLED), 400),
    ("cl-hex", post(b"Content-Length: 0x0", body=SMUGGLED), 400),
    ("cl-underscore", post(b"Content-Length: 0_0", body=SMUGGLED), 400),
    ("cl-empty", post(b"Content-Length: ", body=SMUGGLED), 400),
    ("cl-trailing-junk", post(b"Content-Length: 0a", body=SMUGGLED), 400),
    ("te-twice", smuggling(b"Transfer-Encoding: chunked", b"Transfer-Encoding: chunked"), 400),
    ("te-chunked-chunked", smuggling(b"Transfer-Encoding: chunked, chunked"), 400),
    ("te-gzip-chunked", smuggling(b"Transfer-Encoding: gzip, chunked"), 400),
    ("te-identity", post(b"Transfer-Encoding: identity", body=SMUGGLED), 400),
    ("te-xchunked", smuggling(b"Transfer-Encoding: xchunked"), 400),
    ("te-vertical-tab", smuggling(b"Transfer-Encoding: \x0bchunked"), 400),
    ("te-in-http10", smuggling(b"Transfer-Encoding: chunked", version=b"HTTP/1.0"), 400),
    # chunk sizes, extensions and trailers (RFC 9112 §7.1)
    ("chunk-size-0x", chunked(b"0x0\r\n\r\n"), 400),
    ("chunk-size-minus", chunked(b"-0\r\n\r\n"), 400),
    ("chunk-size-leading-space", chunked(b" 0\r\n\r\n"), 400),
    ("chunk-size-junk", chunked(b"0 junk\r\n\r\n"), 400),
    ("chunk-size-17-digits", chunked(b"00000000000000000\r\n\r\n"), 400),
    ("chunk-size-empty", chunked(b"\r\n\r\n"), 400),
    ("chunk-data-too-long", chunked(b"5\r\nhelloXX0\r\n\r\n"), 400),
    ("chunk-data-no-crlf", chunked(b"5\r\nhello0\r\n\r\n"), 400),
    ("chunk-ext-nul", chunked(b"0;a\x00\r\n\r\n"), 400),
    ("chunk-ext-bare-lf", chunked(b"0;a\nb\r\n\r\n"), 400),
    ("chunk-ext-open-quote", chunked(b'0;a="b\r\n\r\n'), 400),
    ("chunk-trailer", chunked(b"0\r\nX-Smuggle: 1\r\n\r\n"), 400),
    ("chunk-trailer-request", chunked(b"0\r\n"), 400),
    # field names and values (RFC 9110 §5.1, §5.5)
    ("nul-in-value", get(b"X-A: a\x00b"), 400),
    ("bare-cr-in-value", get(b"X-A: a\rb"), 400),
    ("bare-lf-in-value", get(b"X-A: a\n" + SMUGGLED[:-2]), 400),
    ("del-in-value", get(b"X-A: a\x7fb"), 400),
    ("control-in-value", get(b"X-A: a\x01b"), 400),
    ("space-in-name", get(b"X A: b"), 400),
    ("empty-name", get(b": b"), 400),
    ("non-token-name", get(b"X(A): b"), 400),
    ("non-ascii-name", get(b"X\xffA: b"), 400),
    ("obs-fold", get(b"X-A: a", b" folded"), 400),
    ("no-colon", get(b"X-A b"), 400),
    ("missing-host-http11", get(host=False), 400),
    ("two-hosts", get(b"Host: b"), 400),
    # request lines (RFC 9112 §3)
    ("http09", b"GET /api/smuggled\r\n\r\n", 400),
    ("http2-preface", b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", 400),
    ("version-1-2", get(line=b"GET /api/x HTTP/1.2"), 400),
    ("version-9-9", get(line=b"GET /api/x HTTP/9.9"), 400),
    ("version-1-10", get(line=b"GET /api/x HTTP/1.10"), 400),
    ("version-lowercase", get(line=b"GET /api/x http/1.1"), 400),
    ("version-trailing-space", get(line=b"GET /api/x HTTP/1.1 "), 400),
    ("double-space", get(line=b"GET  /api/x HTTP/1.1"), 400),
    ("tab-separator", get(line=b"GET\t/api/x HTTP/1.1"), 400),
    ("method-non-token", get(line=b"G(T /api/x HTTP/1.1"), 400),
    ("nul-in-target", get(line=b"GET /api/x\x00 HTTP/1.1"), 400),
    ("space-in-target", get(line=b"GET /api/a b HTTP/1.1"), 400),
    ("bare-lf-lines", b"GET /api/x HTTP/1.1\nHost: a\n\n", 400),
    ("bare-cr-lines", b"GET /api/x HTTP/1.1\rHost: a\r\r\n\r\n", 400),
    ("leading-empty-line-junk", b"\r\n\r\n", 400),
]

# Legal but unusual: accepted, forwarded once, and the connection goes on.
ACCEPTED: list[tuple[str, bytes]] = [
    # RFC 9110 §5.5: obs-text in a value is opaque data, forwarded as the bytes that came
    ("obs-text-in-value", get(b"X-A: caf\xe9")),
    (
        "chunk-extensions",
        post(b"Transfer-Encoding: chunked", body=b'5;a=b;c="d e"\r\nhello\r\n0\r\n\r\n'),
    ),
    ("chunk-upper-hex", post(b"Transfer-Encoding: chunked", body=b"A\r\n0123456789\r\n0\r\n\r\n")),
    ("te-case", post(b"transfer-encoding: chunked", body=b"0\r\n\r\n")),
    ("cl-with-ows", post(b"Content-Length:  5 ", body=b"hello")),
    ("tab-in-value", get(b"X-A: a\tb")),
    ("http10-without-host", b"GET /api/x HTTP/1.0\r\nConnection: keep-alive\r\n\r\n"),
]


@pytest.fixture(scope="module")
def recording() -> Iterator[RecordingUpstream]:
    server = RecordingUpstream()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def front(recording: RecordingUpstream) -> Iterator[LoadBalancer]:
    others: dict[str, UpstreamServer] = start_upstreams()
    env = env_for(others, API_GATEWAY_URL=recording.url, LB_HEADER_TIMEOUT="3")
    balancer = LoadBalancer(env, workers=2)
    yield balancer
    balancer.stop()
    for server in others.values():
        server.stop()


def exchange(port: int, data: bytes, timeout: float = 8.0) -> tuple[list[tuple[int, bytes]], bool]:
    """Send ``data``, read answers until the server closes or goes quiet; the answers
    (status, body) and whether the server closed the connection."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.sendall(data)
        received = b""
        closed = False
        while True:
            try:
                chunk = sock.recv(65536)
            except TimeoutError:
                break
            except ConnectionResetError:
                closed = True
                break
            if not chunk:
                closed = True
                break
            received += chunk
            answers, complete = parse_answers(received)
            if complete and len(answers) == 2:
                break
    return parse_answers(received)[0], closed


def parse_answers(data: bytes) -> tuple[list[tuple[int, bytes]], bool]:
    """Responses with a Content-Length body, in order; and whether the last one is whole."""
    answers = []
    while data:
        head, sep, rest = data.partition(b"\r\n\r\n")
        if not sep:
            return answers, False
        lines = head.split(b"\r\n")
        status = int(lines[0].split()[1])
        length = 0
        for line in lines[1:]:
            name, _, value = line.partition(b":")
            if name.strip().lower() == b"content-length":
                length = int(value)
        if len(rest) < length:
            return answers, False
        answers.append((status, rest[:length]))
        data = rest[length:]
    return answers, True


@pytest.mark.parametrize(
    ("case", "expected"), [(c[1], c[2]) for c in REFUSED], ids=[c[0] for c in REFUSED]
)
def test_refused_and_nothing_smuggled(
    front: LoadBalancer, recording: RecordingUpstream, case: bytes, expected: int
) -> None:
    answers, closed = exchange(front.port, case + AFTER)
    assert answers, "no answer at all"
    status, body = answers[0]
    assert status == expected, (status, body)
    assert body.startswith(b'{"error":'), body  # the one JSON error shape
    assert closed or answers[1:2] == [(200, b"ok")], (answers, closed)
    assert not any(b"smuggled" in line for line in recording.request_lines)


@pytest.mark.parametrize("case", [c[1] for c in ACCEPTED], ids=[c[0] for c in ACCEPTED])
def test_accepted_once_and_connection_goes_on(
    front: LoadBalancer, recording: RecordingUpstream, case: bytes
) -> None:
    before = len(recording.request_lines)
    keep_alive = not case.startswith(b"GET /api/x HTTP/1.0") or b"keep-alive" in case
    answers, _closed = exchange(front.port, case + AFTER)
    assert answers[0] == (200, b"ok"), answers
    if keep_alive:
        assert answers[1:2] == [(200, b"ok")], answers
    assert b"POST /api/x HTTP/1.1" in recording.request_lines[before:] or (
        b"GET /api/x HTTP/1.1" in recording.request_lines[before:]
    )


def test_corpus_is_large_enough() -> None:
    assert len(REFUSED) >= 40


@pytest.mark.parametrize(
    ("head", "expected"),
    [
        (b"GET /api/x HTTP/1.1\r\nHost: a\r\nX-A: b\r\nConnection: close\r\n\r\n", 200),
        (b"GET /api/x HTTP/1.1\r\nHost: a\r\nX-A: b\rc\r\n\r\n", 400),
        (b"GET /api/x HTTP/1.1\r\nHost: a\nX-A: b\r\n\r\n", 400),
    ],
    ids=["valid", "bare-cr", "bare-lf"],
)
def test_a_head_sent_a_byte_at_a_time_is_judged_the_same(
    front: LoadBalancer, recording: RecordingUpstream, head: bytes, expected: int
) -> None:
    with socket.create_connection(("127.0.0.1", front.port), timeout=8) as sock:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        for i in range(len(head)):
            try:
                sock.sendall(head[i : i + 1])
            except OSError:
                break  # refused as soon as the bare CR or LF arrived
            time.sleep(0.002)
        received = b""
        while chunk := sock.recv(65536):
            received += chunk
    assert received.startswith(b"HTTP/1.1 %d " % expected), received[:200]
