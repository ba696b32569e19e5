# Response heads: status and fields from the application in, bytes out.
# Strategy: what the application hands over is checked without a per-
# character loop: field names are classified once and cached (applications
# send the same few names over and over), and the values of a whole head are
# checked for CR, LF and NUL with three C-level counts over the joined lines
# (response splitting, RFC 9112 §11.1). Hop-by-hop fields are taken out,
# because the server owns the connection and its framing (PEP 3333, RFC 9110
# §7.6.1), and the head is serialised with a single join. The Date field is
# rendered at most once a second.
from __future__ import annotations

import re
import time
from email.utils import formatdate

from .errors import HTTPError

# RFC 9112 §4: status-line = HTTP-version SP status-code SP [ reason-phrase ]
#   reason-phrase = 1*( HTAB / SP / VCHAR / obs-text )
STATUS = re.compile(r"([1-9][0-9][0-9])(?: [\t\x20-\x7e\x80-\xff]*)?")
# RFC 9110 §5.1 field-name = token
FIELD_NAME = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
FORBIDDEN_IN_VALUE = re.compile(r"[\x00\r\n]")

# RFC 9110 §7.6.1 connection-specific fields, the framing fields of RFC 9112
# §6, and the rest of the hop-by-hop list PEP 3333 refers to (RFC 2616
# §13.5.1): the server decides these, so the application's are not passed on.
HOP_BY_HOP = frozenset(
    {
        "connection", "keep-alive", "proxy-connection", "transfer-encoding", "te",
        "trailer", "upgrade", "proxy-authenticate", "proxy-authorization",
    }
)


class InvalidResponse(HTTPError):
    """The application produced a response that cannot be sent safely."""

    status = 500
    reason = "Internal Server Error"


_status_cache: dict[str, int] = {}


def status_code(status: str) -> int:
    """The numeric code of a WSGI status string such as ``"200 OK"``."""
    code = _status_cache.get(status)
    if code is not None:
        return code
    if not isinstance(status, str):
        raise InvalidResponse(f"status must be str, not {type(status).__name__}")
    match = STATUS.fullmatch(status)
    if match is None:
        raise InvalidResponse(f"invalid status line {status[:60]!r}")
    code = int(match.group(1))
    if code < 200:  # PEP 3333: the application gives the final response only
        raise InvalidResponse(f"{status[:60]!r} is not a final status")
    if len(_status_cache) < 256:
        _status_cache[status] = code
    return code


# What the server does with a field name from the application.
_PASS, _LENGTH, _CONNECTION, _DROP = range(4)
_name_kinds: dict[str, int] = {}


def _kind(name: object) -> int:
    if not isinstance(name, str):  # subclasses (markupsafe.Markup, SafeString) are fine
        raise InvalidResponse(f"response header name {name!r} is not a str")
    assert isinstance(name, str)
    if not FIELD_NAME.fullmatch(name):
        raise InvalidResponse(f"invalid response header name {name[:60]!r}")
    lname = name.lower()
    if lname == "content-length":
        kind = _LENGTH
    elif lname == "connection":
        kind = _CONNECTION
    elif lname in HOP_BY_HOP:
        kind = _DROP
    else:
        kind = _PASS
    if len(_name_kinds) < 512:
        _name_kinds[name] = kind
    return kind


class ResponseFields:
    """What the server needs to know about the application's fields."""

    __slots__ = ("lines", "content_length", "close")

    def __init__(self, lines: str, content_length: int | None, close: bool) -> None:
        self.lines = lines
        self.content_length = content_length
        self.close = close


def check_fields(headers: list[tuple[str, str]]) -> ResponseFields:
    """Validate the application's fields and render them as lines.

    Hop-by-hop fields are dropped (``Connection: close`` is remembered), and
    ``Content-Length`` is parsed, not rendered: the server writes it after
    deciding the framing. Raises ``InvalidResponse`` naming the bad field.
    """
    parts: list[str] = []
    content_length = None
    close = False
    kinds = _name_kinds
    try:
        for name, value in headers:
            kind = kinds.get(name)
            if kind is None:
                kind = _kind(name)
            if value.__class__ is not str and not isinstance(value, str):
                raise InvalidResponse(f"response header {name!r} has a value that is not a str")
            if kind == _PASS:
                parts.append(f"{name}: {value}\r\n")
            elif kind == _LENGTH:
                if content_length is not None:
                    raise InvalidResponse("more than one Content-Length response header")
                content_length = _content_length(value)
            elif kind == _CONNECTION:
                close = close or "close" in value.lower()
    except (TypeError, ValueError):
        raise InvalidResponse("response headers must be a list of (name, value) pairs") from None
    lines = "".join(parts)
    count = len(parts)
    if lines.count("\n") != count or lines.count("\r") != count or "\0" in lines:
        raise InvalidResponse(f"CR, LF or NUL in response header {_offender(headers)!r}")
    return ResponseFields(lines, content_length, close)


def _content_length(value: str) -> int:
    if not (value.isdigit() and value.isascii()) or len(value) > 18:
        raise InvalidResponse(f"invalid Content-Length {value[:40]!r} from the application")
    return int(value)


def _offender(headers: list[tuple[str, str]]) -> str:
    for name, value in headers:
        if FORBIDDEN_IN_VALUE.search(value):
            return name
    return "?"


def body_allowed(code: int, method: str) -> bool:
    """Whether a response may carry content (RFC 9110 §6.4.1, RFC 9112 §6.3)."""
    return not (method == "HEAD" or code < 200 or code == 204 or code == 304)


def length_allowed(code: int) -> bool:
    """1xx and 204 responses must not carry Content-Length (RFC 9110 §8.6)."""
    return code >= 200 and code != 204


_date_second = 0
_date_line = ""


def date_line() -> str:
    """``Date: <IMF-fixdate>\\r\\n`` (RFC 9110 §6.6.1), rendered at most once a second."""
    global _date_second, _date_line
    now = int(time.time())
    if now != _date_second:
        _date_line = f"Date: {formatdate(now, usegmt=True)}\r\n"
        _date_second = now
    return _date_line


def chunk(data: bytes) -> bytes:
    """One chunk of a chunked response body (RFC 9112 §7.1)."""
    return b"%x\r\n%b\r\n" % (len(data), data)


LAST_CHUNK = b"0\r\n\r\n"


def simple_response(status: int, reason: str, body: str, server: str) -> bytes:
    """A complete small error response that closes the connection."""
    payload = body.encode("utf-8")
    return (
        f"HTTP/1.1 {status} {reason}\r\nServer: {server}\r\n{date_line()}"
        f"Connection: close\r\nContent-Type: text/plain; charset=utf-8\r\n"
        f"Content-Length: {len(payload)}\r\n\r\n"
    ).encode("latin-1") + payload
