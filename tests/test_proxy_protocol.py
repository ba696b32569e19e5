"""The PROXY protocol parser (HAProxy's proxy-protocol.txt, v1 and v2), with byte strings."""

import struct

import pytest
from hypothesis import given
from hypothesis import strategies as st

from prefork.http.errors import BadRequest
from prefork.http.proxy import (
    V2_SIGNATURE,
    ProxyInfo,
    ProxyProtocolError,
    parse_proxy_header,
    proxy_environ,
)

REQUEST = b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"


def v2(ver_cmd=0x21, fam=0x11, body=b"", length=None):
    """A version 2 header: signature, version/command, family/protocol, length, body."""
    size = len(body) if length is None else length
    return V2_SIGNATURE + bytes([ver_cmd, fam]) + struct.pack("!H", size) + body


def inet4(src, dst, sport, dport):
    return bytes(map(int, src.split("."))) + bytes(map(int, dst.split("."))) + struct.pack("!HH", sport, dport)


def inet6(src, dst, sport, dport):
    import ipaddress

    return (ipaddress.IPv6Address(src).packed + ipaddress.IPv6Address(dst).packed
            + struct.pack("!HH", sport, dport))


def tlv(kind, value):
    return bytes([kind]) + struct.pack("!H", len(value)) + value


TCP4_BLOCK = inet4("192.168.0.1", "192.168.0.11", 56324, 443)
TCP6_BLOCK = inet6("2001:db8::1", "2001:db8::2", 1234, 80)

VALID = [
    # version 1 (§2.1)
    (b"PROXY TCP4 192.168.0.1 192.168.0.11 56324 443\r\n",
     ProxyInfo(1, "PROXY", "TCP4", ("192.168.0.1", 56324), ("192.168.0.11", 443))),
    (b"PROXY TCP4 255.255.255.255 255.255.255.255 65535 65535\r\n",
     ProxyInfo(1, "PROXY", "TCP4", ("255.255.255.255", 65535), ("255.255.255.255", 65535))),
    (b"PROXY TCP4 0.0.0.0 10.0.0.1 0 0\r\n",
     ProxyInfo(1, "PROXY", "TCP4", ("0.0.0.0", 0), ("10.0.0.1", 0))),
    (b"PROXY TCP6 2001:db8::1 2001:DB8::2 1234 80\r\n",
     ProxyInfo(1, "PROXY", "TCP6", ("2001:db8::1", 1234), ("2001:db8::2", 80))),
    (b"PROXY TCP6 ::1 ::1 1 2\r\n", ProxyInfo(1, "PROXY", "TCP6", ("::1", 1), ("::1", 2))),
    (b"PROXY TCP6 " + b"ffff:" * 7 + b"ffff " + b"ffff:" * 7 + b"ffff 65535 65535\r\n",
     ProxyInfo(1, "PROXY", "TCP6", ("ffff:" * 7 + "ffff", 65535), ("ffff:" * 7 + "ffff", 65535))),
    (b"PROXY UNKNOWN\r\n", ProxyInfo(1, "PROXY", "UNKNOWN", None, None)),
    (b"PROXY UNKNOWN ffff::1 ffff::2 65535 65535\r\n", ProxyInfo(1, "PROXY", "UNKNOWN", None, None)),
    (b"PROXY UNKNOWN anything at all\r\n", ProxyInfo(1, "PROXY", "UNKNOWN", None, None)),
    # the worst case of §2.1: exactly 107 bytes
    (b"PROXY UNKNOWN " + b"f" * 91 + b"\r\n", ProxyInfo(1, "PROXY", "UNKNOWN", None, None)),
    # version 2 (§2.2)
    (v2(0x21, 0x11, TCP4_BLOCK),
     ProxyInfo(2, "PROXY", "TCP4", ("192.168.0.1", 56324), ("192.168.0.11", 443))),
    (v2(0x21, 0x21, TCP6_BLOCK),
     ProxyInfo(2, "PROXY", "TCP6", ("2001:db8::1", 1234), ("2001:db8::2", 80))),
    (v2(0x21, 0x11, TCP4_BLOCK + tlv(0x01, b"h2") + tlv(0x04, b"")),
     ProxyInfo(2, "PROXY", "TCP4", ("192.168.0.1", 56324), ("192.168.0.11", 443),
               ((0x01, b"h2"), (0x04, b"")))),
    # LOCAL: a health check from the proxy itself; block and family are ignored
    (v2(0x20, 0x00), ProxyInfo(2, "LOCAL", "UNKNOWN", None, None)),
    (v2(0x20, 0x11, TCP4_BLOCK), ProxyInfo(2, "LOCAL", "UNKNOWN", None, None)),
    (v2(0x20, 0x00, b"\x00" * 7), ProxyInfo(2, "LOCAL", "UNKNOWN", None, None)),
    # valid combinations a receiver does not use fall back to the real endpoints
    (v2(0x21, 0x00), ProxyInfo(2, "PROXY", "UNKNOWN", None, None)),
    (v2(0x21, 0x00, b"\x01\x02\x03"), ProxyInfo(2, "PROXY", "UNKNOWN", None, None)),
    (v2(0x21, 0x12, TCP4_BLOCK), ProxyInfo(2, "PROXY", "UNKNOWN", None, None)),
    (v2(0x21, 0x22, TCP6_BLOCK), ProxyInfo(2, "PROXY", "UNKNOWN", None, None)),
    (v2(0x21, 0x31, b"/a".ljust(108, b"\0") + b"/b".ljust(108, b"\0")),
     ProxyInfo(2, "PROXY", "UNKNOWN", None, None)),
    (v2(0x21, 0x32, b"\0" * 216), ProxyInfo(2, "PROXY", "UNKNOWN", None, None)),
]


