# Sockets the master serves itself (the metrics endpoint, the control socket)
# from its own loop. The loop must never wait on a client, so everything here
# is non-blocking: the arbiter polls the listening socket and the clients'
# sockets together with its wake-up pipe, and calls ``handle`` for the ones
# that are ready. Each connection carries one request and one reply, has a
# deadline for both, and a bounded buffer; beyond ``max_clients`` new
# connections are closed at once. No application code and no request of the
# application ever passes here.
from __future__ import annotations

import errno
import os
import select
import socket
import stat
import time
from collections.abc import Callable

from .logs import Logger
from .settings import Address

READ_SIZE = 65536
# After its reply, a connection is half-closed and what the client still sends
# is read and dropped, until it closes or this long: closing a socket with
# unread data resets it, and the reset can destroy the reply before the client
# has read it.
LINGER = 1.0


class EndpointError(Exception):
    """The endpoint's socket cannot be created; the message is one line."""


class AddressBusy(EndpointError):
    """Another process (perhaps the master this one replaces) serves there."""


class Client:
    __slots__ = ("sock", "data", "reply", "deadline", "lingering")

    def __init__(self, sock: socket.socket, deadline: float) -> None:
        self.sock = sock
        self.data = bytearray()
        self.reply: memoryview | None = None
        self.deadline = deadline
        self.lingering = False  # the reply is sent; waiting for the client to close


class Endpoint:
    """A listening socket served without blocking: one request, one reply per connection."""

    max_clients = 16
    deadline = 10.0  # seconds from accept to the last byte of the reply
    max_request = 16384
    accept_burst = 16  # connections accepted per turn of the loop at most

    def __init__(self, sock: socket.socket, name: str, log: Logger, owned_path: str = "") -> None:
        sock.setblocking(False)
        self.sock = sock
        self.name = name
        self.log = log
        self.owned_path = owned_path
        self._inode = os.lstat(owned_path).st_ino if owned_path else 0
        self.clients: dict[int, Client] = {}

    # --- what the loop asks

    def poll_events(self) -> list[tuple[int, int]]:
        events = [(self.sock.fileno(), select.POLLIN)]
        for fd, client in self.clients.items():
            writing = client.reply is not None and not client.lingering
            events.append((fd, select.POLLOUT if writing else select.POLLIN))
        return events

    def next_deadline(self) -> float:
        return min((c.deadline for c in self.clients.values()), default=0.0)

    def handle(self, fd: int, now: float) -> None:
        """``fd`` (the listener or a client of this endpoint) is ready."""
        if fd == self.sock.fileno():
            self._accept(now)
            return
        client = self.clients.get(fd)
        if client is None:
            return
        try:
            if client.lingering:
                if not client.sock.recv(READ_SIZE):
                    self._drop(fd)
            elif client.reply is not None:
                self._send(fd, client)
            else:
                self._receive(fd, client)
        except OSError:
            self._drop(fd)

    def expire(self, now: float) -> None:
        for fd, client in list(self.clients.items()):
            if now >= client.deadline:
                if not client.lingering:
                    self.log.debug("%s: closing a client that took longer than %g s", self.name,
                                   self.deadline)
                self._drop(fd)

    def close_in_child(self) -> None:
        """In a freshly forked worker: let go of the descriptors, touch nothing else."""
        for client in self.clients.values():
            client.sock.close()
        self.clients.clear()
        self.sock.close()

    def close(self) -> None:
        """At the master's exit: close everything, and remove our socket file."""
        self.close_in_child()
        if self.owned_path:
            try:
                if os.lstat(self.owned_path).st_ino == self._inode:
                    os.unlink(self.owned_path)
            except OSError:
                pass

    # --- for subclasses

    def admit(self, sock: socket.socket) -> bytes | None:
        """None to serve a new connection, or a reply to send before closing it."""
        return None

    def answer(self, data: bytes) -> bytes | None:
        """The reply to a complete request in ``data``, or None to read more."""
        raise NotImplementedError

    def too_large(self) -> bytes:
        return b""

    def failed(self) -> bytes:
        """The reply when ``answer`` raised."""
        return b""

    # --- connections

    def _accept(self, now: float) -> None:
        for _ in range(self.accept_burst):
            try:
                sock, _ = self.sock.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:  # out of descriptors: the next turn tries again
                if exc.errno not in (errno.ECONNABORTED, errno.EPROTO):
                    self.log.warning("%s: accept() failed: %s", self.name, exc)
                    return
                continue
            sock.setblocking(False)
            if len(self.clients) >= self.max_clients:
                sock.close()
                continue
            client = Client(sock, now + self.deadline)
            self.clients[sock.fileno()] = client
            try:
                refusal = self.admit(sock)
            except OSError:
                self._drop(sock.fileno())
                continue
            if refusal is not None:
                self._start_reply(sock.fileno(), client, refusal)

    def _receive(self, fd: int, client: Client) -> None:
        data = client.sock.recv(READ_SIZE)
        if not data:
            self._drop(fd)
            return
        client.data += data
        if len(client.data) > self.max_request:
            self._start_reply(fd, client, self.too_large())
            return
        try:
            reply = self.answer(bytes(client.data))
        except Exception as exc:  # never let a bug here take the master down
            self.log.traceback(f"{self.name}: error answering a request", exc)
            reply = self.failed()
        if reply is not None:
            self._start_reply(fd, client, reply)

    def _start_reply(self, fd: int, client: Client, reply: bytes) -> None:
        client.reply = memoryview(reply)
        try:
            self._send(fd, client)
        except OSError:
            self._drop(fd)

    def _send(self, fd: int, client: Client) -> None:
        reply = client.reply
        assert reply is not None
        while reply:
            try:
                sent = client.sock.send(reply)
            except (BlockingIOError, InterruptedError):
                client.reply = reply
                return
            reply = reply[sent:]
        client.sock.shutdown(socket.SHUT_WR)
        client.lingering = True
        client.deadline = min(client.deadline, time.monotonic() + LINGER)

    def _drop(self, fd: int) -> None:
        client = self.clients.pop(fd, None)
        if client is not None:
            client.sock.close()


