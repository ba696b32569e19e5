# Who the client is, when a reverse proxy stands between it and us. Strategy:
# the connection's peer decides everything. From a peer that is not a trusted
# proxy nothing in the request can change REMOTE_ADDR or wsgi.url_scheme (the
# headers still reach the application, as plain headers). From a trusted peer,
# the forwarding chain is read from the right (the hop our peer added) towards
# the left, skipping hops that are themselves listed as trusted proxies; the
# first other hop is the client. Entries further left were written by that
# client and are never believed.
#
# Which headers: X-Forwarded-For and the secure-scheme headers (Gunicorn's
# ``secure_scheme_headers``, X-Forwarded-Proto by default) win over RFC 7239's
# Forwarded, because nginx, HAProxy, cloud load balancers and Kubernetes
# ingresses set the former and pass a client's Forwarded header on untouched;
# Forwarded is used only when the request has no X-Forwarded-For (for the
# address) or no secure-scheme header (for the scheme).
from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable, Mapping
from typing import NamedTuple

from .errors import BadRequest

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
Network = ipaddress.IPv4Network | ipaddress.IPv6Network
Peer = tuple[str, str] | None  # (address, port) of a TCP peer; None on a unix socket

# What REMOTE_ADDR says for a unix-socket peer that did not forward a client
# address: the peer is a process on this machine, and applications expect an IP.
UNIX_PEER_ADDR = "127.0.0.1"

# RFC 7239 §4: Forwarded = 1#forwarded-element
#   forwarded-element = [ forwarded-pair ] *( ";" [ forwarded-pair ] )
#   forwarded-pair = token "=" value ; value = token / quoted-string
_TOKEN = r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+"
_QUOTED = r'"(?:[\t !#-\[\]-~\x80-\xff]|\\[\t !-~\x80-\xff])*"'
# RFC 7239 §6: node = nodename [ ":" node-port ]; an IPv6 nodename is in brackets.
# X-Forwarded-For entries are bare addresses, sometimes with a port, in the same forms.
NODE = re.compile(r"\[([0-9A-Fa-f:.]+)\](?::([0-9]{1,5}))?|([0-9.]+)(?::([0-9]{1,5}))?|([0-9A-Fa-f:.]+)")


class Client(NamedTuple):
    """The client as the application should see it."""

    addr: str  # REMOTE_ADDR
    port: str  # REMOTE_PORT ("" when unknown)
    scheme: str  # wsgi.url_scheme


class ConflictingSchemeHeaders(BadRequest):
    """Two secure-scheme headers from a trusted proxy disagree (Gunicorn answers 400 too)."""


class TrustedPeers:
    """A set of trusted addresses and networks, or everyone (``*``)."""

    def __init__(self, entries: Iterable[str]) -> None:
        entries = list(entries)
        self.everyone = "*" in entries
        self.networks: tuple[Network, ...] = tuple(
            ipaddress.ip_network(e, strict=False) for e in entries if e != "*")
        self._cache: dict[str, bool] = {}

    def trusts(self, peer: Peer) -> bool:
        """Whether a connection from ``peer`` may speak for its clients."""
        if peer is None or self.everyone:
            return True
        return self.lists(peer[0])

    def lists(self, host: str) -> bool:
        """Whether ``host`` is in the explicit list (``*`` lists nobody)."""
        known = self._cache.get(host)
        if known is not None:
            return known
        ip = _ip(host)
        listed = ip is not None and self._contains(ip)
        if len(self._cache) < 1024:
            self._cache[host] = listed
        return listed

    def _contains(self, ip: IPAddress) -> bool:
        if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
            if self._contains(ip.ipv4_mapped):  # an IPv4 client on a dual-stack socket
                return True
        return any(ip in net for net in self.networks if net.version == ip.version)


