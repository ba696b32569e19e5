"""Property-based tests of the sans-IO parser (hypothesis): a valid request
parses the same however it is split, and no input ever produces anything but
a request, "need more data", or a typed ``HTTPError``."""

import pytest
from head_parsers import LLHTTP_REFUSED, PARSERS, llhttp_parse_head
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from prefork.http.body import ChunkedBody, LengthBody
from prefork.http.errors import BadRequest, HTTPError
from prefork.http.request import FORBIDDEN_TRAILERS, SINGLETON_FIELDS, Limits, Request, parse_head

LIMITS = Limits()
SETTINGS = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])

TCHARS = "!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
PATH_CHARS = "abcXYZ0189-._~!$&'()*+,;=:@/%"
VALUE_CHARS = "".join(chr(c) for c in range(0x21, 0x7F)) + "\xe9\xff\x80"
# Framing and connection fields, and the fields that may occur only once.
RESERVED = {"transfer-encoding", "connection", "expect"} | set(SINGLETON_FIELDS)

tokens = st.text(TCHARS, min_size=1, max_size=12)
names = tokens.filter(lambda n: n.lower() not in RESERVED)
values = st.builds(
    lambda first, middle: (first + middle).strip(" \t"),
    st.text(VALUE_CHARS, max_size=1),
    st.text(VALUE_CHARS + " \t", max_size=30),
)
trailer_names = names.filter(lambda n: n.lower() not in FORBIDDEN_TRAILERS)
ows = st.sampled_from(["", " ", "  ", "\t", " \t"])


@st.composite
def chunked_body(draw, payload):
    out = b""
    pos = 0
    while pos < len(payload):
        size = draw(st.integers(1, max(1, len(payload) - pos)))
        ext = draw(st.sampled_from([b"", b";a=b", b' ; name="q \\" v"', b";x"]))
        digits = draw(st.sampled_from(["%x", "%X", "%04x"])) % size
        out += digits.encode() + ext + b"\r\n" + payload[pos:pos + size] + b"\r\n"
        pos += size
    trailers = draw(st.lists(st.tuples(trailer_names, values), max_size=2))
    out += b"0\r\n" + b"".join(f"{n}: {v}\r\n".encode("latin-1") for n, v in trailers) + b"\r\n"
    return out, trailers


@st.composite
def requests(draw):
    method = draw(st.sampled_from(["GET", "POST", "PUT", "DELETE", "X-Thing"]))
    path = "/" + draw(st.text(PATH_CHARS, max_size=20))
    query = draw(st.one_of(st.none(), st.text(PATH_CHARS + "?", max_size=20)))
    target = path if query is None else f"{path}?{query}"
    sent_version = draw(st.sampled_from(["HTTP/1.0", "HTTP/1.1", "HTTP/1.2", "HTTP/1.9"]))
    version = "HTTP/1.0" if sent_version == "HTTP/1.0" else "HTTP/1.1"  # RFC 9110 §2.5
    fields = draw(st.lists(st.tuples(names, values), max_size=8))
    payload = draw(st.binary(max_size=200))
    framing = draw(st.sampled_from(["none", "length"] + (["chunked"] if version == "HTTP/1.1" else [])))
    lines = [f"{method} {target} {sent_version}"]
    if version == "HTTP/1.1" or draw(st.booleans()):
        lines.append(f"Host:{draw(ows)}example.com{draw(ows)}")
    lines += [f"{n}:{draw(ows)}{v}{draw(ows)}" for n, v in fields]
    trailers: list = []
    body = b""
    if framing == "length":
        lines.append(f"Content-Length: {len(payload)}")
        body = payload
    elif framing == "chunked":
        lines.append("Transfer-Encoding: chunked")
        body, trailers = draw(chunked_body(payload))
    else:
        payload = b""
    raw = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body
    expected = {
        "method": method, "path": path, "query": query or "", "version": version,
        "fields": [(n, v) for n, v in fields if "_" not in n], "payload": payload,
        "trailers": trailers,
    }
    return raw, expected


