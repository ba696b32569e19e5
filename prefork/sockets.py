# Listening sockets: created (or adopted) exactly once by the master, before
# any worker is forked, and inherited by every worker. A unix socket file left
# by a dead server is removed; one that a live server still answers on is not.
from __future__ import annotations

import errno
import os
import socket
import stat

from .listener import Listener, needs_poll
from .settings import Address

__all__ = ["BindError", "Listener", "needs_poll"]


class BindError(Exception):
    """A listening socket could not be created; the message is one line."""


def create_listener(address: Address, backlog: int) -> Listener:
    if address.kind == "fd":
        return adopt_fd(address.fd, address, backlog)
    if address.kind == "unix":
        return _bind_unix(address, backlog)
    return _bind_tcp(address, backlog)


def adopt_fd(fd: int, address: Address, backlog: int) -> Listener:
    """Use an already-open socket (from a supervisor or a parent process)."""
    try:
        sock = socket.socket(fileno=fd)
    except OSError as exc:
        raise BindError(f"fd://{fd}: not an open socket ({exc.strerror})") from None
    if sock.type != socket.SOCK_STREAM:
        sock.detach()
        raise BindError(f"fd://{fd}: not a stream socket")
    if not sock.getsockopt(socket.SOL_SOCKET, socket.SO_ACCEPTCONN):
        sock.listen(backlog)
    sock.set_inheritable(True)
    return Listener(sock, address)


def _bind_tcp(address: Address, backlog: int) -> Listener:
    try:
        infos = socket.getaddrinfo(address.host, address.port, type=socket.SOCK_STREAM,
                                   flags=socket.AI_PASSIVE)
    except socket.gaierror as exc:
        raise BindError(f"cannot resolve {address}: {exc.strerror}") from None
    family, kind, proto, _, sockaddr = infos[0]
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(sockaddr)
        sock.listen(backlog)
    except OSError as exc:
        sock.close()
        hint = " (is another server running there?)" if exc.errno == errno.EADDRINUSE else ""
        raise BindError(f"cannot listen on {address}: {exc.strerror}{hint}") from None
    sock.set_inheritable(True)
    return Listener(sock, address)


def _bind_unix(address: Address, backlog: int) -> Listener:
    path = address.path
    _remove_stale_unix_socket(path)
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.bind(path)
        sock.listen(backlog)
    except OSError as exc:
        sock.close()
        raise BindError(f"cannot listen on unix:{path}: {exc.strerror}") from None
    sock.set_inheritable(True)
    return Listener(sock, address, owned_path=path)


def _remove_stale_unix_socket(path: str) -> None:
    try:
        mode = os.lstat(path).st_mode
    except FileNotFoundError:
        return
    if not stat.S_ISSOCK(mode):
        raise BindError(f"cannot listen on unix:{path}: a file that is not a socket is there")
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        probe.connect(path)
    except OSError:
        os.unlink(path)  # nobody answers: left behind by a dead server
        return
    finally:
        probe.close()
    raise BindError(f"cannot listen on unix:{path}: another server is listening there")


def close_listeners(listeners: list[Listener], unlink: bool) -> None:
    for listener in listeners:
        listener.close()
        if unlink:
            listener.remove_file()


def tune_listener(sock: socket.socket) -> None:
    """Options set on every TCP listener; Linux and the BSDs copy them to
    each accepted connection, so they cost nothing per connection.

    TCP_NODELAY: a response written in several pieces (a streamed or chunked
    body, the head before a file) must not wait for the client's ACK of the
    previous piece. With Nagle's algorithm it does, and the client delays
    that ACK by up to 40 ms: a three-piece streamed response on a kept-alive
    connection took 44 ms instead of 70 µs (docs/performance.md).
    """
    if sock.family in (socket.AF_INET, socket.AF_INET6):
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


def _same_address(sock: socket.socket, address: Address) -> bool:
    name = sock.getsockname()
    if address.kind == "unix":
        return sock.family == socket.AF_UNIX and name == address.path
    if address.kind == "fd":
        return sock.fileno() == address.fd
    if sock.family not in (socket.AF_INET, socket.AF_INET6):
        return False
    try:
        infos = socket.getaddrinfo(address.host, address.port, sock.family, socket.SOCK_STREAM,
                                   flags=socket.AI_PASSIVE)
    except socket.gaierror:
        return False
    return any(info[4][:2] == name[:2] for info in infos)


def inherit_listeners(fds: list[int], addresses: list[Address], backlog: int) -> list[Listener]:
    """Listeners for ``addresses``, reusing the inherited sockets ``fds`` where
    they match (a binary upgrade hands its sockets to the new master) and
    binding the rest. Inherited sockets that match no address are closed."""
    inherited = []
    for fd in fds:
        try:
            inherited.append(socket.socket(fileno=fd))
        except OSError:
            continue
    listeners: list[Listener] = []
    try:
        for address in addresses:
            match = next((s for s in inherited if _same_address(s, address)), None)
            if match is None:
                listeners.append(create_listener(address, backlog))
                continue
            inherited.remove(match)
            match.set_inheritable(True)
            owned = address.path if address.kind == "unix" else ""
            listeners.append(Listener(match, address, owned_path=owned))
    except BindError:
        close_listeners(listeners, unlink=False)
        raise
    finally:
        for sock in inherited:
            sock.close()
    return listeners
