# The PROXY protocol (HAProxy's proxy-protocol.txt, versions 1 and 2): the
# line or binary block a TCP load balancer puts before the first byte of a
# connection to say who the client is. Strategy: ``parse_proxy_header`` looks at
# the start of the caller's buffer and either returns the header and its
# length, returns ``None`` while the header is still incomplete, or raises
# ``ProxyProtocolError``. It keeps no state, so any split of the input parses the
# same way. Parsing is strict: the specification says that anything which does
# not match exactly must abort the connection, and a receiver that expects the
# header must never guess whether it is there.
from __future__ import annotations

import ipaddress
import re
import struct
from dataclasses import dataclass

from .errors import BadRequest

# §2.2: the 12-byte signature that starts every version 2 header.
V2_SIGNATURE = b"\r\n\r\n\x00\r\nQUIT\n"
V1_PREFIX = b"PROXY "
# §2.1: the longest valid version 1 line, CRLF included ("worst case").
V1_MAX_LINE = 107
# §2.2: the fixed part of a version 2 header; ``len`` counts what follows it.
V2_FIXED = 16
# The spec lets TLVs make a v2 header up to 16 + 65535 bytes; real senders (HAProxy,
# AWS NLB, GCP, Azure) stay far below this. Anything larger is refused, so a peer
# cannot make a worker buffer 64 KiB before the first request.
V2_MAX_PAYLOAD = 4096

# §2.1: IPv4 as four decimal numbers 0-255 without leading zeros.
_OCTET = r"(?:25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9][0-9]|[0-9])"
_IPV4 = rf"{_OCTET}(?:\.{_OCTET}){{3}}"
# §2.1: IPv6 as groups of hex digits with at most one "::"; the exact rules
# (eight groups, one "::") are checked by ``ipaddress`` after this match.
_IPV6 = r"[0-9A-Fa-f:]{2,39}"
# §2.1: ports are decimal 0-65535 without leading zeros (range checked after).
_PORT = r"(?:0|[1-9][0-9]{0,4})"
V1_TCP4 = re.compile(rf"PROXY TCP4 ({_IPV4}) ({_IPV4}) ({_PORT}) ({_PORT})\r\n")
V1_TCP6 = re.compile(rf"PROXY TCP6 ({_IPV6}) ({_IPV6}) ({_PORT}) ({_PORT})\r\n")
# §2.1: after UNKNOWN the receiver must ignore anything before the CRLF.
V1_UNKNOWN = re.compile(r"PROXY UNKNOWN(?: [^\r\n]*)?\r\n")

# §2.2: the 13th byte (version << 4 | command) and the 14th (family << 4 | transport).
V2_VERSION = 0x2
CMD_LOCAL, CMD_PROXY = 0x0, 0x1
AF_UNSPEC, AF_INET, AF_INET6, AF_UNIX = 0x0, 0x1, 0x2, 0x3
T_UNSPEC, T_STREAM, T_DGRAM = 0x0, 0x1, 0x2
# §2.2: the size of the address block for each family.
V2_ADDRESS_SIZE = {AF_UNSPEC: 0, AF_INET: 12, AF_INET6: 36, AF_UNIX: 216}


class ProxyProtocolError(BadRequest):
    """The connection did not start with a valid PROXY header: close it
    without an HTTP response (§2.1: "abort the connection")."""


@dataclass(frozen=True)
class ProxyInfo:
    """What a PROXY header said.

    ``source`` and ``destination`` are ``(address, port)`` of the original TCP
    connection, or ``None`` when the header carries no usable address (v1
    ``UNKNOWN``, v2 ``LOCAL`` or an unspecified, UDP or unix-socket family): the
    spec then says to use the real connection's endpoints.
    """

    version: int
    command: str  # "PROXY", or "LOCAL" (a health check made by the proxy itself)
    protocol: str  # "TCP4", "TCP6" or "UNKNOWN"
    source: tuple[str, int] | None
    destination: tuple[str, int] | None
    tlvs: tuple[tuple[int, bytes], ...] = ()


def parse_proxy_header(buf: bytes | bytearray) -> tuple[ProxyInfo, int] | None:
    """Parse the PROXY header at the start of ``buf``.

    Returns ``(info, consumed)``, or ``None`` when more bytes are needed.
    Raises ``ProxyProtocolError`` when ``buf`` cannot start a valid header.
    """
    if buf[:12] == V2_SIGNATURE[: len(buf)] and len(buf) < 12:
        return None  # could still become either version: wait
    if buf.startswith(V2_SIGNATURE):
        return _parse_v2(buf)
    if buf.startswith(V1_PREFIX) or V1_PREFIX.startswith(bytes(buf)):
        return _parse_v1(buf)
    raise ProxyProtocolError("connection does not start with a PROXY protocol header")