def parse_in_pieces(data, cuts, parse=parse_head):
    """Feed ``data`` cut at ``cuts`` the way a worker would; return what was parsed."""
    pieces = [data[a:b] for a, b in zip([0, *cuts], [*cuts, len(data)], strict=True)]
    buf = b""
    req = None
    while pieces and req is None:
        buf += pieces.pop(0)
        parsed = parse(buf, LIMITS)
        if parsed is not None:
            req, used = parsed
            buf = buf[used:]
    assert isinstance(req, Request), "a complete valid request must parse"
    body = ChunkedBody(LIMITS) if req.chunked else LengthBody(req.content_length)
    payload = body.feed(buf) if buf else b""
    for piece in pieces:
        payload += body.feed(piece)
    body.eof()
    return {
        "method": req.method, "path": req.path, "query": req.query, "version": req.version,
        "fields": [(n, v) for n, v in req.headers if n != "Host"
                   and n.lower() not in ("content-length", "transfer-encoding")],
        "payload": payload, "trailers": getattr(body, "trailers", []), "leftover": body.leftover,
    }


@pytest.mark.parametrize("parse", PARSERS)
@SETTINGS
@given(requests(), st.data())
def test_any_split_parses_identically(parse, request, data):
    raw, expected = request
    second = b"GET /next HTTP/1.1\r\nHost: x\r\n\r\n"
    stream = raw + second  # a pipelined request must end up in leftover, untouched
    whole = parse_in_pieces(stream, [], parse)
    cuts = sorted(set(data.draw(st.lists(st.integers(1, len(stream) - 1), max_size=6))))
    assert parse_in_pieces(stream, cuts, parse) == whole
    assert parse_in_pieces(stream, list(range(1, len(stream))), parse) == whole  # byte by byte
    assert whole["leftover"] == second
    del whole["leftover"]
    assert whole == expected


def outcome(data, parse=parse_head):
    try:
        parsed = parse(data, LIMITS)
    except HTTPError as exc:
        assert 400 <= exc.status < 600
        return exc.status
    if parsed is None:
        return None
    req, used = parsed
    assert isinstance(req, Request) and 0 < used <= len(data)
    body = ChunkedBody(LIMITS) if req.chunked else LengthBody(req.content_length)
    try:
        assert isinstance(body.feed(data[used:]), bytes)
        body.eof()
    except HTTPError as exc:
        assert 400 <= exc.status < 600
    return req


@st.composite
def mutated_requests(draw):
    raw, _ = draw(requests())
    for _ in range(draw(st.integers(1, 3))):
        pos = draw(st.integers(0, len(raw)))
        byte = draw(st.sampled_from([b"\r", b"\n", b"\x00", b" ", b"\t", b":", b",", b"\xff", b"0", b";"]))
        how = draw(st.sampled_from(["insert", "replace", "delete"]))
        if how == "insert":
            raw = raw[:pos] + byte + raw[pos:]
        elif how == "replace":
            raw = raw[:pos] + byte + raw[pos + 1:]
        else:
            raw = raw[:pos] + raw[pos + 1:]
    return raw


@pytest.mark.parametrize("parse", PARSERS)
@SETTINGS
@given(st.one_of(st.binary(max_size=300), mutated_requests()))
def test_any_bytes_give_a_request_more_data_or_a_typed_error(parse, data):
    outcome(data, parse)


def verdict(parse, data):
    """What a head parser makes of ``data``, comparable across parsers."""
    try:
        parsed = parse(data, LIMITS)
    except HTTPError as exc:
        return type(exc), exc.detail
    if parsed is None:
        return None
    req, used = parsed
    return used, {name: getattr(req, name) for name in Request.__slots__}


@pytest.mark.skipif(llhttp_parse_head is None, reason="httptools is not installed")
@SETTINGS
@given(st.one_of(st.binary(max_size=300), mutated_requests(), requests().map(lambda r: r[0])))
def test_httptools_parser_agrees_with_python(data):
    """The same request, or the same error and message; where llhttp alone
    refuses, a 400 that says so."""
    python, llhttp = verdict(parse_head, data), verdict(llhttp_parse_head, data)
    if python != llhttp:
        assert isinstance(python, tuple) and isinstance(python[1], dict), (python, llhttp)
        assert llhttp[0] is BadRequest and llhttp[1].startswith(LLHTTP_REFUSED), (python, llhttp)


@SETTINGS
@given(st.binary(max_size=300), st.binary(max_size=300))
def test_chunked_decoder_never_fails_untyped(first, second):
    body = ChunkedBody(Limits(body=1000))
    try:
        body.feed(first)
        body.feed(second)
        body.eof()
    except HTTPError as exc:
        assert exc.status in (400, 413, 431)
