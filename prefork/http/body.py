# Request bodies (RFC 9112 §6). A body reader is fed the bytes that arrive
# after the head and hands back payload bytes; it never reads a socket. When
# the body ends, bytes it was fed beyond the end are kept in ``leftover``: they
# belong to the next request on the connection, never to this body. A body
# cut short is an error (``IncompleteBody``), never a silently short payload.
# The chunked decoder is a small state machine whose loop runs once per chunk,
# not per byte: sizes are matched with one bytes regex and data is sliced.
from __future__ import annotations

from . import grammar
from .errors import BadRequest, HeaderFieldsTooLarge, IncompleteBody, PayloadTooLarge
from .request import Limits, parse_trailer_fields

# A chunk-size line with extensions, and a trailer section, are bounded so a
# client cannot make us buffer without limit.
MAX_CHUNK_LINE = 4096
MAX_TRAILER = 16384


class LengthBody:
    """A body of exactly ``length`` bytes (Content-Length framing)."""

    __slots__ = ("remaining", "leftover", "done")

    def __init__(self, length: int) -> None:
        self.remaining = length
        self.leftover = b""
        self.done = length == 0

    def feed(self, data: bytes) -> bytes:
        """Consume ``data``; return the payload bytes in it."""
        remaining = self.remaining
        if len(data) >= remaining:
            if self.done:
                self.leftover += data
                return b""
            self.leftover = data[remaining:]
            self.remaining = 0
            self.done = True
            return data[:remaining] if len(data) > remaining else data
        self.remaining = remaining - len(data)
        return data

    def eof(self) -> None:
        """The peer closed the connection: an error unless the body was complete."""
        if not self.done:
            raise IncompleteBody(f"connection closed with {self.remaining} body bytes missing")


_SIZE, _DATA, _DATA_END, _TRAILER, _DONE = range(5)


class ChunkedBody:
    """Decodes ``Transfer-Encoding: chunked`` (RFC 9112 §7.1)."""

    __slots__ = ("_state", "_buf", "_chunk_left", "_total", "_limits", "leftover", "done", "trailers")

    def __init__(self, limits: Limits) -> None:
        self._state = _SIZE
        self._buf = b""
        self._chunk_left = 0
        self._total = 0
        self._limits = limits
        self.leftover = b""
        self.done = False
        self.trailers: list[tuple[str, str]] = []

    def feed(self, data: bytes) -> bytes:
        """Consume ``data``; return the payload bytes it completed."""
        if self._state == _DONE:
            self.leftover += data
            return b""
        buf = self._buf + data if self._buf else data
        out: list[bytes] = []
        pos = 0
        end = len(buf)
        while pos < end:
            state = self._state
            if state == _DATA:
                take = min(self._chunk_left, end - pos)
                out.append(buf[pos:pos + take])
                pos += take
                self._chunk_left -= take
                if self._chunk_left == 0:
                    self._state = _DATA_END
            elif state == _SIZE:
                eol = buf.find(b"\r\n", pos, pos + MAX_CHUNK_LINE + 2)
                if eol < 0:
                    self._check_partial_line(buf, pos)
                    break
                self._start_chunk(buf, pos, eol)
                pos = eol + 2
            elif state == _DATA_END:
                if end - pos < 2:
                    if buf[pos] != 13:  # b"\r"
                        raise BadRequest("chunk data not followed by CRLF")
                    break
                if buf[pos:pos + 2] != b"\r\n":
                    raise BadRequest("chunk data not followed by CRLF")
                pos += 2
                self._state = _SIZE
            elif state == _TRAILER:
                after = self._trailer(buf, pos)
                if after < 0:
                    break
                pos = after
            else:
                break
        rest = buf[pos:] if pos else buf
        if self._state == _DONE:
            self.leftover = rest
            self._buf = b""
        else:
            self._buf = rest
        if not out:
            return b""
        return out[0] if len(out) == 1 else b"".join(out)

    def _check_partial_line(self, buf: bytes, pos: int) -> None:
        """An incomplete chunk-size line: too long, or already invalid?"""
        if len(buf) - pos > MAX_CHUNK_LINE:
            raise BadRequest("chunk-size line too long")
        if grammar.BAD_LINE_BYTES.search(buf, pos):
            raise BadRequest("bare CR or LF, or NUL, in a chunk-size line")

    def _start_chunk(self, buf: bytes, pos: int, eol: int) -> None:
        match = grammar.CHUNK_SIZE_LINE.fullmatch(buf, pos, eol)
        if match is None:
            raise BadRequest(f"malformed chunk-size line {bytes(buf[pos:eol])[:40]!r}")
        size = int(match.group(1), 16)
        if size == 0:
            self._state = _TRAILER
            return
        self._total += size
        limit = self._limits.body
        if limit and self._total > limit:
            raise PayloadTooLarge(f"chunked body over the limit of {limit}")
        self._chunk_left = size
        self._state = _DATA

    def _trailer(self, buf: bytes, pos: int) -> int:
        """Parse the trailer section at ``pos``; its end, or -1 if incomplete."""
        if buf.startswith(b"\r\n", pos):  # no trailer fields: the usual case
            self._finish()
            return pos + 2
        end = buf.find(b"\r\n\r\n", pos)
        if end < 0:
            if len(buf) - pos > MAX_TRAILER:
                raise HeaderFieldsTooLarge("trailer section too large")
            if grammar.BAD_LINE_BYTES.search(buf, pos):
                raise BadRequest("bare CR or LF, or NUL, in the trailer section")
            return -1
        block = bytes(buf[pos:end + 2]).decode("latin-1")
        self.trailers = parse_trailer_fields(block, self._limits)
        self._finish()
        return end + 4

    def _finish(self) -> None:
        self._state = _DONE
        self.done = True

    def eof(self) -> None:
        """The peer closed the connection: an error unless the body was complete."""
        if not self.done:
            raise IncompleteBody("connection closed inside a chunked body")
