# Request heads through llhttp (the C parser of Node.js, via httptools), with
# exactly the contract of ``request.parse_head``: stateless, the caller owns
# the buffer, and the same request or the same error for the same bytes.
# Strategy: find the end of the head here; match the request line with
# prefork's own grammar (one regex: llhttp knows a fixed list of methods and
# lets through versions and spacing prefork refuses); let llhttp check the
# field block in C, behind a constant request line, and collect its fields
# through callbacks; then decide limits, framing, Host and persistence with
# the post-parse code shared with the pure-Python parser.
# When llhttp refuses a head (a cold path), the pure-Python parser diagnoses
# the same bytes, so status and message are its own; a head it would accept
# is answered 400 (llhttp is stricter there, see docs/http.md).
from __future__ import annotations

import httptools

from . import request as _python
from .errors import BadRequest, HeaderFieldsTooLarge
from .request import Limits, Request, _kind, _name_kinds

# llhttp only sees the field block; the request line it parses is this one,
# a GET it knows in the version whose strict rules it applies.
_LINE = b"GET / HTTP/1.1\r\n"


class _Fields:
    """The protocol object llhttp reports to: it collects the fields as
    ``split_fields`` would, (name, value) and (kind, value) for the fields
    the parser acts on."""

    __slots__ = ("fields", "special", "complete")

    def __init__(self) -> None:
        self.fields: list[tuple[str, str]] = []
        self.special: list[tuple[int, str]] = []
        self.complete = False

    def on_header(self, name_bytes: bytes, value_bytes: bytes) -> None:
        # llhttp has dropped the OWS before the value, not the OWS after it.
        name = name_bytes.decode("latin-1")
        value = value_bytes.decode("latin-1").rstrip(" \t")
        self.fields.append((name, value))
        kind = _name_kinds.get(name)
        if kind is None:
            kind = _kind(name)
        if kind:
            self.special.append((kind, value))

    def on_headers_complete(self) -> None:
        self.complete = True


def parse_head(buf: bytes | bytearray, limits: Limits) -> tuple[Request, int] | None:
    """Parse one request head from the start of ``buf``, as ``request.parse_head``."""
    end = buf.find(b"\r\n\r\n")
    start = 0
    if buf[:2] == b"\r\n":
        start = _python._skip_empty_lines(buf)
        end = buf.find(b"\r\n\r\n", start)
    if end < 0:
        _python._check_incomplete(buf, start, limits)
        return None
    if end - start > limits.max_head:
        raise HeaderFieldsTooLarge("request head too large")
    line_end = buf.find(b"\r\n", start)
    line = buf[start:line_end + 2].decode("latin-1")
    line_len = _python._line_length(line, limits)
    method, target, version = _python._request_line(line)
    fields, special = _read_fields(buf, line_end + 2, end + 4, limits)
    if fields:
        _python.check_field_limits(fields, end - line_end, limits)
    request = _python._finish(method, target, version, fields, special, line[:line_len], limits)
    return request, end + 4


def _read_fields(
    buf: bytes | bytearray, start: int, stop: int, limits: Limits
) -> tuple[list[tuple[str, str]], list[tuple[int, str]]]:
    """The fields of the block ``buf[start:stop]`` (with the empty line), read by llhttp."""
    if stop - start == 2:
        return [], []
    collected = _Fields()
    parser = httptools.HttpRequestParser(collected)
    try:
        parser.feed_data(_LINE + buf[start:stop])
    except httptools.HttpParserUpgrade:
        pass  # Upgrade or CONNECT semantics: prefork serves them as plain requests
    except httptools.HttpParserError as exc:
        _refuse(buf, limits, str(exc))
    if not collected.complete:  # cannot happen for a block ending in CRLF CRLF
        _refuse(buf, limits, "incomplete header section")
    return collected.fields, collected.special


def _refuse(buf: bytes | bytearray, limits: Limits, reason: str) -> None:
    """Raise the pure-Python parser's error for ``buf``, or 400 if it has none."""
    _python.parse_head(buf, limits)
    raise BadRequest(f"header section refused by llhttp: {reason}")
