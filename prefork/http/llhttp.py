# Request heads through llhttp (the C parser of Node.js, via httptools), with
# exactly the contract of ``request.parse_head``: stateless, the caller owns
# the buffer, and the same request or the same error for the same bytes.
# Strategy: find the end of the head here; match the request line with
# prefork's own grammar (one regex: llhttp knows a fixed list of methods and
# lets through versions and spacing prefork refuses); have llhttp check the
# field block in C, behind a constant request line, where the pure-Python
# parser runs a regex over the block; then cut the fields out and decide
# limits, framing, Host and persistence with the code the pure-Python parser
# uses. Collecting the fields through llhttp's callbacks instead was measured
# slower (a Python call and two bytes objects per field), so llhttp only
# answers "valid or not".
# When llhttp refuses a head (a cold path), the pure-Python parser diagnoses
# the same bytes, so status and message are its own; a head it would accept
# is answered 400 (llhttp is stricter there, see docs/http.md).
from __future__ import annotations

import httptools

from . import request as _python
from .errors import BadRequest, HeaderFieldsTooLarge
from .request import Limits, Request

# llhttp only sees the field block; the request line it parses is this one,
# a GET it knows in the version whose strict rules it applies.
_LINE = b"GET / HTTP/1.1\r\n"


class _HeadEnd:
    """The protocol object llhttp reports to: only the end of the head matters."""

    __slots__ = ("seen",)

    def __init__(self) -> None:
        self.seen = False

    def on_headers_complete(self) -> None:
        self.seen = True


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
    # The head with the CRLF of its last field line, but not the empty line.
    head = buf[start:end + 2].decode("latin-1")
    line_len = _python._line_length(head, limits)
    method, target, version = _python._request_line(head)
    if line_len + 2 == len(head):
        fields: list[tuple[str, str]] = []
        special: list[tuple[int, str]] = []
    else:
        _check_block(buf, start + line_len + 2, end + 4, limits)
        block = head[line_len + 2:-2]
        fields, special = _python.split_fields(block)
        _python.check_field_limits(fields, block, limits)
    request = _python._finish(method, target, version, fields, special, head[:line_len], limits)
    return request, end + 4


def _check_block(buf: bytes | bytearray, start: int, stop: int, limits: Limits) -> None:
    """Have llhttp check the field block ``buf[start:stop]`` (with the empty line)."""
    end = _HeadEnd()
    parser = httptools.HttpRequestParser(end)
    try:
        parser.feed_data(_LINE + buf[start:stop])
    except httptools.HttpParserUpgrade:
        pass  # Upgrade or CONNECT semantics: prefork serves them as plain requests
    except httptools.HttpParserError as exc:
        _refuse(buf, limits, str(exc))
    if not end.seen:  # cannot happen for a block ending in CRLF CRLF
        _refuse(buf, limits, "incomplete header section")


def _refuse(buf: bytes | bytearray, limits: Limits, reason: str) -> None:
    """Raise the pure-Python parser's error for ``buf``, or 400 if it has none."""
    _python.parse_head(buf, limits)
    raise BadRequest(f"header section refused by llhttp: {reason}")


# Field blocks prefork's grammar refuses and llhttp must refuse too, since the
# fields are cut out of an accepted block on the assumption that it follows
# that grammar. Older llhttp versions (httptools before 0.6.4) accept them:
# such a version is refused outright, once, at import.
_MUST_REFUSE = (
    ("obs-fold", b"X: y\r\n Transfer-Encoding: chunked\r\n\r\n"),
    ("an empty field name", b": y\r\n\r\n"),
    ("whitespace before a colon", b"X : y\r\n\r\n"),
)


def _leniency() -> str:
    """What this llhttp accepts of ``_MUST_REFUSE`` ("" when it refuses all)."""
    for name, block in _MUST_REFUSE:
        try:
            httptools.HttpRequestParser(_HeadEnd()).feed_data(_LINE + block)
        except httptools.HttpParserError:
            continue
        return name
    return ""


_LENIENT = _leniency()
if _LENIENT:
    raise ImportError(f"httptools {getattr(httptools, '__version__', '?')} accepts {_LENIENT} "
                      "in a request head: prefork needs httptools 0.6.4 or newer")
