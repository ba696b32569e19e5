# A listening socket as the master and the workers see it. The master creates
# listeners (prefork/sockets.py); workers only use them, so this lives below
# both layers. With --reuse-port the master's socket for a TCP address is only
# a reservation (bound, not listening); each worker binds a socket of its own
# to the same address right after the fork (``own_listeners``) and listens on
# it once its application has loaded (``start_listening``).
from __future__ import annotations

import os
import socket
import struct
import sys

from .settings import Address


class Listener:
    """A listening socket and what it was made from."""

    def __init__(self, sock: socket.socket, address: Address, owned_path: str = "",
                 per_worker: bool = False) -> None:
        self.sock = sock
        self.address = address
        # --reuse-port: ``sock`` is the master's reservation; every worker
        # listens on a socket of its own (``own_listeners``).
        self.per_worker = per_worker
        # A unix socket file we created and must remove on exit, and its inode:
        # a file that another server has since put there is not ours to remove.
        self.owned_path = owned_path
        self._inode = _inode(owned_path) if owned_path else None

    def fileno(self) -> int:
        return self.sock.fileno()

    @property
    def family(self) -> int:
        return self.sock.family

    def url(self) -> str:
        if self.sock.family == socket.AF_UNIX:
            return f"unix:{self.sock.getsockname() or self.address.path}"
        host, port = self.sock.getsockname()[:2]
        if self.sock.family == socket.AF_INET6:
            host = f"[{host}]"
        return f"http://{host}:{port}"

    def close(self) -> None:
        self.sock.close()

    def remove_file(self) -> None:
        if self.owned_path and _inode(self.owned_path) == self._inode:
            try:
                os.unlink(self.owned_path)
            except OSError:
                pass


def _inode(path: str) -> int | None:
    try:
        return os.lstat(path).st_ino
    except OSError:
        return None


DEFER_ACCEPT: int | None = getattr(socket, "TCP_DEFER_ACCEPT", None)


def tune_listener(sock: socket.socket, defer_accept: bool = True) -> None:
    """Options set on every TCP listener; Linux and the BSDs copy them to
    each accepted connection, so they cost nothing per connection.

    TCP_NODELAY: a response written in several pieces (a streamed or chunked
    body, the head before a file) must not wait for the client's ACK of the
    previous piece. With Nagle's algorithm it does, and the client delays
    that ACK by up to 40 ms: a three-piece streamed response on a kept-alive
    connection took 44 ms instead of 70 µs (docs/performance.md).

    TCP_DEFER_ACCEPT (Linux): a connection enters the accept queue only once
    the client's first bytes have arrived, so a worker never accepts a
    connection and then waits for its request, and a client that connects
    and sends nothing does not hold a sync worker for its first second or so
    (then the kernel hands it over, and the read deadline applies). 0-11 %
    more requests/s with wrk (docs/performance.md). HTTP, TLS and the PROXY
    protocol all have the client speak first. Not on a worker's own
    --reuse-port socket (``defer_accept`` false): connections it holds back
    are invisible to the drain before that socket closes, and would be reset.
    """
    if sock.family in (socket.AF_INET, socket.AF_INET6):
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if DEFER_ACCEPT is not None and defer_accept:
            sock.setsockopt(socket.IPPROTO_TCP, DEFER_ACCEPT, 1)


# The beat-interval timeouts that the master sets on its listeners (again on a
# reload) and accepted connections inherit: a worker copies them from the
# reservation to its own socket.
_TIMEOUTS = (socket.SO_RCVTIMEO, socket.SO_SNDTIMEO)
_TIMEVAL_SIZE = struct.calcsize("@ll")


def own_listeners(listeners: list[Listener]) -> list[Listener]:
    """In a worker: its own socket for each per-worker listener, bound to the
    reservation's address but not listening yet (``start_listening``).

    Called before the worker drops privileges: the kernel lets a socket join
    an ``SO_REUSEPORT`` group only if it belongs to the same user as the
    sockets already in it, and a port below 1024 may need root. Until it
    listens, after the application has loaded, the socket takes no
    connections: none wait on a worker that is still loading or fails to.
    The worker's copy of the reservation is closed; the master keeps its own.
    """
    result = []
    for listener in listeners:
        if not listener.per_worker:
            result.append(listener)
            continue
        reservation = listener.sock
        sock = bind_beside(reservation)
        try:
            tune_listener(sock, defer_accept=False)
            for option in _TIMEOUTS:
                value = reservation.getsockopt(socket.SOL_SOCKET, option, _TIMEVAL_SIZE)
                sock.setsockopt(socket.SOL_SOCKET, option, value)
            sock.setblocking(reservation.getblocking())
        except OSError:
            sock.close()
            raise
        reservation.close()
        result.append(Listener(sock, listener.address, per_worker=True))
    return result


def bind_beside(reservation: socket.socket) -> socket.socket:
    """A new socket bound with SO_REUSEPORT to a --reuse-port reservation's
    address (the port it got for port 0), not listening yet."""
    sock = socket.socket(reservation.family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        if reservation.family == socket.AF_INET6:
            v6only = reservation.getsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY)
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, v6only)
        sock.bind(reservation.getsockname())
    except OSError:
        sock.close()
        raise
    return sock


def start_listening(listeners: list[Listener], backlog: int) -> None:
    """In a worker whose application has loaded: listen on its own sockets."""
    for listener in listeners:
        if listener.per_worker:
            listener.sock.listen(backlog)


def needs_poll(listeners: list[Listener]) -> bool:
    """Whether workers must poll instead of blocking in accept().

    One listener on Linux: block in accept() (the kernel wakes one worker, and
    SO_RCVTIMEO bounds the wait). Several listeners, or another kernel where
    accept() may ignore SO_RCVTIMEO: the listeners are non-blocking and polled.
    """
    return len(listeners) > 1 or not sys.platform.startswith("linux")
