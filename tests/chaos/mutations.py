"""Seeded mutations of valid HTTP/1.1 requests: byte flips, truncations,
duplications, huge fields and bad framing. ``mutated(rng)`` returns the
bytes to send and the names of the mutations applied, so that any request
the server mishandles can be rebuilt from the seed and described."""

from __future__ import annotations

import random

VALID = [
    b"GET / HTTP/1.1\r\nHost: example.test\r\n\r\n",
    b"GET /sink?x=1&y=%20z HTTP/1.1\r\nHost: a\r\nUser-Agent: chaos\r\nAccept: */*\r\n\r\n",
    b"POST /sink HTTP/1.1\r\nHost: a\r\nContent-Type: text/plain\r\nContent-Length: 11\r\n\r\nhello world",
    b"POST /sink HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n",
    b"POST /sink HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n4;ext=1\r\nwiki\r\n0\r\nX-Trailer: t\r\n\r\n",
    b"PUT /sink HTTP/1.1\r\nHost: a\r\nExpect: 100-continue\r\nContent-Length: 4\r\n\r\ndata",
    b"HEAD /sink HTTP/1.1\r\nHost: a\r\n\r\n",
    b"GET http://a/sink HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n",
    b"GET /sink HTTP/1.0\r\nConnection: keep-alive\r\n\r\n",
    b"OPTIONS * HTTP/1.1\r\nHost: a\r\n\r\n",
    b"GET /sink HTTP/1.1\r\nHost: a\r\nCookie: a=b; c=d\r\nX-Forwarded-For: 192.0.2.1\r\n"
    b"Forwarded: for=192.0.2.1;proto=https\r\n\r\n",
    b"GET /sink HTTP/1.1\r\nHost: a\r\n\r\nGET /pid HTTP/1.1\r\nHost: a\r\n\r\n",
    b"DELETE /sink/%2e%2e/x HTTP/1.1\r\nHost: a\r\nContent-Length: 0\r\n\r\n",
]

# Bytes that mean something to an HTTP parser.
INTERESTING = b"\x00\t\n\r :;,=\"%/?#\\\x7f\x80\xff0Ff-+"

BAD_FRAMING = [
    b"Content-Length: 5\r\nTransfer-Encoding: chunked\r\n",
    b"Transfer-Encoding: chunked\r\nContent-Length: 5\r\n",
    b"Content-Length: -1\r\n",
    b"Content-Length: +5\r\n",
    b"Content-Length: 1e3\r\n",
    b"Content-Length: 5, 6\r\n",
    b"Content-Length: 5\r\nContent-Length: 6\r\n",
    b"Content-Length: 99999999999999999999999\r\n",
    b"Content-Length: 0x10\r\n",
    b"Content-Length:\r\n",
    b"Transfer-Encoding: gzip\r\n",
    b"Transfer-Encoding: chunked, gzip\r\n",
    b"Transfer-Encoding: gzip, chunked\r\n",
    b"Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n",
    b"Transfer-Encoding: xchunked\r\n",
    b"Transfer-Encoding:\tchunked\r\n",
    b"Transfer-Encoding : chunked\r\n",
    b" Transfer-Encoding: chunked\r\n",
    b"X-Folded: a\r\n b\r\n",
    b"Host: a\r\nHost: b\r\n",
    b"X-Nul: a\x00b\r\n",
    b"X-Bare-CR: a\rb\r\n",
    b"X-Bare-LF: a\nb\r\n",
    b": empty-name\r\n",
    b"X Space: a\r\n",
    b"Connection: close, keep-alive, upgrade\r\nUpgrade: h2c\r\n",
    b"Expect: 100-continue\r\nExpect: something-else\r\n",
]

BAD_CHUNKS = [
    b"zz\r\nhello\r\n0\r\n\r\n",
    b"ffffffffffffffffff\r\nx\r\n0\r\n\r\n",
    b"5\r\nhelloXX\r\n0\r\n\r\n",
    b"5\nhello\n0\n\n",
    b"-5\r\nhello\r\n0\r\n\r\n",
    b"5 ;ext\r\nhello\r\n0\r\n\r\n",
    b"5\r\nhello\r\n",
    b"0\r\n",
    b"5\r\nhel",
    b"\r\n\r\n",
]

BAD_LINES = [
    b"GET / HTTP/2.0\r\n", b"GET / HTTP/1.10\r\n", b"GET / http/1.1\r\n", b"GET / HTTP/1.1 \r\n",
    b"GET  / HTTP/1.1\r\n", b"GET\t/\tHTTP/1.1\r\n", b"get / HTTP/1.1\r\n", b"G(T / HTTP/1.1\r\n",
    b"GET /a b HTTP/1.1\r\n", b"GET http://u:p@a/ HTTP/1.1\r\n", b"GET HTTP/1.1\r\n",
    b"/ HTTP/1.1\r\n", b"GET / HTTP/0.9\r\n", b"GET / HTTP/9.9\r\n", b"GET /\r\n",
    b"\r\n\r\nGET / HTTP/1.1\r\n", b"GET / HTTP/1.1\n", b"CONNECT a:443 HTTP/1.1\r\n",
    b"PRI * HTTP/2.0\r\n",
]


