# What happens to a connection between accept() and its first request, and
# who its client is: the PROXY protocol header (when the peer must send one),
# the TLS handshake (when prefork terminates TLS), and, for each request, the
# client address and scheme from the proxy headers of trusted peers. The
# worker makes one ``Ingress`` when it starts and calls ``open`` after each
# accept() and ``client`` for each request; every rule lives here or in the
# sans-IO modules it calls, so a worker class needs only those two calls.
#
# The PROXY header is read with MSG_PEEK and then exactly its own length is
# consumed, so the bytes after it (a TLS ClientHello, or the request) stay in
# the socket for whoever reads next.
from __future__ import annotations

import _socket
import select
import socket
import time
from collections.abc import Callable, Mapping
from typing import Any

from ..http.forwarded import UNIX_PEER_ADDR, Client, ForwardedRules, Peer, TrustedPeers
from ..http.proxy import (
    V2_FIXED,
    V2_MAX_PAYLOAD,
    ProxyInfo,
    ProxyProtocolError,
    parse_proxy_header,
    proxy_environ,
)
from ..http.request import Request
from ..settings import Config
from ..tls import HandshakeFailed, handshake, tls_environ
from ..wsgi import set_client

PEEK_SIZE = V2_FIXED + V2_MAX_PAYLOAD
# A PROXY header is sent in one segment; when one arrives in pieces anyway, the
# peek is repeated at this pace until the rest is there.
FRAGMENT_WAIT = 0.005


class ConnectionRejected(Exception):
    """Close the connection without a response; ``str()`` says why, in one line."""


class ClientConnection:
    """An accepted connection, ready for its first request."""

    __slots__ = ("sock", "peer", "proxy", "environ", "remote", "trusted")

    def __init__(self, sock: Any, peer: Peer, proxy: ProxyInfo | None, environ: dict[str, Any],
                 trusted: bool = False) -> None:
        self.sock = sock  # a plain socket, or a tls.TLSConnection
        self.peer = peer  # (address, port), after any PROXY header; None on a unix socket
        self.proxy = proxy  # the PROXY header, if one was read
        self.environ = environ  # per-connection environ keys (TLS, PROXY_*)
        # REMOTE_ADDR and REMOTE_PORT unless a trusted proxy's headers say otherwise
        self.remote: tuple[str, str] = peer if peer is not None else (UNIX_PEER_ADDR, "")
        self.trusted = trusted  # the peer is a proxy whose forwarding headers count

    @property
    def is_tls(self) -> bool:
        return "HTTPS" in self.environ


