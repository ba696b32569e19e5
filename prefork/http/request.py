# Request heads: bytes in, a ``Request`` out. ``parse_head`` either returns a
# request and the number of bytes it used, returns ``None`` to ask for more
# data, or raises an ``HTTPError`` subclass carrying the status to answer with.
# It keeps no state between calls: the caller owns the buffer, so any split of
# the input parses the same way. Framing (RFC 9112 §6.3) is decided here, once,
# so that body readers only have to follow ``Request.chunked`` and
# ``Request.content_length``. The hot path is two regex calls over the head
# (request line, header block validation), a split of the valid block, and
# one short loop over the fields, whose names are classified through a cache.
from __future__ import annotations

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
# message framing, routing, request modifiers, authentication, and fields
# that control the connection or the response.
FORBIDDEN_TRAILERS = frozenset(
    {
        "content-length", "transfer-encoding", "host", "content-type", "content-encoding",
        "content-range", "trailer", "expect", "authorization", "cookie", "te", "connection",
        "keep-alive", "upgrade", "cache-control", "max-forwards", "proxy-authorization",
        "range", "if-match", "if-none-match", "if-modified-since", "if-unmodified-since",
        "if-range", "set-cookie", "www-authenticate", "proxy-authenticate",
    }
)

# Fields whose definition in RFC 9110 is a single value, not a list, so that
# a sender must not repeat them (RFC 9110 §5.3) and two of them cannot be
# combined into one value: a request with two is refused, since a proxy in
# front may have used the other one. By lower-case name, with the section
# that defines each. Fields that only responses carry (Location, Server,
# ETag, Last-Modified, Retry-After) are left out: they mean nothing in a
# request. Cookie is no RFC 9110 field, and HTTP/2 gateways may split it
# (RFC 9113 §8.2.3), so it may repeat and is joined with "; ".
SINGLETON_FIELDS = {
    "host": "RFC 9110 §7.2",
    "content-length": "RFC 9110 §8.6",
    "content-type": "RFC 9110 §8.3",
    "content-location": "RFC 9110 §8.7",
    "content-range": "RFC 9110 §14.4",
    "authorization": "RFC 9110 §11.6.2",
    "proxy-authorization": "RFC 9110 §11.7.2",
    "date": "RFC 9110 §6.6.1",
    "max-forwards": "RFC 9110 §7.6.2",
    "from": "RFC 9110 §10.1.2",
    "referer": "RFC 9110 §10.1.3",
    "user-agent": "RFC 9110 §10.1.5",
    "if-modified-since": "RFC 9110 §13.1.3",
    "if-unmodified-since": "RFC 9110 §13.1.4",
    "if-range": "RFC 9110 §13.1.5",
    "range": "RFC 9110 §14.2",
}

# When a limit is 0 ("no limit of its own"), the part of the head it governs
# is still bounded by this, so a client can never make a worker buffer
# without limit.
UNLIMITED_PART = 1 << 20
# RFC 9112 §2.2 asks servers to ignore at least one empty line before a
# request line; we ignore up to this many bytes of them.
MAX_LEADING_CRLF = 8


class Limits:
    """Parser limits as plain numbers; 0 means "no limit of its own"."""

    __slots__ = ("request_line", "fields", "field_size", "body", "header_map", "max_head")

    def __init__(
        self,
        request_line: int = 8190,
        fields: int = 100,
        field_size: int = 8190,
        body: int = 0,
        header_map: str = "drop",
    ) -> None:
        if header_map not in ("drop", "refuse", "dangerous"):
            raise ValueError(f"header_map must be drop, refuse or dangerous, not {header_map!r}")
        self.request_line = request_line
        self.fields = fields
        self.field_size = field_size
        self.body = body
        # Header names with "_": "drop" them, "refuse" the request, or keep
        # them ("dangerous"), with the meaning of Gunicorn's ``header_map``.
        self.header_map = header_map
        # The whole head: request line, every field line (``field_size``
        # counts its CRLF), the empty line.
        line = request_line or UNLIMITED_PART
        if fields and field_size:
            section = fields * field_size
        else:
            section = max(UNLIMITED_PART, fields * 2, field_size)
        self.max_head = MAX_LEADING_CRLF + line + 2 + section + 2

    def __repr__(self) -> str:
        return (
            f"Limits(request_line={self.request_line}, fields={self.fields}, "
            f"field_size={self.field_size}, body={self.body}, header_map={self.header_map!r})"
        )


