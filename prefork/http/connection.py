# One server-side HTTP/1.x connection, sans-IO, in the spirit of h11's
# ``Connection``. Strategy: the object lives as long as the connection and is
# reset at each request, so a request costs no allocation here. Bytes from
# the network go in (``receive``), a parsed ``Request`` comes out; response
# metadata goes in (``response_head``), bytes to send come out; body pieces
# are framed by ``frame`` and ended by ``end_of_body``. After the response,
# ``after_response`` says what the connection does next: read the next
# request (whose first bytes may already be here: pipelining), drain what is
# left of an unread body first, or close — lingering when request bytes are
# still unread, so the client is not sent a reset (RFC 9112 §9.6).
#
# Every decision about one connection is made here and nowhere else:
# persistence (RFC 9112 §9.3), pipelining, 100-continue (RFC 9110 §10.1.1),
# body framing in both directions, how much unread body may be drained, and
# "close, or read the next request". There is no socket, clock, settings
# object or logger: the worker does the I/O and passes in what it knows
# (whether it is willing to keep the connection, as a plain bool or a
# callable asked once when the head is written).
from __future__ import annotations

from collections.abc import Callable

from . import response as http_response
from .body import ChunkedBody, LengthBody
from .errors import HTTPError, IncompleteBody
from .request import Limits, Request
from .response import InvalidResponse

CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"
# Unread request body up to this many bytes is read and discarded after the
# response so the connection can carry the next request; beyond it, or for a
# client still waiting for "100 Continue", the connection is closed instead.
DRAIN_BUDGET = 256 * 1024

# What ``after_response`` tells the worker to do.
NEXT = 0  # read the next request; ``buffer`` holds its first bytes, if any
DRAIN = 1  # discard up to ``drain_budget`` body bytes, then ask ``body_drained``
CLOSE = 2  # close (shut the write side down first)
LINGER = 3  # shut the write side down, discard what the client still sends, then close

HeadParser = Callable[[bytes | bytearray, Limits], "tuple[Request, int] | None"]
Body = LengthBody | ChunkedBody


