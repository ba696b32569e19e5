# The sync worker: one connection at a time. With one listener it blocks in
# accept() on the shared socket, so the kernel wakes exactly one idle worker
# per connection; the socket's SO_RCVTIMEO (set by the master) makes that
# wait, and every read from a client, return at least once per beat interval
# so the worker can beat, notice a dead master, and enforce read deadlines.
# With several listeners (or off Linux) it polls them instead. With
# --reuse-port the listeners are the worker's own sockets (workers/base.py),
# so "the listen queue" below is this worker's own queue.
#
# Keep-alive: a sync worker holding an idle connection would leave every other
# client waiting, so it keeps a connection only while nobody else is waiting.
# When a response is written, a zero-timeout poll of the listeners decides:
# a pending connection means "Connection: close". After a kept response the
# worker waits up to --keep-alive seconds on the client and the listeners at
# once; the next request is served if the client speaks first, and the idle
# connection is closed as soon as a new connection arrives. See docs/http.md.
from __future__ import annotations

import errno
import fcntl
import os
import select
import socket
import sys
import time
from _socket import socket as Connection
from collections.abc import Callable
from itertools import starmap
from typing import Any

from .. import SERVER_SOFTWARE
from ..http import response as http_response
from ..http.body import ChunkedBody, LengthBody
from ..http.errors import HTTPError, IncompleteBody, RequestTimeout
from ..http.request import Request
from ..http.response import InvalidResponse
from ..listener import Listener, needs_poll
from ..wsgi import (
    DRAIN_BUDGET,
    EMPTY_INPUT,
    EmptyInput,
    Input,
    Response,
    SendFile,
    build_environ,
    run_app,
)
from .base import StopWaiting, Worker, answered_with
from .ingress import ClientConnection, ConnectionRejected, Ingress, describe_peer

CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"
RECV_SIZE = 65536
# After an error response, or when closing with request bytes still unread,
# the worker stops sending (FIN) and reads and discards what the client still
# sends, up to this long and this much, before it closes: closing a socket
# with unread data makes the kernel send a RST, and a RST can make the client
# drop the response it has not read yet (RFC 9112 §9.6).
LINGER_SECONDS = 1.0
# A kept connection is not closed for a newcomer sooner than this after its
# response was sent: a client busy with a sequence of requests sends the next
# one within this time, and closing under it would lose that request.
KEEPALIVE_GRACE = 0.02
LINGER_BYTES = 256 * 1024
# BSD kernels give accepted sockets the listener's O_NONBLOCK; Linux does not.
_ACCEPTED_NONBLOCKING = not sys.platform.startswith("linux")
_MSG_MORE = getattr(socket, "MSG_MORE", 0)
# sendfile errors that mean "not for this pair of descriptors": fall back.
_SENDFILE_UNSUPPORTED = {errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP, errno.ENOTSOCK}


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


class Sender:
    """Writes for one plain connection: beats while a slow reader catches up,
    and gives up once the client has taken nothing for ``stall`` seconds.

    SO_SNDTIMEO (set on the listener, inherited) makes a blocked send return
    after one beat interval, so a client that stops reading is a closed
    connection, not a worker killed as "stuck".
    """

    __slots__ = ("_sock", "_beat", "_stall")

    def __init__(self, sock: Connection, beat: Callable[[], None], stall: float) -> None:
        self._sock = sock
        self._beat = beat
        self._stall = stall

    def sendall(self, data: bytes, flags: int = 0) -> None:
        try:
            sent = self._sock.send(data, flags)
        except BlockingIOError:
            sent = 0
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
            view = view[sent:]
            progress = time.monotonic()
            self._beat()

    def sendmsg(self, buffers: tuple[bytes, ...]) -> int:
        """One vectored write; 0 if the client took nothing for a beat interval."""
        try:
            return self._sock.sendmsg(buffers)
        except BlockingIOError:
            self._beat()
            return 0

    def waited(self, progress: float) -> None:
        """A write made no progress for a beat interval: beat, or give up."""
        self._beat()
        if time.monotonic() - progress > self._stall:
            raise TimeoutError(f"the client read nothing for {self._stall:g} s")


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
            self._beat()
            return data


