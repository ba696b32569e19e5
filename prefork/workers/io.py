# The I/O every worker class does on a client connection: sending with a
# stall deadline, sendfile, reading a body with a deadline, closing without a
# reset, and answering a protocol error. The decisions (keep or close, what
# to drain, when to send "100 Continue") are the connection core's
# (http/connection.py); this module only carries them out on a socket.
#
# Errors: any OSError from an operation on the client's socket is turned
# into ``ClientGone`` at the place it happens, so that an OSError the
# *application* raises (a missing file, a refused upstream connection) is
# never mistaken for the client going away: that one is the application's
# error, logged with its traceback and answered 500.
from __future__ import annotations

import errno
import os
import select
import socket
import time
from _socket import socket as Connection
from collections.abc import Callable, Iterable
from typing import Any

from .. import SERVER_SOFTWARE
from ..http import response as http_response
from ..http.errors import RequestTimeout
from ..listener import Listener
from ..logs import Logger
from ..wsgi import SendFile

RECV_SIZE = 65536
# After an error response, or when closing with request bytes still unread,
# the worker stops sending (FIN) and reads and discards what the client still
# sends, up to this long and this much, before it closes: closing a socket
# with unread data makes the kernel send a RST, and a RST can make the client
# drop the response it has not read yet (RFC 9112 §9.6).
LINGER_SECONDS = 1.0
LINGER_BYTES = 256 * 1024
# ...but it stops as soon as the client has been silent this long: a client
# that keeps its socket open after our FIN must not hold a worker for the
# whole second (what it sends later is too late to matter).
LINGER_IDLE = 0.2
# How often slow clients that were dropped are summed up in the log.
SLOW_REPORT_INTERVAL = 10.0
_MSG_MORE = getattr(socket, "MSG_MORE", 0)
# sendfile errors that mean "not for this pair of descriptors": fall back.
_SENDFILE_UNSUPPORTED = {errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP, errno.ENOTSOCK}


class ClientGone(Exception):
    """An operation on the client's connection failed: it is closed, reset,
    or the client stopped reading. Never an error of the application."""


def readable(fds: Iterable[int], timeout: float) -> bool:
    """Whether one of ``fds`` becomes readable within ``timeout`` seconds. With
    a poll object of its own, so any thread may ask at any time, and unlike
    select() for descriptors of 1024 and above too."""
    poller = select.poll()
    for fd in fds:
        poller.register(fd, select.POLLIN)
    return bool(poller.poll(timeout * 1000))


def acceptor(listener: Listener) -> Callable[[], tuple[Connection, Any]]:
    """``accept()`` for ``listener``, returning the C-level socket type.

    ``socket.socket.accept`` wraps each connection in the Python subclass and
    converts its family and type to enums on the way: about 2 µs per
    connection, a tenth of the server's own cost for a small request. The
    base type has every method the worker uses (recv, sendall, shutdown,
    close, fileno), all implemented in C.
    """
    raw_accept = listener.sock._accept  # type: ignore[attr-defined]
    family = int(listener.sock.family)

    def accept() -> tuple[Connection, Any]:
        fd, addr = raw_accept()
        return Connection(family, socket.SOCK_STREAM, 0, fd), addr

    return accept


class SlowClients:
    """Counts clients dropped for being slow and sums them up in the log at
    warning level, at most once per ``SLOW_REPORT_INTERVAL``: the first drop
    after a quiet spell is reported at once, a storm of them in one line per
    interval, never a line per client."""

    __slots__ = ("_log", "_counts", "_since", "_reported")

    def __init__(self, log: Logger) -> None:
        self._log = log
        self._counts: dict[str, int] = {}
        self._since = time.monotonic()
        self._reported = self._since - SLOW_REPORT_INTERVAL

    def dropped(self, why: str) -> None:
        self._counts[why] = self._counts.get(why, 0) + 1
        self.report()

    def report(self) -> None:
        """Write the summary if one is due (also called when idle)."""
        if not self._counts:
            return
        now = time.monotonic()
        if now - self._reported < SLOW_REPORT_INTERVAL:
            return
        total = sum(self._counts.values())
        detail = ", ".join(f"{count} {why}" for why, count in sorted(self._counts.items()))
        self._log.warning("%d slow client%s dropped in the last %.0f s (%s)", total,
                          "" if total == 1 else "s", max(1.0, now - self._since), detail)
        self._counts.clear()
        self._since = self._reported = now