def _pos(rng: random.Random, data: bytes) -> int:
    return rng.randrange(len(data) + 1)


def flip(rng: random.Random, data: bytes) -> bytes:
    if not data:
        return data
    i = rng.randrange(len(data))
    new = rng.choice(INTERESTING) if rng.random() < 0.7 else rng.randrange(256)
    return data[:i] + bytes([new]) + data[i + 1:]


def insert(rng: random.Random, data: bytes) -> bytes:
    i = _pos(rng, data)
    junk = bytes(rng.choice(INTERESTING) for _ in range(rng.randint(1, 4)))
    return data[:i] + junk + data[i:]


def delete(rng: random.Random, data: bytes) -> bytes:
    i = _pos(rng, data)
    return data[:i] + data[i + rng.randint(1, 8):]


def truncate(rng: random.Random, data: bytes) -> bytes:
    return data[:_pos(rng, data)]


def duplicate_slice(rng: random.Random, data: bytes) -> bytes:
    i = _pos(rng, data)
    j = min(len(data), i + rng.randint(1, 40))
    return data[:j] + data[i:j] * rng.randint(1, 3) + data[j:]


def _header_lines(data: bytes) -> tuple[bytes, list[bytes], bytes]:
    head, sep, rest = data.partition(b"\r\n\r\n")
    lines = head.split(b"\r\n")
    return lines[0], lines[1:], (sep + rest if sep else b"")


def _join(line: bytes, fields: list[bytes], rest: bytes) -> bytes:
    return b"\r\n".join([line, *fields]) + (rest or b"\r\n\r\n")


def duplicate_field(rng: random.Random, data: bytes) -> bytes:
    line, fields, rest = _header_lines(data)
    if not fields:
        return data
    field = rng.choice(fields)
    fields.insert(rng.randint(0, len(fields)), field)
    return _join(line, fields, rest)


def huge_field(rng: random.Random, data: bytes) -> bytes:
    line, fields, rest = _header_lines(data)
    size = rng.choice([4000, 8190, 8200, 65536, 200_000])
    kind = rng.randrange(4)
    if kind == 0:
        extra = [b"X-Huge: " + b"a" * size]
    elif kind == 1:
        extra = [b"X-" + b"n" * size + b": v"]
    elif kind == 2:
        extra = [b"X-Many-%d: v" % i for i in range(rng.choice([99, 101, 150, 2000]))]
    else:
        method, _, tail = line.partition(b" ")
        line = method + b" /" + b"u" * size + b" " + tail.rpartition(b" ")[2]
        extra = []
    fields[rng.randint(0, len(fields)):0] = extra
    return _join(line, fields, rest)


def bad_framing(rng: random.Random, data: bytes) -> bytes:
    line, fields, rest = _header_lines(data)
    fields = [f for f in fields if not f.lower().startswith((b"content-length", b"transfer-encoding"))]
    extra = rng.choice(BAD_FRAMING).rstrip(b"\r\n").split(b"\r\n")
    fields[rng.randint(0, len(fields)):0] = extra
    body = rng.choice(BAD_CHUNKS) if rng.random() < 0.5 else rest[4:]
    return b"\r\n".join([line, *fields]) + b"\r\n\r\n" + body


def bad_line(rng: random.Random, data: bytes) -> bytes:
    _, fields, rest = _header_lines(data)
    return rng.choice(BAD_LINES).rstrip(b"\r\n") + b"\r\n" + b"\r\n".join(fields) + (rest or b"\r\n\r\n")


def line_endings(rng: random.Random, data: bytes) -> bytes:
    if rng.random() < 0.5:
        return data.replace(b"\r\n", b"\n")
    i = data.find(b"\r\n", _pos(rng, data))
    return data if i < 0 else data[:i] + rng.choice([b"\n", b"\r", b"\n\r", b"\r\r\n"]) + data[i + 2:]


def case_flip(rng: random.Random, data: bytes) -> bytes:
    if not data:
        return data
    i = rng.randrange(len(data))
    return data[:i] + data[i:i + 1].swapcase() + data[i + 1:]


MUTATIONS = [flip, insert, delete, truncate, duplicate_slice, duplicate_field, huge_field,
             bad_framing, bad_line, line_endings, case_flip]


def mutated(rng: random.Random) -> tuple[bytes, list[str]]:
    """A valid request with one to three mutations applied."""
    data = rng.choice(VALID)
    names = []
    for _ in range(rng.choice([1, 1, 1, 2, 2, 3])):
        mutation = rng.choice(MUTATIONS)
        data = mutation(rng, data)
        names.append(mutation.__name__)
    return data, names