class Request:
    """A parsed request head.

    Field names keep their case; values are str, latin-1 decoded, so every
    byte of the original is recoverable. ``host`` is the authority the
    request is for: the Host field, or the target's authority in
    absolute-form (RFC 9112 §3.2.2). ``content_length`` is 0 when there is
    no body and meaningless when ``chunked``. ``version`` is the version the
    request is processed as: ``HTTP/1.0`` or ``HTTP/1.1``, also for a higher
    minor version of HTTP/1 (RFC 9110 §2.5); ``line`` keeps the one sent.
    """

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

    Returns ``(request, consumed)`` or ``None`` when more bytes are needed;
    raises an ``HTTPError`` subclass for a head that can never be valid.
    """
    end = buf.find(b"\r\n\r\n")
    start = 0
    if buf[:2] == b"\r\n":
        start = _skip_empty_lines(buf)
        end = buf.find(b"\r\n\r\n", start)
    if end < 0:
        _check_incomplete(buf, start, limits)
        return None
    if end - start > limits.max_head:
        raise HeaderFieldsTooLarge("request head too large")
    # The head with the CRLF of its last field line, but not the empty line.
    head = buf[start:end + 2].decode("latin-1")
    return _build(head, limits), end + 4


def _skip_empty_lines(buf: bytes | bytearray) -> int:
    start = 0
    while buf.startswith(b"\r\n", start) and start < MAX_LEADING_CRLF:
        start += 2
    return start


def _check_incomplete(buf: bytes | bytearray, start: int, limits: Limits) -> None:
    """Fail early on a partial head that can never become valid or grows too large.

    Every check holds for all prefixes of a valid head, so a valid request
    split anywhere is never refused.
    """
    line_end = buf.find(b"\r\n", start)
    limit = limits.request_line
    if line_end < 0:
        if limit and len(buf) - start > limit + 1:  # +1: the CR may be there already
            raise URITooLong(f"request line longer than {limit} bytes")
    elif limit and line_end - start > limit:
        raise URITooLong(f"request line is {line_end - start} bytes, limit {limit}")
    else:
        # The request line is complete: judge it now rather than wait for
        # the rest of a head that will be refused anyway.
        _request_line(buf[start:line_end + 2].decode("latin-1"))
    if len(buf) - start > limits.max_head + 4:  # +4: the empty line may have begun
        raise HeaderFieldsTooLarge("request head too large")
    if grammar.BAD_LINE_BYTES.search(buf, start):
        raise BadRequest("bare CR or LF, or NUL, in the request head")


def _request_line(head: str) -> tuple[str, str, str]:
    """(method, target, version) of the request line that starts ``head``."""
    match = grammar.REQUEST_LINE.match(head)
    if match is None:
        line = head.split("\r", 1)[0]
        raise BadRequest(f"malformed request line {line[:80]!r}")
    method, target, major, minor = match.groups()
    if major != "1":
        raise VersionNotSupported(f"HTTP/{major}.{minor} is not supported")
    # RFC 9110 §2.5: a higher minor version of HTTP/1 is processed as the
    # highest one we conform to, so HTTP/1.2 is served as HTTP/1.1.
    return method, target, "HTTP/1.0" if minor == "0" else "HTTP/1.1"


# Names the request loop must look at, by lower-case name. Everything else
# is an ordinary field (0), or a name with "_" (UNDERSCORE).
_HOST, _CONTENT_LENGTH, _TRANSFER_ENCODING, _CONNECTION, _EXPECT, _UNDERSCORE = range(1, 7)
_SPECIAL = {
    "host": _HOST,
    "content-length": _CONTENT_LENGTH,
    "transfer-encoding": _TRANSFER_ENCODING,
    "connection": _CONNECTION,
    "expect": _EXPECT,
}
# Every other singleton field has a kind of its own, from _FIRST_SINGLETON
# on: its bit in an int then records that the request has it.
_FIRST_SINGLETON = 8
_SINGLETON_KINDS = {
    name: kind for kind, name in enumerate(
        (name for name in SINGLETON_FIELDS if name not in _SPECIAL), _FIRST_SINGLETON)
}
_SPECIAL.update(_SINGLETON_KINDS)
_SINGLETON_NAMES = {kind: name for name, kind in _SINGLETON_KINDS.items()}
# name as received -> kind; clients send the same few spellings over and
# over, so after warm-up a field costs one dict lookup.
_name_kinds: dict[str, int] = {}
_NAME_CACHE_MAX = 2048


def _kind(name: str) -> int:
    kind = _SPECIAL.get(name.lower(), 0)
    if not kind and "_" in name:
        kind = _UNDERSCORE
    if len(_name_kinds) < _NAME_CACHE_MAX:
        _name_kinds[name] = kind
    return kind


def _build(head: str, limits: Limits) -> Request:
    line_len = _line_length(head, limits)
    method, target, version = _request_line(head)
    fields, special = _parse_fields(head, line_len + 2, limits)
    return _finish(method, target, version, fields, special, head[:line_len], limits)


def _line_length(head: str, limits: Limits) -> int:
    """The length of the request line that starts ``head``, within its limit."""
    line_len = head.find("\r\n")
    if limits.request_line and line_len > limits.request_line:
        raise URITooLong(f"request line is {line_len} bytes, limit {limits.request_line}")
    return line_len


def _finish(
    method: str,
    target: str,
    version: str,
    fields: list[tuple[str, str]],
    special: list[tuple[int, str]],
    line: str,
    limits: Limits,
) -> Request:
    """The request from a valid request line and field block: framing
    (RFC 9112 §6.3), Host, persistence, expectation and ``header_map``.
    Shared by every head parser, so they all decide these the same way."""
    host = cl_value = expect = None
    te_value = connection = ""
    underscore = False
    singletons = 0  # a bit per singleton field seen
    for kind, value in special:
        if kind == _HOST:
            if host is not None:
                raise BadRequest("more than one Host field")
            host = value
        elif kind >= _FIRST_SINGLETON:
            bit = 1 << kind
            if singletons & bit:
                raise _repeated(kind)
            singletons |= bit
        elif kind == _CONTENT_LENGTH:
            # RFC 9112 §6.3 lets a recipient merge identical values; refused
            # all the same (as Gunicorn does), since a proxy in front may
            # have framed the message by either field.
            if cl_value is not None:
                raise BadRequest("more than one Content-Length field")
            cl_value = value
        elif kind == _TRANSFER_ENCODING:
            te_value = f"{te_value},{value}" if te_value else value or ","
        elif kind == _CONNECTION:
            connection = f"{connection},{value}" if connection else value
        elif kind == _EXPECT:
            expect = value
        else:
            underscore = True
    headers = _map_underscores(fields, limits.header_map) if underscore else fields
    http11 = version == "HTTP/1.1"

    if host is None:
        if http11:
            raise BadRequest("HTTP/1.1 request without Host")
    elif host not in _valid_hosts:
        _check_host(host)

    path, query, authority = _split_target(method, target)
    if authority is not None:
        host = authority  # RFC 9112 §3.2.2: the target's authority wins over Host

    chunked = False
    content_length = 0
    if te_value:
        if not http11:
            raise BadRequest("Transfer-Encoding in an HTTP/1.0 request")
        if cl_value is not None:
            raise BadRequest("both Content-Length and Transfer-Encoding")
        _check_transfer_coding(te_value)
        chunked = True
    elif cl_value is not None:
        if not grammar.CONTENT_LENGTH.fullmatch(cl_value):
            raise BadRequest(f"invalid Content-Length {cl_value[:40]!r}")
        content_length = int(cl_value)
        if limits.body and content_length > limits.body:
            raise PayloadTooLarge(f"Content-Length {content_length} over the limit of {limits.body}")

    keep_alive = _keep_alive(connection, http11) if connection else http11
    # RFC 9110 §10.1.1: a 100-continue expectation in HTTP/1.0 is ignored.
    expect_continue = http11 and expect is not None and expect.lower() == "100-continue"

    return Request(
        method, target, path, query, version, headers, host,
        content_length, chunked, keep_alive, expect_continue, line,
    )


def _repeated(kind: int) -> BadRequest:
    name = _SINGLETON_NAMES[kind]
    return BadRequest(f"more than one {name} field ({SINGLETON_FIELDS[name]} allows one)")


# Host values already found valid (a server sees the same few over and over).
_valid_hosts: set[str] = set()


def _check_host(host: str) -> None:
    if not grammar.HOST_VALUE.fullmatch(host):
        raise BadRequest(f"invalid Host {host[:60]!r}")
    if len(_valid_hosts) < 256:
        _valid_hosts.add(host)


def _keep_alive(connection: str, http11: bool) -> bool:
    """Persistence from the Connection field (RFC 9112 §9.3)."""
    value = connection.lower()
    if value == "keep-alive":
        return True
    if value == "close":
        return False
    tokens = {token.strip(" \t") for token in value.split(",")}
    return "close" not in tokens and (http11 or "keep-alive" in tokens)


def _map_underscores(fields: list[tuple[str, str]], mode: str) -> list[tuple[str, str]]:
    """Apply ``header_map`` to fields of which some have "_" in their name."""
    if mode == "dangerous":
        return fields
    bad = next(name for name, _ in fields if "_" in name)
    if mode == "refuse":
        raise BadRequest(f"header name with an underscore: {bad[:60]!r}")
    return [(name, value) for name, value in fields if "_" not in name]


def _parse_fields(
    head: str, pos: int, limits: Limits
) -> tuple[list[tuple[str, str]], list[tuple[int, str]]]:
    """The field lines of ``head`` from ``pos`` (each ending in CRLF): every
    (name, value), and (kind, value) for the fields the parser acts on."""
    if pos == len(head):
        return [], []
    if grammar.FIELD_BLOCK.fullmatch(head, pos) is None:
        raise _diagnose_block(head[pos:], limits)
    block = head[pos:-2]
    fields, special = split_fields(block)
    check_field_limits(fields, block, limits)
    return fields, special


def split_fields(block: str) -> tuple[list[tuple[str, str]], list[tuple[int, str]]]:
    """Cut a header block already found valid (field lines joined by CRLF,
    without the last CRLF) into every (name, value), and (kind, value) for
    the fields the parser acts on."""
    # The block is valid, so every line is token ":" value: the first colon
    # ends the name, and stripping OWS leaves the value (RFC 9112 §5).
    # A split and a short loop beat a regex findall here by a wide margin.
    fields = []
    special = []
    kinds = _name_kinds
    for line in block.split("\r\n"):
        name, _, value = line.partition(":")
        value = value.strip(" \t")
        fields.append((name, value))
        kind = kinds.get(name)
        if kind is None:
            kind = _kind(name)
        if kind:
            special.append((kind, value))
    return fields, special


def check_field_limits(fields: list[tuple[str, str]], block: str, limits: Limits) -> None:
    """Enforce the field count and field size limits on the ``fields`` cut
    out of ``block`` (field lines joined by CRLF, without the last CRLF).

    A field line counts as Gunicorn counts it: as received, with its CRLF.
    """
    if limits.fields and len(fields) > limits.fields:
        raise HeaderFieldsTooLarge(f"more than {limits.fields} header fields")
    size = limits.field_size
    if size and len(block) + 2 > size:  # else no line can be too large
        for line in block.split("\r\n"):
            if len(line) + 2 > size:
                name = line.partition(":")[0]
                raise HeaderFieldsTooLarge(
                    f"header field {name[:40]!r} is over {size} bytes with its CRLF")


def _diagnose_block(block: str, limits: Limits) -> HTTPError:
    """Name the rule a header block broke (error path only)."""
    if grammar.BAD_LINE_BYTES.search(block.encode("latin-1")):
        return BadRequest("bare CR or LF, or NUL, in the header section")
    if grammar.OBS_FOLD.search("\r\n" + block):
        return BadRequest("obsolete line folding in the header section")
    if grammar.SPACE_BEFORE_COLON.search(block):
        return BadRequest("whitespace between a field name and the colon")
    if limits.field_size:
        for raw in block.split("\r\n"):
            if len(raw) + 2 > limits.field_size:
                return HeaderFieldsTooLarge(f"a header field is over {limits.field_size} bytes")
    return BadRequest("malformed header field")


def _split_target(method: str, target: str) -> tuple[str, str, str | None]:
    """(path, query, authority or None) of a request-target (RFC 9112 §3.2)."""
    if target[0] == "/":  # origin-form, by far the most common
        if "#" in target or method == "CONNECT":
            raise BadRequest(f"invalid request-target {target[:80]!r} for {method}")
        path, _, query = target.partition("?")
        return path, query, None
    if method == "CONNECT":
        if not grammar.AUTHORITY_FORM.fullmatch(target):
            raise BadRequest("CONNECT needs an authority-form target")
        return "", "", target
    if target == "*":
        if method != "OPTIONS":
            raise BadRequest("asterisk-form target outside OPTIONS")
        return "*", "", None
    absolute = grammar.ABSOLUTE_FORM.fullmatch(target)
    if absolute is not None:
        authority = absolute.group(2)
        if "@" in authority or not grammar.HOST_VALUE.fullmatch(authority):
            raise BadRequest(f"invalid authority in the request-target {target[:80]!r}")
        return absolute.group(3) or "/", absolute.group(4) or "", authority
    if grammar.AUTHORITY_FORM.fullmatch(target):
        raise BadRequest("authority-form target outside CONNECT")
    raise BadRequest(f"invalid request-target {target[:80]!r}")


def _check_transfer_coding(value: str) -> None:
    """Accept exactly one final ``chunked`` (RFC 9112 §6.1, §6.3, §7).

    Empty list elements, parameters, or anything that is not a token are
    refused rather than ignored: lenience in a framing field is how two
    parsers on one path come to disagree about where a request ends.
    """
    codings = [c.strip(" \t").lower() for c in value.split(",")]
    if codings[-1] != "chunked":
        raise BadRequest(f"Transfer-Encoding {value[:60]!r} does not end in chunked")
    if len(codings) == 1:
        return
    if "chunked" in codings[:-1]:
        raise BadRequest("chunked applied more than once")
    for coding in codings[:-1]:
        if not grammar.TOKEN_RE.fullmatch(coding):
            raise BadRequest(f"invalid transfer coding {coding[:40]!r}")
    raise NotImplementedCoding(f"transfer coding {codings[0][:40]!r} is not supported")


def parse_trailer_fields(block: str, limits: Limits) -> list[tuple[str, str]]:
    """Parse a chunked trailer section (``block`` ends with CRLF)."""
    fields, _ = _parse_fields(block, 0, limits)
    for name, _ in fields:
        if name.lower() in FORBIDDEN_TRAILERS:
            raise BadRequest(f"forbidden trailer field {name!r}")
    return fields