# --- making the listening sockets


def listen_tcp(address: Address, backlog: int = 64) -> socket.socket:
    try:
        infos = socket.getaddrinfo(address.host, address.port, type=socket.SOCK_STREAM,
                                   flags=socket.AI_PASSIVE)
    except socket.gaierror as exc:
        raise EndpointError(f"cannot resolve {address}: {exc.strerror}") from None
    family, kind, proto, _, sockaddr = infos[0]
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(sockaddr)
        sock.listen(backlog)
    except OSError as exc:
        sock.close()
        if exc.errno == errno.EADDRINUSE:
            raise AddressBusy(f"cannot listen on {address}: {exc.strerror}") from None
        raise EndpointError(f"cannot listen on {address}: {exc.strerror}") from None
    return sock


def listen_unix(path: str, mode: int, backlog: int = 64) -> socket.socket:
    """A unix socket created with exactly ``mode``, safely.

    A file already at ``path`` is replaced only if it is a socket nobody
    answers on (left by a dead server); anything else (a regular file, a
    symlink, a live socket) is an error. The socket is created with the mode
    through the umask, so it never exists with a wider one, and ``bind()``
    itself never follows a symlink nor replaces an existing name: a file that
    appears at ``path`` after the check makes the bind fail, never succeed
    somewhere else.
    """
    _remove_stale(path)
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    old = os.umask(0o777 & ~mode)
    try:
        sock.bind(path)
    except OSError as exc:
        sock.close()
        if exc.errno == errno.EADDRINUSE:
            raise EndpointError(f"cannot create {path}: something was created there meanwhile") from None
        raise EndpointError(f"cannot create {path}: {exc.strerror}") from None
    finally:
        os.umask(old)
    try:
        sock.listen(backlog)
    except OSError as exc:
        sock.close()
        raise EndpointError(f"cannot listen on {path}: {exc.strerror}") from None
    return sock


def _remove_stale(path: str) -> None:
    try:
        mode = os.lstat(path).st_mode
    except FileNotFoundError:
        return
    except OSError as exc:
        raise EndpointError(f"cannot use {path}: {exc.strerror}") from None
    if not stat.S_ISSOCK(mode):
        raise EndpointError(f"cannot create {path}: a file that is not a socket is there")
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    probe.setblocking(False)
    try:
        probe.connect(path)
    except (BlockingIOError, InterruptedError):
        raise AddressBusy(f"cannot create {path}: another server is listening there") from None
    except OSError:
        os.unlink(path)  # nobody answers: left behind by a dead server
        return
    finally:
        probe.close()
    raise AddressBusy(f"cannot create {path}: another server is listening there")


def serve_poll(endpoints: list[Endpoint], extra: list[int], timeout: float,
               clock: Callable[[], float] = time.monotonic) -> list[int]:
    """Wait up to ``timeout`` seconds for the endpoints and the ``extra``
    descriptors; serve the endpoints that are ready; return the ready extras."""
    poller = select.poll()
    owners: dict[int, Endpoint] = {}
    for fd in extra:
        poller.register(fd, select.POLLIN)
    for endpoint in endpoints:
        for fd, mask in endpoint.poll_events():
            poller.register(fd, mask)
            owners[fd] = endpoint
    try:
        events = poller.poll(max(timeout, 0.0) * 1000)
    except InterruptedError:
        events = []
    now = clock()
    ready = []
    for fd, _ in events:
        owner = owners.get(fd)
        if owner is None:
            ready.append(fd)
        else:
            owner.handle(fd, now)
    for endpoint in endpoints:
        endpoint.expire(now)
    return ready