class Connection:
    """The request/response cycle of one connection, as decisions over bytes."""

    __slots__ = (
        "limits", "_parse", "drain_budget", "buffer", "_line_ended", "req", "body",
        "keep_alive", "head_sent", "code", "_chunked", "_length", "_body_ok", "sent",
        "must_close", "problem", "_continue",
    )

    def __init__(self, limits: Limits, parse_head: HeadParser,
                 drain_budget: int = DRAIN_BUDGET) -> None:
        self.limits = limits
        self._parse = parse_head
        self.drain_budget = drain_budget
        self.buffer: bytes | bytearray = b""  # received, not yet part of a request
        self._line_ended = False
        self.req: Request | None = None
        self.body: Body | None = None
        self._reset_response(False)

    def _reset_response(self, keep: bool) -> None:
        self.keep_alive = keep
        self.head_sent = False
        self.code = 0
        self._chunked = False
        self._length: int | None = None
        self._body_ok = True
        self.sent = 0  # body bytes sent
        self.must_close = False
        self.problem = ""  # why the response broke its framing, for the log
        self._continue = False

    # --- the request side

    def receive(self, data: bytes) -> Request | None:
        """Add bytes from the client; the request once its head is complete.

        Usually the first read holds a whole head and it is parsed at once
        (the first bytes always are, so a bad start is refused at once).
        Otherwise bytes accumulate, and the head is parsed again only when a
        line has ended or the head has grown past its limit, so a head that
        trickles in a byte at a time costs linear time, not quadratic.
        Raises ``HTTPError`` (with the status to answer) for a bad head.
        """
        buf = self.buffer
        limits = self.limits
        if not buf:  # the first bytes: always parsed, a bad start is refused at once
            buf = data
            self._line_ended = b"\n" in data
        else:
            if type(buf) is not bytearray:
                buf = bytearray(buf)
            buf += data
            newline = b"\n" in data
            self._line_ended = self._line_ended or newline
            if not (newline or len(buf) > limits.max_head or (
                    not self._line_ended and 0 < limits.request_line < len(buf))):
                self.buffer = buf
                return None
        self.buffer = buf
        parsed = self._parse(buf, limits)
        if parsed is None:
            return None
        req, used = parsed
        self.buffer = bytes(buf[used:]) if used < len(buf) else b""
        return req

    def pending(self) -> Request | None:
        """The next request if its head is already buffered (pipelining)."""
        buf = self.buffer
        if not buf:
            return None
        parsed = self._parse(buf, self.limits)
        if parsed is None:
            self._line_ended = b"\n" in buf
            return None
        req, used = parsed
        self.buffer = bytes(buf[used:]) if used < len(buf) else b""
        return req

    @property
    def idle(self) -> bool:
        """Nothing of a next request has arrived (blank lines do not count)."""
        return not self.buffer.strip(b"\r\n")

    def eof(self) -> None:
        """The client closed its side: fine between requests, an error inside a head."""
        if not self.idle:
            raise IncompleteBody("connection closed inside the request head")

    def start(self, req: Request, willing: bool) -> Body | None:
        """Begin the exchange of ``req``; its body framing, if it has a body.

        ``willing`` is whether the server would keep the connection (keep-alive
        on, not stopping). What followed the head is the body's first bytes;
        the caller feeds them (``take_buffer``), so that a framing error in
        them is met when the application reads.
        """
        self.req = req
        self._reset_response(req.keep_alive and willing)
        if req.chunked or req.content_length:
            self.body = ChunkedBody(self.limits) if req.chunked else LengthBody(req.content_length)
            self._continue = req.expect_continue and not self.buffer
        else:
            self.body = None
        return self.body

    def take_buffer(self) -> bytes:
        """Hand over the buffered bytes (the body's start) to the body reader."""
        data = bytes(self.buffer)
        self.buffer = b""
        return data

    def continue_now(self) -> bool:
        """Whether to send "100 Continue" now, as the application first reads a
        body that has not started to arrive: only once, only before the
        response head, and only if the client asked (RFC 9110 §10.1.1)."""
        if not self._continue:
            return False
        self._continue = False
        return not self.head_sent

    def body_started(self) -> None:
        """Body bytes arrived without being invited: never send 100 Continue."""
        self._continue = False

    def body_reusable(self) -> bool:
        """Whether the next request could follow this one's body: complete, or
        what is left fits the drain budget. A client still waiting for "100
        Continue" may or may not send its body now, so it is not reusable."""
        body = self.body
        if body is None or body.done:
            return True
        if self._continue:
            return False
        if type(body) is LengthBody:
            return body.remaining <= self.drain_budget
        return True

    # --- the response side

    def response_head(self, status: str, code: int, headers: list[tuple[str, str]],
                      body_length: int | None, server_lines: str,
                      may_keep: Callable[[], bool] | None = None) -> bytes:
        """The response head; decides persistence and body framing.

        ``body_length`` is known when the body is one piece. ``may_keep`` is
        asked once, here, whether the worker still wants to keep the
        connection.
        """
        req = self.req
        assert req is not None
        fields = http_response.check_fields(headers)
        body_ok = self._body_ok = http_response.body_allowed(code, req.method)
        lines = fields.lines
        length = fields.content_length
        if not http_response.length_allowed(code):
            length = None
        elif length is None and body_length is not None and (
            body_ok or (body_length and req.method == "HEAD")
        ):
            length = body_length  # for HEAD: what GET would have sent
        if length is not None:
            lines += f"Content-Length: {length}\r\n"
        keep = (self.keep_alive and not fields.close and code >= 200
                and self.body_reusable() and (may_keep is None or may_keep()))
        if body_ok:
            self._length = length
            if length is None:
                if keep and req.version == "HTTP/1.1":
                    self._chunked = True
                    lines += "Transfer-Encoding: chunked\r\n"
                else:
                    keep = False  # the end of the body is the end of the connection
        self.keep_alive = keep
        if keep:
            connection = "Connection: keep-alive\r\n" if req.version == "HTTP/1.0" else ""
        else:
            connection = "Connection: close\r\n"
        if len(status) == 3:  # "200": the status line still needs its SP (RFC 9112 §4)
            status += " "
        head = (f"HTTP/1.1 {status}\r\n{server_lines}{http_response.date_line()}"
                f"{lines}{connection}\r\n")
        try:
            data = head.encode("latin-1")
        except UnicodeEncodeError:
            raise InvalidResponse(
                f"response header {_not_latin1(headers)!r} is not latin-1 text") from None
        self.code = code
        self.head_sent = True
        return data

    @property
    def body_allowed(self) -> bool:
        return self._body_ok

    @property
    def content_length(self) -> int | None:
        """The Content-Length announced for the body, if any."""
        return self._length

    def frame(self, data: bytes) -> bytes:
        """The bytes to send for body piece ``data``, counted into ``sent``."""
        if not self._body_ok:
            return b""
        if self._chunked:
            self.sent += len(data)
            return http_response.chunk(data) if data else b""
        length = self._length
        if length is not None and self.sent + len(data) > length:
            data = data[: length - self.sent]
            self._broken(f"the application sent more than its Content-Length {length}")
        self.sent += len(data)
        return data

    def count_sent(self, count: int) -> None:
        """Body bytes sent by other means than ``frame`` (sendfile)."""
        self.sent += count

    def end_of_body(self) -> bytes:
        """What ends the body on the wire; notes a body shorter than announced."""
        if self._chunked:
            return http_response.LAST_CHUNK
        if self._body_ok and self._length is not None and self.sent < self._length:
            self._broken(
                f"the application sent {self.sent} bytes of its Content-Length {self._length}")
        return b""

    def _broken(self, problem: str) -> None:
        self.must_close = True
        self.keep_alive = False
        if not self.problem:
            self.problem = problem

    # --- after the response

    def after_response(self) -> int:
        """What the connection does once the response is complete."""
        body = self.body
        if body is None:  # what followed the head is the next request
            if not self.keep_alive:
                return LINGER if self.buffer else CLOSE
            return self._next()
        if self.keep_alive and not body.done:
            return DRAIN
        if not self.keep_alive:
            return LINGER if (not body.done or body.leftover) else CLOSE
        self.buffer = body.leftover
        return self._next()

    def body_drained(self, complete: bool) -> int:
        """After a DRAIN: the next request if the body ended within the budget."""
        body = self.body
        if not complete or body is None or not body.done:
            self.keep_alive = False
            return LINGER
        self.buffer = body.leftover
        return self._next()

    def _next(self) -> int:
        # An empty line after a body (RFC 9112 §2.2 lets old clients send
        # one) is not the start of a request: idle as usual.
        buf = self.buffer
        if buf[:1] == b"\r":
            rest = bytes(buf).lstrip(b"\r\n")
            # A lone CR at the end is half of a CRLF whose LF is on its way.
            self.buffer = rest if rest or buf[-1:] != b"\r" else b"\r"
        self.req = None
        self.body = None
        return NEXT

    def error_status(self, exc: HTTPError) -> bool:
        """A protocol error ends the exchange; True if an error response can
        still be sent (its head not sent yet). The connection then closes."""
        self.keep_alive = False
        return not self.head_sent


def _not_latin1(headers: list[tuple[str, str]]) -> str:
    for name, value in headers:
        try:
            value.encode("latin-1")
        except UnicodeEncodeError:
            return name
    return "?"


__all__ = [
    "CLOSE", "CONTINUE", "Connection", "DRAIN", "DRAIN_BUDGET", "LINGER", "NEXT",
]