@pytest.mark.parametrize("data, info", VALID)
def test_valid_headers(data, info):
    assert parse_proxy_header(data + REQUEST) == (info, len(data))
    assert parse_proxy_header(data) == (info, len(data))


@pytest.mark.parametrize("data, info", VALID)
def test_every_prefix_asks_for_more(data, info):
    for end in range(len(data)):
        assert parse_proxy_header(data[:end]) is None, data[:end]


INVALID = [
    # not a PROXY header at all: the spec forbids guessing
    (b"GET / HTTP/1.1\r\n", "does not start with a PROXY"),
    (b"proxy TCP4 1.2.3.4 5.6.7.8 1 2\r\n", "does not start with a PROXY"),
    (b"PROXY\r\n", "does not start with a PROXY"),
    (b"\r\n\r\n\x00\r\nQUIX\n" + b"\x21\x11\x00\x0c" + TCP4_BLOCK, "does not start with a PROXY"),
    (b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03", "does not start with a PROXY"),
    # version 1: exact format, one space, CRLF, families, ranges, no leading zeros
    (b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2\n", "not ended by CRLF"),
    (b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2\rX\r\n", "malformed PROXY v1"),
    (b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2\r", None),  # incomplete, not an error
    (b"PROXY TCP4  1.2.3.4 5.6.7.8 1 2\r\n", "malformed PROXY v1"),
    (b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2 \r\n", "malformed PROXY v1"),
    (b"PROXY TCP4 1.2.3.4 5.6.7.8 1\r\n", "malformed PROXY v1"),
    (b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2 3\r\n", "malformed PROXY v1"),
    (b"PROXY TCP4\t1.2.3.4 5.6.7.8 1 2\r\n", "malformed PROXY v1"),
    (b"PROXY TCP5 1.2.3.4 5.6.7.8 1 2\r\n", "malformed PROXY v1"),
    (b"PROXY tcp4 1.2.3.4 5.6.7.8 1 2\r\n", "malformed PROXY v1"),
    (b"PROXY UDP4 1.2.3.4 5.6.7.8 1 2\r\n", "malformed PROXY v1"),
    (b"PROXY UNKNOWNX\r\n", "malformed PROXY v1"),
    (b"PROXY TCP4 256.2.3.4 5.6.7.8 1 2\r\n", "malformed PROXY v1"),
    (b"PROXY TCP4 01.2.3.4 5.6.7.8 1 2\r\n", "malformed PROXY v1"),
    (b"PROXY TCP4 1.2.3 5.6.7.8 1 2\r\n", "malformed PROXY v1"),
    (b"PROXY TCP4 1.2.3.4.5 5.6.7.8 1 2\r\n", "malformed PROXY v1"),
    (b"PROXY TCP4 ::1 ::1 1 2\r\n", "malformed PROXY v1"),
    (b"PROXY TCP6 1.2.3.4 5.6.7.8 1 2\r\n", "malformed PROXY v1"),
    (b"PROXY TCP6 ::ffff:1.2.3.4 ::1 1 2\r\n", "malformed PROXY v1"),
    (b"PROXY TCP6 1::2::3 ::1 1 2\r\n", "invalid IPv6"),
    (b"PROXY TCP6 12345::1 ::1 1 2\r\n", "invalid IPv6"),
    (b"PROXY TCP6 1:2:3:4:5:6:7:8:9 ::1 1 2\r\n", "invalid IPv6"),
    (b"PROXY TCP6 fe80::1%eth0 ::1 1 2\r\n", "malformed PROXY v1"),
    (b"PROXY TCP4 1.2.3.4 5.6.7.8 65536 2\r\n", "out of range"),
    (b"PROXY TCP4 1.2.3.4 5.6.7.8 1 99999\r\n", "out of range"),
    (b"PROXY TCP4 1.2.3.4 5.6.7.8 01 2\r\n", "malformed PROXY v1"),
    (b"PROXY TCP4 1.2.3.4 5.6.7.8 -1 2\r\n", "malformed PROXY v1"),
    (b"PROXY TCP4 1.2.3.4 5.6.7.8 123456 2\r\n", "malformed PROXY v1"),
    (b"PROXY UNKNOWN " + b"f" * 92 + b"\r\n", "longer than 107"),
    (b"PROXY " + b"x" * 101, "longer than 107"),
    # version 2: version, command, family, protocol, lengths, TLVs
    (v2(0x11, 0x11, TCP4_BLOCK), "version 1"),
    (v2(0x31, 0x11, TCP4_BLOCK), "version 3"),
    (v2(0x22, 0x11, TCP4_BLOCK), "unknown command"),
    (v2(0x2F, 0x11, TCP4_BLOCK), "unknown command"),
    (v2(0x21, 0x41, TCP4_BLOCK), "invalid family/protocol"),
    (v2(0x21, 0x13, TCP4_BLOCK), "invalid family/protocol"),
    (v2(0x21, 0xF1, TCP4_BLOCK), "invalid family/protocol"),
    (v2(0x21, 0x11, TCP4_BLOCK[:11]), "address block of 11 bytes, 12 needed"),
    (v2(0x21, 0x21, TCP6_BLOCK[:35]), "address block of 35 bytes, 36 needed"),
    (v2(0x21, 0x11, b""), "address block of 0 bytes"),
    (v2(0x21, 0x31, b"\0" * 215), "215 bytes, 216 needed"),
    (v2(0x21, 0x11, TCP4_BLOCK + b"\x01\x00"), "truncated TLV"),
    (v2(0x21, 0x11, TCP4_BLOCK + b"\x01\x00\x05abc"), "TLV longer"),
    (v2(0x21, 0x11, TCP4_BLOCK + tlv(1, b"a") + b"\x02"), "truncated TLV"),
    (v2(0x21, 0x11, length=4097), "limit"),
    (v2(0x21, 0x11, length=0xFFFF), "limit"),
]


@pytest.mark.parametrize("data, message", INVALID)
def test_invalid_headers(data, message):
    if message is None:
        assert parse_proxy_header(data) is None
        return
    with pytest.raises(ProxyProtocolError, match=message):
        parse_proxy_header(data)


def test_errors_are_bad_requests():
    """A worker that only knows the HTTP error types still closes the connection."""
    assert issubclass(ProxyProtocolError, BadRequest)


def test_v1_error_is_raised_before_the_line_is_complete():
    """A line that can never become valid is refused without waiting for more bytes."""
    with pytest.raises(ProxyProtocolError):
        parse_proxy_header(b"PROXY TCP4 1.2.3.4\n")
    with pytest.raises(ProxyProtocolError):
        parse_proxy_header(b"POST / HTTP/1.1\r\n")
    with pytest.raises(ProxyProtocolError):
        parse_proxy_header(b"PROXX")


def test_v2_waits_for_the_announced_length_only():
    header = v2(0x21, 0x11, TCP4_BLOCK + tlv(0xE0, b"x" * 100))
    assert parse_proxy_header(header[:-1]) is None
    info, used = parse_proxy_header(header + b"\r\n\r\n\x00")
    assert used == len(header) and info.tlvs == ((0xE0, b"x" * 100),)


def test_bytearray_input():
    data = bytearray(b"PROXY TCP4 10.1.2.3 10.0.0.1 4000 80\r\n" + REQUEST)
    info, used = parse_proxy_header(data)
    assert info.source == ("10.1.2.3", 4000) and data[used:] == REQUEST


def test_proxy_environ():
    info, _ = parse_proxy_header(b"PROXY TCP4 10.1.2.3 10.0.0.1 4000 80\r\n")
    assert proxy_environ(info) == {"PROXY_PROTOCOL": "TCP4", "PROXY_ADDR": "10.0.0.1", "PROXY_PORT": "80"}
    info, _ = parse_proxy_header(b"PROXY UNKNOWN\r\n")
    assert proxy_environ(info) == {}


# --- properties


def _parse_in_pieces(data, cuts):
    """Feed ``data`` as a worker would: growing buffer, parse after each piece."""
    buf = b""
    pos = 0
    for cut in sorted(set(cuts)) + [len(data)]:
        buf += data[pos:cut]
        pos = cut
        try:
            result = parse_proxy_header(buf)
        except ProxyProtocolError as exc:
            return ("error", type(exc))
        if result is not None:
            return result
    return None


@given(st.sampled_from(VALID), st.lists(st.integers(min_value=0, max_value=400), max_size=8))
def test_any_split_parses_the_same(case, cuts):
    data, info = case
    whole = data + REQUEST
    cuts = [c for c in cuts if c <= len(whole)]
    assert _parse_in_pieces(whole, cuts) == (info, len(data))


@given(st.sampled_from([d for d, m in INVALID if m]), st.lists(st.integers(min_value=0, max_value=400), max_size=8))
def test_any_split_fails_the_same(data, cuts):
    cuts = [c for c in cuts if c <= len(data)]
    assert _parse_in_pieces(data, cuts) == ("error", ProxyProtocolError)


@given(st.binary(max_size=300))
def test_arbitrary_bytes(data):
    """Anything is a header, a request for more bytes, or one typed error."""
    try:
        result = parse_proxy_header(data)
    except ProxyProtocolError:
        return
    if result is not None:
        info, used = result
        assert 0 < used <= len(data) and info.version in (1, 2)


@given(st.binary(min_size=1, max_size=200))
def test_arbitrary_bytes_after_signature(tail):
    """Random version 2 bodies never crash the parser with anything but its error."""
    try:
        result = parse_proxy_header(V2_SIGNATURE + tail)
    except ProxyProtocolError:
        return
    if result is not None:
        assert result[1] <= len(V2_SIGNATURE) + len(tail)
