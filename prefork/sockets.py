# Listening sockets: created (or adopted) exactly once by the master, before
# any worker is forked, and inherited by every worker through fork(). They are
# close-on-exec, so a program the application runs (``os.system("cmd &")``)
# never holds the port after the server has stopped; only a binary upgrade
# makes them inheritable, just before its execve. A unix socket file left by
# a dead server is removed; one that a live server still answers on is not.
from __future__ import annotations

import errno
import os
import socket
import stat
from typing import Any

from .listener import Listener, bind_beside, needs_poll, tune_listener
from .settings import Address

__all__ = ["BindError", "Listener", "needs_poll", "tune_listener"]


class BindError(Exception):
    """A listening socket could not be created; the message is one line."""


def create_listener(address: Address, backlog: int, reuse_port: bool = False) -> Listener:
    """A listener for ``address``; with ``reuse_port``, a TCP address gets a
    reservation for per-worker sockets (``_reserve_tcp``) instead."""
    if address.kind == "fd":
        return adopt_fd(address.fd, address, backlog)
    if address.kind == "unix":
        return _bind_unix(address, backlog)
    if reuse_port:
        return _reserve_tcp(address)
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
    sock.set_inheritable(False)
    return Listener(sock, address)


def check_resolvable(addresses: list[Address]) -> None:
    """``BindError`` for the first TCP address whose host cannot be resolved."""
    for address in addresses:
        if address.kind == "tcp":
            _resolve(address)


def _resolve(address: Address) -> tuple[int, int, int, Any]:
    try:
        infos = socket.getaddrinfo(address.host, address.port, type=socket.SOCK_STREAM,
                                   flags=socket.AI_PASSIVE)
    except socket.gaierror as exc:
        raise BindError(f"cannot resolve {address}: {exc.strerror}") from None
    except UnicodeError:  # the IDNA codec refuses the name: an empty or overlong label
        raise BindError(f"cannot resolve {address}: not a valid host name") from None
    family, kind, proto, _, sockaddr = infos[0]
    return family, kind, proto, sockaddr


def _bind_tcp(address: Address, backlog: int) -> Listener:
    family, kind, proto, sockaddr = _resolve(address)
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(sockaddr)
        sock.listen(backlog)
    except OSError as exc:
        sock.close()
        raise _bind_error(address, exc) from None
    sock.set_inheritable(False)
    return Listener(sock, address)


def _reserve_tcp(address: Address) -> Listener:
    """--reuse-port: bind ``address`` with SO_REUSEPORT, and do not listen.

    A bound socket that is not listening takes no connections (a connect gets
    ECONNREFUSED until a worker listens), yet it holds the address: each
    worker binds its own listening socket to the same address and port.
    Without SO_REUSEADDR no other program can take the port while no worker
    listens; with it, a plain SO_REUSEADDR server could bind and listen there
    (Linux allows that while no socket on the port listens). SO_REUSEADDR is
    only added when the port is held by connections in TIME_WAIT that a
    server without SO_REUSEPORT left behind. Another server of the same user
    that uses SO_REUSEPORT on the same address shares the port with this one,
    as with Gunicorn's --reuse-port: two instances can overlap during a deploy.
    """
    family, kind, proto, sockaddr = _resolve(address)
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        try:
            sock.bind(sockaddr)
        except OSError as exc:
            if exc.errno != errno.EADDRINUSE:
                raise
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind(sockaddr)
    except OSError as exc:
        sock.close()
        raise _bind_error(address, exc) from None
    sock.set_inheritable(False)
    return Listener(sock, address, per_worker=True)


def _listen_beside(reservation: socket.socket, address: Address, backlog: int) -> Listener:
    """A shared listening socket on a --reuse-port reservation's address (it
    joins the port's SO_REUSEPORT group); our copy of the reservation is closed."""
    try:
        sock = bind_beside(reservation)
    except OSError as exc:
        raise _bind_error(address, exc) from None
    finally:
        reservation.close()
    try:
        sock.listen(backlog)
    except OSError as exc:
        sock.close()
        raise _bind_error(address, exc) from None
    sock.set_inheritable(False)
    return Listener(sock, address)


def _bind_error(address: Address, exc: OSError) -> BindError:
    hint = " (is another server running there?)" if exc.errno == errno.EADDRINUSE else ""
    return BindError(f"cannot listen on {address}: {exc.strerror}{hint}")


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
    sock.set_inheritable(False)
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


def _is_reservation(sock: socket.socket) -> bool:
    """Bound with SO_REUSEPORT and not listening: what ``_reserve_tcp`` makes."""
    return (sock.family in (socket.AF_INET, socket.AF_INET6)
            and not sock.getsockopt(socket.SOL_SOCKET, socket.SO_ACCEPTCONN)
            and bool(sock.getsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT)))


def inherit_listeners(fds: list[int], addresses: list[Address], backlog: int,
                      reuse_port: bool = False) -> list[Listener]:
    """Listeners for ``addresses``, reusing the inherited sockets ``fds`` where
    they match (a binary upgrade hands its sockets to the new master) and
    binding the rest. Inherited sockets that match no address are closed.

    An inherited socket that is bound but not listening is the reservation of
    a master that ran with --reuse-port: with ``reuse_port`` it stays one (the
    old workers' sockets and the new ones share the port during the hand-over),
    without, a new socket listening beside it is shared by the workers. Never
    listen() on the inherited reservation itself: the old master holds the
    same socket, and would be left with a listening socket nobody accepts
    from, taking its share of connections, if this master failed."""
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
                listeners.append(create_listener(address, backlog, reuse_port))
                continue
            inherited.remove(match)
            match.set_inheritable(False)
            owned = address.path if address.kind == "unix" else ""
            reservation = _is_reservation(match)
            if reservation and not reuse_port:
                listeners.append(_listen_beside(match, address, backlog))
                continue
            per_worker = reservation
            if not per_worker and not match.getsockopt(socket.SOL_SOCKET, socket.SO_ACCEPTCONN):
                try:
                    match.listen(backlog)
                except OSError as exc:
                    match.close()
                    raise BindError(f"cannot listen on {address}: {exc.strerror}") from None
            listeners.append(Listener(match, address, owned_path=owned, per_worker=per_worker))
    except BindError:
        close_listeners(listeners, unlink=False)
        raise
    finally:
        for sock in inherited:
            sock.close()
    return listeners