class SyncWorker(Worker):
    """Serves one connection at a time; keeps it only while nobody else waits."""

    supports = frozenset({"tls", "proxy_protocol"})

    def run(self) -> None:
        self.prepare()
        if not needs_poll(self.listeners):
            self._accept_loop(self.listeners[0])
        else:
            self._poll_loop()
        self._drain_backlog()

    def prepare(self) -> None:
        """Set up what serving needs, once per worker (``run`` calls it)."""
        self.bases = {listener: self.environ_base(listener) for listener in self.listeners}
        # Reading a request head, and a request body, must each be done
        # within this many seconds (docs/http.md: "Deadlines").
        self.read_timeout = self.cfg.timeout or 30.0
        self.keepalive = float(self.cfg.keepalive)
        self.listener_fds = [listener.fileno() for listener in self.listeners]
        self._pending = select.poll()
        for fd in self.listener_fds:
            self._pending.register(fd, select.POLLIN)
        self._by_fd = {listener.fileno(): listener for listener in self.listeners}
        self.nobody_waiting: Callable[[], bool] = self._nobody_waiting
        self.ingress = Ingress(self.cfg, self.ssl_context, self.slot.beat, self.beat_interval)

    # --- waiting for connections

    def _accept_loop(self, listener: Listener) -> None:
        # The TERM handler ends a blocked accept() by raising StopWaiting. If
        # it ran after accept4() returned but before the result was stored,
        # the connection would be lost, and reset when the worker exits. So
        # the C-level list.extend calls _accept and stores its (fd, address)
        # without returning to the interpreter loop, where handlers run, in
        # between: a connection taken just before a TERM is always in taken.
        raw_accept = listener.sock._accept  # type: ignore[attr-defined]
        family = int(listener.sock.family)
        once = ((),)
        taken: list[tuple[int, Any]] = []
        while self.alive:
            try:
                self.waiting = True
                if self.alive:
                    taken.extend(starmap(raw_accept, once))
                self.waiting = False
            except BlockingIOError:  # SO_RCVTIMEO: a beat interval without work
                self.waiting = False
                self.on_idle()
                if fcntl.fcntl(listener.fileno(), fcntl.F_GETFL) & os.O_NONBLOCK:
                    self._wait_readable()  # another master made the shared socket non-blocking
                continue
            except StopWaiting:
                pass
            except OSError as exc:  # out of descriptors or memory, a reset before accept
                self.waiting = False
                self._accept_failed(exc)
            while taken:
                fd, addr = taken.pop()
                self.handle(listener, Connection(family, socket.SOCK_STREAM, 0, fd), addr)

    def _wait_readable(self) -> None:
        try:
            self.waiting = True
            if self.alive:
                self._pending.poll(self.beat_interval * 1000)
            self.waiting = False
        except StopWaiting:
            pass

    def _poll_loop(self) -> None:
        socks = {listener.fileno(): (listener, acceptor(listener)) for listener in self.listeners}
        poller = select.poll()
        for fd in socks:
            poller.register(fd, select.POLLIN)
        timeout_ms = int(self.beat_interval * 1000)
        while self.alive:
            try:
                self.waiting = True
                events = poller.poll(timeout_ms) if self.alive else []
                self.waiting = False
            except StopWaiting:
                break
            if not events:
                self.on_idle()
                continue
            for fd, _ in events:
                listener, accept = socks[fd]
                try:
                    conn, addr = accept()
                except (BlockingIOError, InterruptedError):
                    continue  # another worker took it
                except OSError as exc:
                    self._accept_failed(exc)
                    continue
                self.handle(listener, conn, addr)
            self.slot.beat()

    def _accept_failed(self, exc: OSError) -> None:
        """A failed accept() is not the worker's end: log it, and if it is a lack
        of resources (EMFILE...), pause so as not to spin on a readable socket."""
        self.log.warning("accept() failed: %s", exc)
        self.on_idle()
        if exc.errno in (errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM):
            time.sleep(0.1)

    def _drain_backlog(self) -> None:
        """Before exiting, serve the connections already waiting in a listen queue.

        On a full stop (TERM), every listener's queue. On a retirement (HUP),
        only this worker's own queues (--reuse-port): nobody else accepts from
        them, and closing a listening socket resets the connections still in
        its queue. The shared queues are left to the other workers. Until the
        queues are empty, and for at most half the graceful timeout, so that a
        stream of new arrivals cannot keep a stopping worker forever."""
        listeners = self.listeners if self.draining else [
            listener for listener in self.listeners if listener.per_worker]
        if not listeners:
            return
        pending = select.poll()
        for listener in listeners:
            pending.register(listener.fileno(), select.POLLIN)
            if listener.per_worker:
                listener.sock.setblocking(False)  # ours alone: readable means accept() succeeds
        deadline = (self.draining or time.monotonic()) + self.cfg.graceful_timeout / 2
        try:
            while time.monotonic() < deadline:
                ready = pending.poll(0)
                if not ready:
                    return
                for fd, _ in ready:
                    listener = self._by_fd[fd]
                    try:
                        # Readable, so this returns at once, unless another worker
                        # took the connection from a shared queue; then
                        # SO_RCVTIMEO bounds the wait.
                        conn, addr = acceptor(listener)()
                    except BlockingIOError:
                        continue
                    except OSError as exc:  # out of descriptors: pause, do not spin
                        self._accept_failed(exc)
                        continue
                    self.handle(listener, conn, addr)
        finally:
            # At once after the queue was seen empty: a connection the kernel
            # queues between that look and this close is reset (unless
            # net.ipv4.tcp_migrate_req moves it to another worker's socket).
            for listener in listeners:
                if listener.per_worker:
                    listener.close()

    # --- one connection

    def handle(self, listener: Listener, conn: Connection, addr: Any) -> None:
        try:
            if _ACCEPTED_NONBLOCKING:
                conn.setblocking(True)
            try:  # the PROXY header and the TLS handshake, if any
                client = self.ingress.open(conn, addr, self.read_timeout)
            except ConnectionRejected as exc:
                self.log.debug("connection from %s closed: %s", describe_peer(addr), exc)
                return
            conn = client.sock  # a TLS connection replaces (detaches) the accepted socket
            self.serve_connection(listener, client)
        except OSError as exc:
            if exc.errno not in (errno.EPIPE, errno.ECONNRESET, errno.ENOTCONN, errno.EAGAIN):
                self.log.debug("connection error: %s", exc)
        except Exception as exc:
            self.log.traceback("error handling a connection", exc)
        finally:
            conn.close()

    def serve_connection(self, listener: Listener, client: ClientConnection) -> None:
        """Serve requests on ``client`` until one of the sides ends it."""
        conn = client.sock
        remote = client.remote
        base = self.bases[listener]
        if client.environ:  # TLS and PROXY keys: the same for every request on it
            base = {**base, **client.environ}
        # Vectored writes and sendfile go straight to the socket: not under TLS.
        sender = None if client.is_tls else Sender(conn, self.slot.beat, self.read_timeout)
        sendfile = None if sender is None else self._sendfile(conn, sender)
        forwarding = client if client.trusted else None
        buf = b""
        while True:
            try:
                parsed = self.read_head(conn, buf)
            except HTTPError as exc:
                self.reject(conn, exc, remote, None)
                return
            if parsed is None:
                return
            req, buf = parsed
            keep, buf = self.serve_request(conn, req, buf, base, remote, sendfile, forwarding, sender)
            if not keep:
                return
            # An empty line after a body (RFC 9112 §2.2 lets old clients send
            # one) is not the start of a request: idle as usual.
            buf = buf.lstrip(b"\r\n") if buf[:1] == b"\r" else buf
            if not buf and not self.wait_for_next(conn):
                return

    def read_head(self, conn: Connection, buf: bytes) -> tuple[Request, bytes] | None:
        """Read until a whole head is parsed; None if the client sent nothing.

        Usually one ``recv`` brings the whole head and this returns at once;
        anything slower goes through ``_read_head_slowly`` and its deadline.
        """
        if not buf:
            try:
                buf = conn.recv(RECV_SIZE)
                if not buf:
                    return None
            except BlockingIOError:  # nothing for a beat interval
                pass
        if buf:
            parsed = self.parse_head(buf, self.limits)
            if parsed is not None:
                req, used = parsed
                return req, buf[used:]
        return self._read_head_slowly(conn, buf)

    def _read_head_slowly(self, conn: Connection, first: bytes) -> tuple[Request, bytes] | None:
        timeout = self.read_timeout
        deadline = time.monotonic() + timeout
        beat = self.slot.beat
        limits = self.limits
        parse_head = self.parse_head
        buf = bytearray(first)  # appends in amortised constant time
        line_ended = b"\n" in first
        while True:
            beat()
            try:
                data = conn.recv(RECV_SIZE)
            except BlockingIOError:
                data = None
            if data:
                buf += data
                # Parse again only when a line has ended, or when the request
                # line or the head has grown too long: a head trickling in a
                # byte at a time then costs linear time, not quadratic.
                newline = b"\n" in data
                line_ended = line_ended or newline
                too_long = len(buf) > limits.max_head or (
                    not line_ended and 0 < limits.request_line < len(buf))
                if newline or too_long:
                    parsed = parse_head(buf, limits)
                    if parsed is not None:
                        req, used = parsed
                        return req, bytes(buf[used:])
            elif data is not None:  # the client closed the connection
                if buf.strip(b"\r\n"):
                    raise IncompleteBody("connection closed inside the request head")
                return None
            elif not buf and not self.alive:
                return None  # an idle connection, and we are stopping
            if time.monotonic() > deadline:
                if not buf.strip(b"\r\n"):
                    return None
                raise RequestTimeout(f"request head not received within {timeout:g} s")

    def wait_for_next(self, conn: Connection) -> bool:
        """Idle between requests: True when the client sends first; False on
        timeout, on stop, or when a new connection is waiting."""
        # The listeners' poll object, with the client added for this wait:
        # no poll object is built per request.
        poller = self._pending
        client = conn.fileno()
        poller.register(client, select.POLLIN)
        try:
            return self._wait_for_client(conn, poller)
        finally:
            poller.unregister(client)

    def _wait_for_client(self, conn: Connection, poller: select.poll) -> bool:
        client = conn.fileno()
        now = time.monotonic()
        deadline = now + self.keepalive
        grace_end = now + min(KEEPALIVE_GRACE, self.keepalive)
        slice_ms = self.beat_interval * 1000
        while self.alive:
            remaining = (deadline - time.monotonic()) * 1000
            if remaining <= 0:
                return False
            events = []
            try:
                self.waiting = True
                if self.alive:
                    events = poller.poll(min(remaining, slice_ms))
                self.waiting = False
            except StopWaiting:
                return False
            if not events:
                self.on_idle()
                continue
            # The client first: it may already have sent its next request,
            # whose response will say "close" if someone is still waiting.
            if any(fd == client for fd, _ in events):
                return True
            return self._client_speaks(conn, grace_end)
        return False

    def _client_speaks(self, conn: Connection, grace_end: float) -> bool:
        """A new connection is waiting: give the kept client what is left of
        its grace period to send its next request, else close the idle
        connection. A client that just read its response may be sending its
        next request right now; closing under it would lose that request."""
        wait_ms = (grace_end - time.monotonic()) * 1000
        if wait_ms > 0:
            poller = select.poll()
            poller.register(conn.fileno(), select.POLLIN)
            if poller.poll(wait_ms):
                return True
        try:  # a last look, just before the close
            conn.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT)
        except BlockingIOError:
            return False
        return True  # data, or the client's EOF: read_head sorts it out

    def _nobody_waiting(self) -> bool:
        """The keep-alive test made when a response head is written: one
        poll(0) of the listeners (0.26 µs; TCP_INFO's queue length costs
        0.34 µs, docs/performance.md). With --reuse-port these are the
        worker's own sockets, so it is this worker's queue that counts: a
        connection waiting for another worker is no reason to close."""
        return self.alive and not self._pending.poll(0)

    def serve_request(
        self,
        conn: Connection,
        req: Request,
        leftover: bytes,
        base: dict[str, Any],
        remote: tuple[str, str],
        sendfile: SendFile | None = None,
        forwarding: ClientConnection | None = None,
        sender: Sender | None = None,
    ) -> tuple[bool, bytes]:
        """Serve one request; (whether the connection may carry another, its bytes so far).

        ``forwarding`` is the connection when its peer is a trusted proxy.
        """
        self.request_started(req)
        keep = req.keep_alive and self.keepalive > 0 and self.alive
        send = sender.sendall if sender is not None else conn.sendall
        resp = Response(req, send, sendfile, keep, self.server_lines, self.nobody_waiting,
                        sender.sendmsg if sender is not None else None)
        inp: Input | EmptyInput = EMPTY_INPUT
        if req.chunked or req.content_length:
            inp = resp.input = self._body_input(conn, req, resp, leftover)
        started = time.time() if self.log.access_enabled else 0.0
        environ: dict[str, Any] = {}
        try:
            environ = build_environ(base, req, remote, inp)
            if forwarding is not None:
                self.ingress.identify(forwarding, req, environ)
            self.identify_request(environ, resp, forwarding is not None)
            run_app(self.app, environ, resp)  # type: ignore[arg-type]
        except HTTPError as exc:
            answered_with(resp, inp.error or exc)
            self.reject(conn, inp.error or exc, remote, req, resp.head_sent)
            return False, b""
        except OSError:
            raise
        except Exception as exc:
            answered_with(resp, inp.error)
            if inp.error is not None:  # the app failed because the body did
                self.reject(conn, inp.error, remote, req, resp.head_sent)
            else:
                self.log.traceback(f"error handling request {req.line!r}", exc)
                if not resp.head_sent:
                    self.send_error(conn, 500, "Internal Server Error")
            return False, b""
        finally:
            self.request_finished(req, environ, resp)
            if started:
                self.log.access(req, resp, environ, started, time.time() - started)
        return self._after_response(conn, req, resp, inp, leftover)

    def _body_input(self, conn: Connection, req: Request, resp: Response, leftover: bytes) -> Input:
        """``wsgi.input`` for a request with a body."""
        body = ChunkedBody(self.limits) if req.chunked else LengthBody(req.content_length)
        send_continue = None
        if req.expect_continue:
            def send_continue() -> None:
                if not resp.head_sent:
                    conn.sendall(CONTINUE)
        reader = BodyReader(conn.recv, self.slot.beat, self.read_timeout)
        return Input(reader, body, leftover, send_continue)

    def _after_response(
        self, conn: Connection, req: Request, resp: Response, inp: Input | EmptyInput,
        leftover: bytes,
    ) -> tuple[bool, bytes]:
        if resp.problem:
            self.log.info("%r: %s; closing the connection", req.line, resp.problem)
        if inp is EMPTY_INPUT:  # no body: what followed the head is the next request
            if not resp.keep_alive:
                if leftover:
                    self._linger(conn)
                return False, b""
            return True, leftover
        assert isinstance(inp, Input)
        body = inp.body
        if resp.keep_alive and not body.done:
            try:
                drained = inp.drain(DRAIN_BUDGET)
            except HTTPError:
                drained = False
            if not drained:
                self._linger(conn)
                return False, b""
        if not resp.keep_alive:
            if not body.done or body.leftover:
                self._linger(conn)
            return False, b""
        return True, inp.leftover()

    # --- errors

    def reject(
        self,
        conn: Connection,
        exc: HTTPError,
        remote: tuple[str, str],
        req: Request | None,
        head_sent: bool = False,
    ) -> None:
        """Log a failed request in one line, answer it if still possible, and linger."""
        if not head_sent:
            self.request_rejected(exc)
        what = repr(req.line) if req is not None else "request"
        who = f"{remote[0]}:{remote[1]}" if remote[1] else "unix socket"
        if isinstance(exc, InvalidResponse):
            self.log.error("invalid response to %s: %s", what, exc.detail)
        elif isinstance(exc, (IncompleteBody, RequestTimeout)):
            self.log.debug("%s from %s: %s %s (%s)", what, who, exc.status, exc.reason, exc.detail)
        else:
            self.log.info("rejected %s from %s: %s %s (%s)", what, who, exc.status, exc.reason, exc.detail)
        if not head_sent:
            self.send_error(conn, exc.status, exc.reason)

    def send_error(self, conn: Connection, status: int, reason: str) -> None:
        """A short response with ``Connection: close``, then a lingering close."""
        try:
            conn.sendall(http_response.simple_response(status, reason, f"{reason}\n", SERVER_SOFTWARE))
        except OSError:
            return
        self._linger(conn)

    def _linger(self, conn: Connection) -> None:
        """Half-close, then discard what the client still sends, briefly."""
        try:
            conn.shutdown(socket.SHUT_WR)
            poller = select.poll()
            poller.register(conn.fileno(), select.POLLIN)
            deadline = time.monotonic() + LINGER_SECONDS
            budget = LINGER_BYTES
            while budget > 0:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return
                if not poller.poll(min(remaining, self.beat_interval) * 1000):
                    self.slot.beat()
                    continue
                data = conn.recv(RECV_SIZE)
                if not data:
                    return
                budget -= len(data)
        except OSError:
            pass

    # --- sendfile

    def _sendfile(self, conn: Connection, sender: Sender) -> SendFile:
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
                    raise
                progress = time.monotonic()
                if n == 0:
                    break
                sent += n
            return sent

        return sendfile


__all__ = ["SyncWorker"]
