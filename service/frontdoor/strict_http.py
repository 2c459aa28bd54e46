"""``StrictHttp``: Sanic's HTTP/1.1 connection handler with a strict head and a deadline.

Sanic's own ``Http`` keeps doing all the parsing; this subclass only runs first, at the two
places where bytes become framing: the request head (checked by ``head.check_head`` once
its blank line has arrived, and bounded by ``LB_HEADER_TIMEOUT`` however slowly the bytes
come: Sanic's request timeout restarts on every byte, so a byte a second holds a
connection for ever; a new connection's wait for its first byte is bounded the same way,
see ``protocol``) and each chunk-size line (checked against RFC 9112 §7.1 before
Sanic's ``int(x, 16)`` sees it). Header names holding ``_`` are counted there too
(``LB_UNDERSCORES_IN_HEADERS``): ``reject`` refuses the request with 400, ``drop`` leaves
their count on ``request.ctx.dropped_headers`` for the proxy (which then does not forward
them) and the access log. An answer made before a request exists (a malformed head, a head
too slow) is given a request carrying the connection's peer, so that its access line
(``service.errors``) names who was refused. Base methods are called by name, not with
``super()``: Sanic's TouchUp recompiles methods from source, which loses ``super()``'s cell.
"""

from __future__ import annotations

import asyncio

from sanic.exceptions import BadRequest, RequestTimeout
from sanic.http import Http, Stage

from service.frontdoor.head import (
    CHUNK_LINE,
    HeadError,
    check_head,
    has_bare_line_break,
    underscored_names,
)
from service.preformatted import PreformattedResponse
from service.frontdoor.proxy_header import starts_like_one

HTTP_CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"
# a PROXY protocol header where HTTP was expected (service.frontdoor.proxy_protocol): never
# believed, a bad request like any other malformed head
PROXY_HEADER_REFUSED = (
    "a PROXY protocol header is taken only from LB_TRUSTED_PROXIES (LB_PROXY_PROTOCOL)"
)
CHUNK_LINE_MAX = 64  # Sanic's own bound for a chunk-size line with its extensions


class StrictHttp(Http):
    async def http1_request_header(self) -> None:
        end = self.recv_buffer.find(b"\r\n\r\n")
        if end == -1:  # the head is still arriving (usually it came whole): bound the wait
            timeout = self.protocol.app.ctx.lb.settings.frontdoor.header_timeout
            try:
                async with asyncio.timeout(timeout):
                    end = await self._receive_head()
            except TimeoutError:
                # nginx's client_header_timeout: the whole head, not the gap between bytes
                raise RequestTimeout("the request head was not received in time") from None
        self.protocol.keep_alive_timeout = self.protocol.keep_alive_after_head
        underscored = 0
        if 0 <= end < self.HEADER_MAX_SIZE:  # an oversized head is Sanic's 413
            head = self.recv_buffer[:end]
            try:
                check_head(head)
            except HeadError as exc:
                if starts_like_one(self.recv_buffer):  # not from a trusted proxy, or not on
                    raise BadRequest(PROXY_HEADER_REFUSED) from None
                raise BadRequest(str(exc)) from None
            underscored = underscored_names(head)
        if underscored:
            mode = self.protocol.app.ctx.lb.settings.frontdoor.underscores_in_headers
            if mode == "reject":
                raise BadRequest("a header name holds '_' (see LB_UNDERSCORES_IN_HEADERS)")
            if mode == "pass":
                underscored = 0
        await Http.http1_request_header(self)
        if underscored:
            self.request.ctx.dropped_headers = underscored

    async def http1_response_header(self, data: bytes, end_stream: bool) -> None:
        """A ``PreformattedResponse`` sent whole (its body in ``data``, ``end_stream``)
        leaves as one write with the head it formats itself; anything else is Sanic's."""
        response = self.response
        if (
            end_stream
            and isinstance(response, PreformattedResponse)
            and not (self.head_only or self.expecting_continue or self.protocol.access_log)
        ):
            if not data and response.body:  # a response returned whole by its handler
                data = response.body
            head = response.whole(len(data), self.keep_alive)
            if head is not None:
                self.response_size = len(data)
                self.response_func = None
                await self._send(head + data)
                self.stage = Stage.IDLE
                return
        await Http.http1_response_header(self, data, end_stream)

    def create_empty_request(self) -> None:
        """The request Sanic makes up to answer an error before one was read, with the
        connection's peer (Sanic gives it none: ``request.ip`` would be empty)."""
        Http.create_empty_request(self)
        self.request.conn_info = self.protocol.conn_info

    async def _receive_head(self) -> int:
        """Wait for the blank line; its offset, or -1 once the head is over the size limit.
        Each pass looks only at what arrived since the last (a head sent a byte at a time
        must not cost a scan of the whole buffer per byte)."""
        buf = self.recv_buffer
        scanned = 0
        while (end := buf.find(b"\r\n\r\n", max(0, scanned - 3))) == -1:
            if len(buf) - 3 >= self.HEADER_MAX_SIZE:
                return -1
            if has_bare_line_break(buf, max(0, scanned - 1)):
                raise BadRequest("bare CR or LF in the request head")
            scanned = len(buf)
            await self._receive_more()
        return end

    async def read(self) -> bytes | None:
        if self.request_bytes_left == 0 and self.request_body == "chunked":
            if self.expecting_continue:  # the client waits for it before sending any chunk
                self.expecting_continue = False
                await self._send(HTTP_CONTINUE)
            await self._receive_checked_chunk_line()
        return await Http.read(self)

    async def _receive_checked_chunk_line(self) -> None:
        buf = self.recv_buffer
        while (end := buf.find(b"\r\n", 2)) == -1:
            if len(buf) > CHUNK_LINE_MAX:
                break
            await self._receive_more()
        if end == -1 or CHUNK_LINE.fullmatch(buf, 0, end + 2) is None:
            self.keep_alive = False
            raise BadRequest("Bad chunked encoding")