class Ingress:
    """The deployment rules of one worker, prepared once."""

    def __init__(self, cfg: Config, ssl_context: Any, beat: Callable[[], None], interval: float) -> None:
        self.ssl_context = ssl_context
        self.beat = beat
        self.interval = interval
        self.scheme = "https" if ssl_context is not None else "http"
        self.rules = ForwardedRules(cfg.forwarded_allow_ips, cfg.secure_scheme_headers)
        self.proxy_peers = TrustedPeers(cfg.proxy_allow_ips) if cfg.proxy_protocol else None
        self.forwarding_keys = forwarding_keys(cfg.secure_scheme_headers)

    def open(self, sock: _socket.socket, addr: Any, timeout: float) -> ClientConnection:
        """Read the PROXY header and complete the TLS handshake, within ``timeout``.

        Raises ConnectionRejected when the connection must be closed unanswered.
        """
        deadline = time.monotonic() + timeout
        peer = peer_of(addr)
        proxy = None
        environ: dict[str, Any] = {}
        if self.proxy_peers is not None and self.proxy_peers.trusts(peer):
            proxy = self._read_proxy_header(sock, deadline)
            if proxy.source is not None:
                peer = (proxy.source[0], str(proxy.source[1]))
            environ.update(proxy_environ(proxy))
        if self.ssl_context is not None:
            try:
                sock = handshake(self.ssl_context, sock, max(deadline - time.monotonic(), 0.001),
                                 self.beat, self.interval)
            except HandshakeFailed as exc:
                raise ConnectionRejected(exc.detail) from None
            environ.update(tls_environ(sock))
        return ClientConnection(sock, peer, proxy, environ, self.rules.trusted.trusts(peer))

    def client(self, conn: ClientConnection, headers: list[tuple[str, str]]) -> Client:
        """REMOTE_ADDR, REMOTE_PORT and wsgi.url_scheme for a request on ``conn``.

        Raises an ``HTTPError`` (400) when a trusted proxy's scheme headers disagree.
        """
        return self.rules.client(conn.peer, headers, self.scheme)

    def identify(self, conn: ClientConnection, req: Request, environ: dict[str, Any]) -> None:
        """Let the forwarding headers of a trusted proxy (``conn.trusted``) set
        REMOTE_ADDR, REMOTE_PORT and wsgi.url_scheme in ``environ``.

        Raises an ``HTTPError`` (400) when the proxy's scheme headers disagree.
        """
        keys = self.forwarding_keys
        if keys is not None and environ.keys().isdisjoint(keys):
            return  # the common case, a local client without a proxy: one set operation
        set_client(environ, self.rules.client(conn.peer, req.headers, self.scheme), req.host)

    def _read_proxy_header(self, sock: _socket.socket, deadline: float) -> ProxyInfo:
        seen = -1
        while True:
            try:
                data = sock.recv(PEEK_SIZE, socket.MSG_PEEK)
            except BlockingIOError:  # SO_RCVTIMEO: a beat interval without data
                data = None
                self.beat()
            if data == b"":
                raise ConnectionRejected("closed before sending its PROXY header")
            if data:
                try:
                    parsed = parse_proxy_header(data)
                except ProxyProtocolError as exc:
                    raise ConnectionRejected(exc.detail) from None
                if parsed is not None:
                    info, used = parsed
                    _consume(sock, used)
                    return info
            if time.monotonic() > deadline:
                raise ConnectionRejected("no complete PROXY header in time")
            if data is not None and len(data) == seen:
                if _peer_hung_up(sock):
                    raise ConnectionRejected("closed before sending its PROXY header")
                self.beat()
                time.sleep(FRAGMENT_WAIT)
            seen = len(data) if data is not None else seen


def forwarding_keys(secure_scheme_headers: Mapping[str, str]) -> frozenset[str] | None:
    """The environ keys of the headers that forwarding rules read, or None when a
    header could be missing from the environ (a name with "_" may be dropped there)."""
    names = ["X-Forwarded-For", "Forwarded", *secure_scheme_headers]
    if any("_" in name or name.lower() in ("content-type", "content-length") for name in names):
        return None
    return frozenset("HTTP_" + name.upper().replace("-", "_") for name in names)


def _consume(sock: _socket.socket, count: int) -> None:
    """Read and drop ``count`` bytes that a peek has shown are there."""
    while count > 0:
        data = sock.recv(count)
        if not data:
            raise ConnectionRejected("closed inside its PROXY header")
        count -= len(data)


def _peer_hung_up(sock: _socket.socket) -> bool:
    """Whether the peer has shut down its side (Linux: POLLRDHUP), though bytes are unread."""
    rdhup = getattr(select, "POLLRDHUP", 0)
    if not rdhup:
        return False
    poller = select.poll()
    poller.register(sock, rdhup)
    return bool(poller.poll(0))


def peer_of(addr: Any) -> Peer:
    """``(address, port)`` of a TCP peer as accept() returns it; None on a unix socket."""
    if isinstance(addr, tuple):
        return addr[0], str(addr[1])
    return None


def describe_peer(addr: Any) -> str:
    """``address:port`` of a TCP peer, for the log."""
    peer = peer_of(addr)
    return f"{peer[0]}:{peer[1]}" if peer is not None else "unix socket"
