# Request heads: bytes in, a ``Request`` out. ``parse_head`` either returns a
# request and the number of bytes it used, returns ``None`` to ask for more
# data, or raises an ``HTTPError`` subclass carrying the status to answer with.
# It keeps no state between calls: the caller owns the buffer, so any split of
# the input parses the same way. Framing rules (RFC 9112 §6) are decided here,
# once, so that body readers only have to follow ``Request.framing``.
from __future__ import annotations

from dataclasses import dataclass

from . import grammar
from .errors import (
    BadRequest,
    HeaderFieldsTooLarge,
    HTTPError,
    NotImplementedCoding,
    PayloadTooLarge,
    URITooLong,
    VersionNotSupported,
)

# Fields that may not appear in a chunked trailer section (RFC 9110 §6.5.1):
# framing, routing and request-modifier fields.
FORBIDDEN_TRAILERS = frozenset(
    {
        "content-length", "transfer-encoding", "host", "content-type", "content-encoding",
        "content-range", "trailer", "expect", "authorization", "cookie", "te", "connection",
        "keep-alive", "upgrade", "cache-control", "max-forwards", "proxy-authorization",
    }
)


@dataclass(frozen=True)
class Limits:
    """Parser limits; 0 for ``request_line`` or ``body`` means unlimited."""

    request_line: int = 4094
    fields: int = 100
    field_size: int = 8190
    body: int = 0
    # Header names with "_": "drop" them, "refuse" the request, or keep them
    # ("dangerous"), as Gunicorn's ``header_map`` setting does.
    header_map: str = "drop"

    @property
    def max_head(self) -> int:
        line = self.request_line or 1 << 20
        return line + 2 + self.fields * (self.field_size + 2) + 2


class Request:
    """A parsed request head. Field names keep their case; values are str
    (latin-1 decoded, so every byte of the original is recoverable)."""

    __slots__ = (
        "method", "target", "path", "query", "version", "headers", "host",
        "content_length", "chunked", "keep_alive", "expect_continue", "line",
    )

    def __init__(
        self,
        method: str,
        target: str,
        path: str,
        query: str,
        version: str,
        headers: list[tuple[str, str]],
        host: str | None,
        content_length: int,
        chunked: bool,
        keep_alive: bool,
        expect_continue: bool,
        line: str,
    ) -> None:
        self.method = method
        self.target = target
        self.path = path
        self.query = query
        self.version = version
        self.headers = headers
        self.host = host
        self.content_length = content_length
        self.chunked = chunked
        self.keep_alive = keep_alive
        self.expect_continue = expect_continue
        self.line = line

    def __repr__(self) -> str:
        return f"<Request {self.line!r}>"

    def header(self, name: str) -> str | None:
        """The first value of field ``name`` (case-insensitive), or None."""
        name = name.lower()
        for key, value in self.headers:
            if key.lower() == name:
                return value
        return None


def parse_head(buf: bytes | bytearray, limits: Limits) -> tuple[Request, int] | None:
    """Parse one request head from the start of ``buf``.

    Returns ``(request, consumed)`` or ``None`` when more bytes are needed.
    """
    start = 0
    # RFC 9112 §2.2: ignore at least one empty line before the request-line.
    while buf.startswith(b"\r\n", start) and start < 8:
        start += 2
    end = buf.find(b"\r\n\r\n", start)
    line_end = buf.find(b"\r\n", start)
    if end < 0:
        _check_incomplete(buf, start, line_end, limits)
        return None
    head = bytes(buf[start:end + 2]).decode("latin-1")
    line_len = line_end - start
    if limits.request_line and line_len > limits.request_line:
        raise URITooLong(f"request line is {line_len} bytes, limit {limits.request_line}")
    line = head[:line_len]
    block = head[line_len + 2:]
    request = _build(line, block, limits)
    return request, end + 4


def _check_incomplete(buf: bytes | bytearray, start: int, line_end: int, limits: Limits) -> None:
    """Fail early on a head that can never become valid or grows too large."""
    if line_end < 0:
        if limits.request_line and len(buf) - start > limits.request_line:
            raise URITooLong(f"request line longer than {limits.request_line} bytes")
        if b"\n" in buf or b"\x00" in buf:
            raise BadRequest("bare LF or NUL in request line")
    elif limits.request_line and line_end - start > limits.request_line:
        raise URITooLong(f"request line longer than {limits.request_line} bytes")
    if len(buf) - start > limits.max_head:
        raise HeaderFieldsTooLarge("request head too large")


