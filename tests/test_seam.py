"""The httpx seam (service/transport/seam.py) builds what httpx's own constructors build.

It sets httpx 0.28's internal attributes directly; if an httpx upgrade changes them, these
tests fail before the proxy does.
"""

from __future__ import annotations

import asyncio

import httpx
import pytest

from service.proxying.routing import Router, _plain, canonical_path
from service.settings import load_settings
from service.transport import seam


def test_httpx_is_the_version_the_seam_was_written_for() -> None:
    assert httpx.__version__.startswith("0.28."), httpx.__version__


@pytest.mark.parametrize(
    ("base", "path", "query"),
    [
        ("http://127.0.0.1:8000", "/api/x", ""),
        ("http://127.0.0.1:8000", "/api/x", "a=1&b=%20c"),
        ("https://svc.internal", "/blog/caf%C3%A9/", "q"),
        ("http://[::1]:9000", "/", "x=%2F"),
        ("http://local-api-gateway-service:8000", "/api/ünicode", "ä=1"),  # the fallback
    ],
)
def test_url_equals_the_parsed_one(base: str, path: str, query: str) -> None:
    built = seam.url_for(httpx.URL(base), path, query)
    parsed = httpx.URL(base + path + ("?" + query if query else ""))
    assert built == parsed
    assert built.raw_path == parsed.raw_path
    assert (built.scheme, built.host, built.port) == (parsed.scheme, parsed.host, parsed.port)


def test_headers_equal_the_normalised_ones() -> None:
    pairs = [(b"Host", b"a"), (b"X-Multi", b"1"), (b"x-multi", b"2"), (b"Content-Length", b"3")]
    built = seam.headers_of([(name, name.lower(), value) for name, value in pairs])
    public = httpx.Headers(pairs)
    assert built == public
    assert built.raw == public.raw
    assert built.get_list("x-multi") == ["1", "2"]
    assert seam.triples(built) == seam.triples(public)


def test_request_has_what_the_transport_reads() -> None:
    url = httpx.URL("http://127.0.0.1:1/p?q=1")
    headers = seam.headers_of([(b"Host", b"host", b"x")])
    built = seam.request_of("GET", url, headers, None, {"timeout": {"read": 1.0}})
    public = httpx.Request("GET", url, headers={"Host": "x"}, extensions={"timeout": {"read": 1.0}})
    assert (built.method, built.url, built.headers) == (public.method, public.url, public.headers)
    assert built.extensions == public.extensions
    assert isinstance(built.stream, httpx.ByteStream)
    assert built.read() == public.read() == b""


def test_response_behaves_like_a_constructed_one() -> None:
    asyncio.run(_response_behaves_like_a_constructed_one())


async def _response_behaves_like_a_constructed_one() -> None:
    request = httpx.Request("GET", "http://127.0.0.1:1/")
    headers = seam.headers_of([(b"Content-Type", b"content-type", b"text/plain")])
    built = seam.response_of(200, headers, httpx.ByteStream(b"hello"), request, {})
    assert built.status_code == 200
    assert built.request is request
    assert built.headers["content-type"] == "text/plain"
    assert await built.aread() == b"hello"
    assert built.text == "hello"
    await built.aclose()
    assert built.is_closed


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("http://127.0.0.1:8000/x", ("http", "127.0.0.1", 8000)),
        ("http://[::1]:9000/", ("http", "::1", 9000)),
        ("https://svc.internal/", ("https", "svc.internal", None)),
        ("http://svc:80/", ("http", "svc", None)),
        ("https://bücher.example/", ("https", "xn--bcher-kva.example", None)),
    ],
)
def test_origin_is_what_the_url_parsed(url: str, expected: tuple[str, str, int | None]) -> None:
    parsed = httpx.URL(url)
    assert seam.origin(parsed) == expected
    assert (parsed.scheme, parsed.port) == (expected[0], expected[2])
    assert parsed.host.encode("idna") == expected[1].encode()


def test_close_closes_as_httpx_aclose_does() -> None:
    """``seam.close`` sets what ``Response.aclose`` sets and closes the stream once."""

    class Counted(httpx.AsyncByteStream):
        closes = 0

        async def __aiter__(self):  # type: ignore[no-untyped-def]
            yield b""

        async def aclose(self) -> None:
            Counted.closes += 1

    async def main() -> None:
        request = httpx.Request("GET", "http://127.0.0.1:1/")
        for close in (seam.close, httpx.Response.aclose):
            Counted.closes = 0
            response = seam.response_of(200, seam.headers_of([]), Counted(), request, {})
            await close(response)
            await close(response)
            assert response.is_closed
            assert Counted.closes == 1

    asyncio.run(main())


@pytest.mark.parametrize(
    "path",
    ["/", "/api", "/api/", "/api/x/y", "/blog/post", "/apix", "/static/app.js", "/a-b_c~d"],
)
def test_plain_paths_route_as_the_full_normalisation_would(path: str) -> None:
    """The router's fast path skips decoding for a plain path: it must be its own canonical
    spelling, and resolve to what the normalised path resolves to."""
    assert _plain(path)
    assert canonical_path(path) == path
    router = Router(load_settings(env={}).routes)
    assert router.resolve(path, "q=1") == router._forward(canonical_path(path), "q=1", path)


@pytest.mark.parametrize("path", ["/a/./b", "/a//b", "/%61pi", "/.well-known", "a", "/a\\b"])
def test_anything_else_takes_the_full_normalisation(path: str) -> None:
    assert not _plain(path)