def _parse_v1(buf: bytes | bytearray) -> tuple[ProxyInfo, int] | None:
    lf = buf.find(b"\n", 0, V1_MAX_LINE)
    if lf < 0:
        if len(buf) >= V1_MAX_LINE:
            raise ProxyProtocolError(f"PROXY v1 line longer than {V1_MAX_LINE} bytes")
        if b"\r" in buf[:-1]:
            raise ProxyProtocolError("PROXY v1 line not ended by CRLF")
        return None
    if buf[lf - 1:lf] != b"\r":
        raise ProxyProtocolError("PROXY v1 line not ended by CRLF")
    end = lf - 1
    line = bytes(buf[: end + 2]).decode("latin-1")
    if V1_UNKNOWN.fullmatch(line):
        return ProxyInfo(1, "PROXY", "UNKNOWN", None, None), end + 2
    match = V1_TCP4.fullmatch(line)
    family = "TCP4"
    if match is None:
        match = V1_TCP6.fullmatch(line)
        family = "TCP6"
    if match is None:
        raise ProxyProtocolError(f"malformed PROXY v1 line {line[:end][:60]!r}")
    src, dst, sport, dport = match.groups()
    if family == "TCP6":
        src, dst = _ipv6_text(src), _ipv6_text(dst)
    source = (src, _port(sport))
    destination = (dst, _port(dport))
    return ProxyInfo(1, "PROXY", family, source, destination), end + 2


def _ipv6_text(text: str) -> str:
    try:
        return str(ipaddress.IPv6Address(text))
    except ValueError:
        raise ProxyProtocolError(f"invalid IPv6 address {text!r} in PROXY v1 line") from None


def _port(text: str) -> int:
    port = int(text)
    if port > 65535:
        raise ProxyProtocolError(f"port {port} out of range in PROXY v1 line")
    return port


def _parse_v2(buf: bytes | bytearray) -> tuple[ProxyInfo, int] | None:
    if len(buf) < V2_FIXED:
        return None
    ver_cmd, fam, length = buf[12], buf[13], struct.unpack_from("!H", buf, 14)[0]
    version, command = ver_cmd >> 4, ver_cmd & 0x0F
    if version != V2_VERSION:
        raise ProxyProtocolError(f"PROXY v2 header with version {version}")
    if command not in (CMD_LOCAL, CMD_PROXY):
        raise ProxyProtocolError(f"PROXY v2 header with unknown command {command:#x}")
    family, transport = fam >> 4, fam & 0x0F
    if family not in V2_ADDRESS_SIZE or transport not in (T_UNSPEC, T_STREAM, T_DGRAM):
        raise ProxyProtocolError(f"PROXY v2 header with invalid family/protocol byte {fam:#04x}")
    if length > V2_MAX_PAYLOAD:
        raise ProxyProtocolError(f"PROXY v2 header of {V2_FIXED + length} bytes (limit "
                                 f"{V2_FIXED + V2_MAX_PAYLOAD})")
    total = V2_FIXED + length
    if len(buf) < total:
        return None
    payload = bytes(buf[V2_FIXED:total])
    if command == CMD_LOCAL:
        # §2.2: use the real endpoints and discard the block, family included.
        return ProxyInfo(2, "LOCAL", "UNKNOWN", None, None), total
    if family == AF_UNSPEC:
        # §2.2: whatever follows is address information of no known format.
        return ProxyInfo(2, "PROXY", "UNKNOWN", None, None), total
    size = V2_ADDRESS_SIZE[family]
    if length < size:
        raise ProxyProtocolError(f"PROXY v2 address block of {length} bytes, {size} needed")
    tlvs = _parse_tlvs(payload[size:])
    if transport != T_STREAM or family == AF_UNIX:
        # §2.2: valid combinations a receiver does not support fall back to
        # UNSPEC: the connection is accepted with its real endpoints.
        return ProxyInfo(2, "PROXY", "UNKNOWN", None, None, tlvs), total
    if family == AF_INET:
        src, dst = str(ipaddress.IPv4Address(payload[0:4])), str(ipaddress.IPv4Address(payload[4:8]))
        protocol = "TCP4"
    else:
        src, dst = str(ipaddress.IPv6Address(payload[0:16])), str(ipaddress.IPv6Address(payload[16:32]))
        protocol = "TCP6"
    sport, dport = struct.unpack_from("!HH", payload, size - 4)
    return ProxyInfo(2, "PROXY", protocol, (src, sport), (dst, dport), tlvs), total


def _parse_tlvs(data: bytes) -> tuple[tuple[int, bytes], ...]:
    """§2.2: type (1 byte), length (2 bytes), value. Each must fit exactly."""
    tlvs = []
    pos = 0
    while pos < len(data):
        if len(data) - pos < 3:
            raise ProxyProtocolError("truncated TLV in PROXY v2 header")
        kind, size = data[pos], struct.unpack_from("!H", data, pos + 1)[0]
        if pos + 3 + size > len(data):
            raise ProxyProtocolError("TLV longer than the PROXY v2 header")
        tlvs.append((kind, data[pos + 3:pos + 3 + size]))
        pos += 3 + size
    return tuple(tlvs)


def proxy_environ(info: ProxyInfo) -> dict[str, str]:
    """The environ keys Gunicorn sets for a PROXY connection, when it carried addresses."""
    if info.source is None or info.destination is None:
        return {}
    return {
        "PROXY_PROTOCOL": info.protocol,
        "PROXY_ADDR": info.destination[0],
        "PROXY_PORT": str(info.destination[1]),
    }