def _build(line: str, block: str, limits: Limits) -> Request:
    match = grammar.REQUEST_LINE.fullmatch(line)
    if match is None:
        raise BadRequest(f"malformed request line {line[:80]!r}")
    method, target, major, minor = match.groups()
    if major != "1" or minor not in "01":
        raise VersionNotSupported(f"HTTP/{major}.{minor}")
    version = "HTTP/1.1" if minor == "1" else "HTTP/1.0"

    fields = _parse_fields(block, limits)

    host = None
    cl_value = None
    te_values: list[str] = []
    connection = ""
    expect = None
    headers: list[tuple[str, str]] = []
    for name, value in fields:
        lname = name.lower()
        if lname == "host":
            if host is not None:
                raise BadRequest("more than one Host field")
            host = value
        elif lname == "content-length":
            if cl_value is not None:
                raise BadRequest("more than one Content-Length field")
            cl_value = value
        elif lname == "transfer-encoding":
            te_values.append(value)
        elif lname == "connection":
            connection = f"{connection},{value}" if connection else value
        elif lname == "expect":
            expect = value
        if "_" in name:
            if limits.header_map == "drop":
                continue
            if limits.header_map == "refuse":
                raise BadRequest(f"header name with underscore: {name!r}")
        headers.append((name, value))

    if host is None:
        if minor == "1":
            raise BadRequest("HTTP/1.1 request without Host")
    elif not grammar.HOST_VALUE.fullmatch(host):
        raise BadRequest("invalid Host value")

    path, query = _split_target(method, target)

    chunked = False
    content_length = 0
    if te_values:
        if minor == "0":
            raise BadRequest("Transfer-Encoding in an HTTP/1.0 request")
        if cl_value is not None:
            raise BadRequest("both Content-Length and Transfer-Encoding")
        _check_transfer_coding(",".join(te_values))
        chunked = True
    elif cl_value is not None:
        if not grammar.DIGITS.fullmatch(cl_value):
            raise BadRequest(f"invalid Content-Length {cl_value[:40]!r}")
        content_length = int(cl_value)
    if limits.body and content_length > limits.body:
        raise PayloadTooLarge(f"Content-Length {content_length} over limit {limits.body}")

    tokens = connection.lower()
    if minor == "1":
        keep_alive = "close" not in _tokens(tokens) if tokens else True
    else:
        keep_alive = "keep-alive" in _tokens(tokens) if tokens else False
    expect_continue = expect is not None and expect.lower() == "100-continue" and minor == "1"

    return Request(
        method, target, path, query, version, headers, host,
        content_length, chunked, keep_alive, expect_continue, line,
    )


def _parse_fields(block: str, limits: Limits) -> list[tuple[str, str]]:
    if not block:
        return []
    if grammar.FIELD_BLOCK.fullmatch(block) is None:
        raise _diagnose_block(block, limits)
    fields = grammar.FIELD_LINES.findall(block)
    if len(fields) > limits.fields:
        raise HeaderFieldsTooLarge(f"more than {limits.fields} header fields")
    size = limits.field_size
    if len(block) > size + 2:
        for name, value in fields:
            if len(name) + len(value) + 2 > size:
                raise HeaderFieldsTooLarge(f"header field {name[:40]!r} is over {size} bytes")
    return fields


def _diagnose_block(block: str, limits: Limits) -> HTTPError:
    """Name the rule a header block broke (error path only)."""
    if grammar.BARE_LF.search(block):
        return BadRequest("bare LF in header section")
    if grammar.OBS_FOLD.search("\r\n" + block):
        return BadRequest("obsolete line folding in header section")
    if grammar.SPACE_BEFORE_COLON.search(block):
        return BadRequest("whitespace between field name and colon")
    for raw in block.split("\r\n"):
        if len(raw) > limits.field_size:
            return HeaderFieldsTooLarge(f"header field over {limits.field_size} bytes")
    return BadRequest("malformed header field")


def _split_target(method: str, target: str) -> tuple[str, str]:
    first = target[0]
    if first == "/":
        path, _, query = target.partition("?")
        if "#" in target:
            raise BadRequest("fragment in request-target")
        return path, query
    if target == "*":
        if method != "OPTIONS":
            raise BadRequest("asterisk-form target outside OPTIONS")
        return "*", ""
    if method == "CONNECT":
        if not grammar.AUTHORITY_FORM.fullmatch(target):
            raise BadRequest("CONNECT needs an authority-form target")
        return "", ""
    absolute = grammar.ABSOLUTE_FORM.fullmatch(target)
    if absolute is not None:
        return absolute.group(3) or "/", absolute.group(4) or ""
    if grammar.AUTHORITY_FORM.fullmatch(target):
        raise BadRequest("authority-form target outside CONNECT")
    raise BadRequest(f"invalid request-target {target[:80]!r}")


def _check_transfer_coding(value: str) -> None:
    codings = [c.strip(" \t").lower() for c in value.split(",")]
    if not codings or codings[-1] != "chunked":
        raise BadRequest(f"Transfer-Encoding {value[:60]!r} does not end in chunked")
    if codings.count("chunked") > 1:
        raise BadRequest("chunked applied more than once")
    for coding in codings[:-1]:
        if not grammar.TOKEN_RE.fullmatch(coding):
            raise BadRequest(f"invalid transfer coding {coding[:40]!r}")
        raise NotImplementedCoding(f"transfer coding {coding[:40]!r} is not supported")


def _tokens(value: str) -> set[str]:
    return {t.strip(" \t") for t in value.split(",")}


def parse_trailer_fields(block: str, limits: Limits) -> list[tuple[str, str]]:
    """Parse a chunked trailer section (``block`` ends with CRLF)."""
    fields = _parse_fields(block, limits)
    for name, _ in fields:
        if name.lower() in FORBIDDEN_TRAILERS:
            raise BadRequest(f"forbidden trailer field {name!r}")
    return fields