class ForwardedRules:
    """The trusted proxies and the secure-scheme headers, prepared once per worker."""

    def __init__(self, allow: Iterable[str], secure_scheme_headers: Mapping[str, str]) -> None:
        self.trusted = TrustedPeers(allow)
        self.scheme_headers = {name.lower(): value for name, value in secure_scheme_headers.items()}

    def client(self, peer: Peer, headers: Iterable[tuple[str, str]], scheme: str) -> Client:
        """REMOTE_ADDR, REMOTE_PORT and wsgi.url_scheme for one request.

        ``peer`` is the connection's peer (after any PROXY protocol header),
        ``scheme`` the listener's own ("https" when prefork terminates TLS).
        """
        addr, port = peer if peer is not None else (UNIX_PEER_ADDR, "")
        if not self.trusted.trusts(peer):
            return Client(addr, port, scheme)
        xff: list[str] = []
        forwarded: list[str] = []
        votes: set[bool] = set()
        scheme_headers = self.scheme_headers
        for name, value in headers:
            lname = name.lower()
            if lname == "x-forwarded-for":
                xff.append(value)
            elif lname == "forwarded":
                forwarded.append(value)
            if lname in scheme_headers:
                votes.add(value == scheme_headers[lname])
        if len(votes) > 1:
            raise ConflictingSchemeHeaders("the proxy's secure-scheme headers disagree")
        hop = self._forwarded_hop(forwarded) if forwarded else {}
        node = self._xff_client(xff) if xff else _node(hop.get("for", ""))
        if node is not None:
            addr, port = node
        if votes:
            scheme = "https" if votes.pop() else "http"
        elif hop.get("proto", "").lower() in ("http", "https"):
            scheme = hop["proto"].lower()
        return Client(addr, port, scheme)

    def _client_hop(self, hops: list[str]) -> int:
        """Index of the first hop from the right that is not a listed proxy."""
        for i in range(len(hops) - 1, 0, -1):
            node = _node(hops[i])
            if node is None or not self.trusted.lists(node[0]):
                return i
        return 0

    def _xff_client(self, values: list[str]) -> tuple[str, str] | None:
        if len(values) == 1 and "," not in values[0]:
            return _node(values[0].strip(" \t"))  # one hop, the usual case behind one proxy
        hops = [h for h in (e.strip(" \t") for v in values for e in v.split(",")) if h]
        return _node(hops[self._client_hop(hops)]) if hops else None

    def _forwarded_hop(self, values: list[str]) -> dict[str, str]:
        """The Forwarded element that describes the client's hop."""
        elements = forwarded_elements(",".join(values))
        if not elements:
            return {}
        return elements[self._client_hop([e.get("for", "") for e in elements])]


_FORWARDED_ITEM = re.compile(rf"[ \t]*(?:({_TOKEN})=({_TOKEN}|{_QUOTED})|(;)|(,))")
_QUOTED_PAIR = re.compile(r"\\(.)")


def forwarded_elements(value: str) -> list[dict[str, str]]:
    """RFC 7239 elements, each a dict of lower-cased parameter names to values.

    A malformed header gives no elements at all: it is ignored, never half-believed.
    """
    value = value.strip(" \t")
    elements: list[dict[str, str]] = [{}]
    pos, after_pair = 0, False
    while pos < len(value):
        match = _FORWARDED_ITEM.match(value, pos)
        if match is None:
            return []
        name, raw, _, comma = match.groups()
        if name:
            if after_pair or name.lower() in elements[-1]:
                return []  # two pairs without a separator, or one parameter twice
            if raw.startswith('"'):
                raw = _QUOTED_PAIR.sub(r"\1", raw[1:-1])
            elements[-1][name.lower()] = raw
        elif comma:
            elements.append({})
        after_pair = bool(name)
        pos = match.end()
    return [e for e in elements if e]


_node_cache: dict[str, tuple[str, str] | None] = {}


def _node(text: str) -> tuple[str, str] | None:
    """``(address, port)`` from a hop such as ``192.0.2.1``, ``192.0.2.1:80``,
    ``[2001:db8::1]:443`` or ``2001:db8::1``; None for anything else
    (``unknown``, obfuscated names, garbage)."""
    if text in _node_cache:
        return _node_cache[text]
    node = _parse_node(text)
    if len(_node_cache) >= 4096:
        _node_cache.clear()  # clients come back; a flood of new ones only costs a re-parse
    _node_cache[text] = node
    return node


def _parse_node(text: str) -> tuple[str, str] | None:
    match = NODE.fullmatch(text)
    if match is None:
        return None
    v6, v6port, v4, v4port, bare = match.groups()
    port = v6port or v4port or ""
    if port and int(port) > 65535:
        return None
    try:
        if v4:
            return str(ipaddress.IPv4Address(v4)), port
        return str(ipaddress.IPv6Address(v6 or bare)), port
    except ValueError:
        return None


def _ip(host: str) -> IPAddress | None:
    try:
        return ipaddress.ip_address(host)
    except ValueError:
        return None