class Sender:
    """Writes for one plain connection: beats while a slow reader catches up,
    and gives up once the client has taken nothing for ``stall`` seconds.

    SO_SNDTIMEO (set on the listener, inherited) makes a blocked send return
    after one beat interval, so a client that stops reading is a closed
    connection, not a worker killed as "stuck".
    """

    __slots__ = ("_sock", "beat", "_stall")

    def __init__(self, sock: Connection, beat: Callable[[], None], stall: float) -> None:
        self._sock = sock
        self.beat = beat
        self._stall = stall

    def sendall(self, data: bytes, flags: int = 0) -> None:
        try:
            sent = self._sock.send(data, flags)
        except BlockingIOError:
            sent = 0
        except OSError as exc:
            raise ClientGone(f"send failed: {exc}") from exc
        if sent < len(data):
            with memoryview(data) as view:
                self._send_rest(view[sent:], flags)

    def _send_rest(self, view: memoryview, flags: int) -> None:
        progress = time.monotonic()
        while view:
            try:
                sent = self._sock.send(view, flags)
            except BlockingIOError:
                self.waited(progress)
                continue
            except OSError as exc:
                raise ClientGone(f"send failed: {exc}") from exc
            view = view[sent:]
            progress = time.monotonic()
            self.beat()

    def sendmsg(self, buffers: tuple[bytes, ...]) -> int:
        """One vectored write; 0 if the client took nothing for a beat interval."""
        try:
            return self._sock.sendmsg(buffers)
        except BlockingIOError:
            self.beat()
            return 0
        except OSError as exc:
            raise ClientGone(f"send failed: {exc}") from exc

    def waited(self, progress: float) -> None:
        """A write made no progress for a beat interval: beat, or give up."""
        self.beat()
        if time.monotonic() - progress > self._stall:
            raise StalledReader(f"the client read nothing for {self._stall:g} s")


class StalledReader(ClientGone):
    """The client stopped reading the response."""


def guarded_sendall(sock: Any) -> Callable[[bytes], None]:
    """``sock.sendall`` with its OSErrors as ``ClientGone`` (TLS connections)."""
    sendall = sock.sendall

    def send(data: bytes) -> None:
        try:
            sendall(data)
        except OSError as exc:
            raise ClientGone(f"send failed: {exc}") from exc

    return send


class BodyReader:
    """``recv`` for one request body: a total deadline, and a beat per read.

    The deadline starts at the first read. SO_RCVTIMEO makes a stalled
    ``recv`` raise BlockingIOError once per beat interval, so a client that
    stops sending is noticed; a client that trickles bytes is caught by the
    check before each read.
    """

    __slots__ = ("_recv", "_beat", "_timeout", "_deadline")

    def __init__(self, recv: Callable[[int], bytes], beat: Callable[[], None], timeout: float) -> None:
        self._recv = recv
        self._beat = beat
        self._timeout = timeout
        self._deadline = 0.0

    def __call__(self, size: int) -> bytes:
        deadline = self._deadline
        now = time.monotonic()
        if not deadline:
            self._deadline = deadline = now + self._timeout
        elif now > deadline:
            raise RequestTimeout(f"request body not received within {self._timeout:g} s")
        while True:
            try:
                data = self._recv(size)
            except BlockingIOError:
                self._beat()
                if time.monotonic() > deadline:
                    raise RequestTimeout(
                        f"request body not received within {self._timeout:g} s") from None
                continue
            except OSError as exc:
                raise ClientGone(f"receive failed: {exc}") from exc
            self._beat()
            return data


def file_sender(conn: Connection, sender: Sender) -> SendFile:
    """``sendfile(head, fd, offset, count)`` for one plain connection."""
    out = conn.fileno()

    def sendfile(head: bytes, fd: int, offset: int, count: int) -> int:
        sender.sendall(head, _MSG_MORE if count else 0)
        sent = 0
        progress = time.monotonic()
        while sent < count:
            try:
                n = os.sendfile(out, fd, offset + sent, count - sent)
            except BlockingIOError:  # SO_SNDTIMEO: the client is slow to read
                sender.waited(progress)
                continue
            except OSError as exc:
                if sent == 0 and exc.errno in _SENDFILE_UNSUPPORTED:
                    break  # the caller falls back to reading the file
                raise ClientGone(f"sendfile failed: {exc}") from exc
            progress = time.monotonic()
            if n == 0:
                break
            sent += n
        return sent

    return sendfile


def linger(conn: Any, beat: Callable[[], None], beat_interval: float,
           seconds: float = LINGER_SECONDS) -> None:
    """Half-close, then discard what the client still sends, briefly."""
    try:
        conn.shutdown(socket.SHUT_WR)
        poller = select.poll()
        poller.register(conn.fileno(), select.POLLIN)
        deadline = time.monotonic() + seconds
        budget = LINGER_BYTES
        while budget > 0:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return
            if not poller.poll(min(remaining, beat_interval, LINGER_IDLE) * 1000):
                beat()
                return  # silent: nothing more is coming that would cause a reset
            data = conn.recv(RECV_SIZE)
            if not data:
                return
            budget -= len(data)
    except OSError:
        pass


def close(conn: Any) -> None:
    """Close a client connection so that it ends even if a process the
    application forked still holds the descriptor: ``shutdown`` acts on the
    connection itself, ``close`` only on this process's descriptor."""
    try:
        conn.shutdown(socket.SHUT_WR)
    except OSError:  # the client reset it already
        pass
    conn.close()


def error_response(status: int, reason: str) -> bytes:
    """A short response with ``Connection: close``."""
    return http_response.simple_response(status, reason, f"{reason}\n", SERVER_SOFTWARE)


__all__ = [
    "BodyReader", "ClientGone", "RECV_SIZE", "Sender", "SlowClients", "StalledReader",
    "acceptor", "close", "error_response", "file_sender", "guarded_sendall", "linger",
]
