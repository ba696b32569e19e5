# The sync worker: one connection at a time. With one listener it blocks in
# accept() on the shared socket, so the kernel wakes exactly one idle worker
# per connection; the socket's SO_RCVTIMEO (set by the master) makes that
# wait, and every read from a client, return at least once per beat interval
# so the worker can beat, notice a dead master, and enforce read deadlines.
# With several listeners (or off Linux) it polls them instead. With
# --reuse-port the listeners are the worker's own sockets (workers/base.py),
# so "the listen queue" below is this worker's own queue.
#
# Keep-alive: a sync worker holding an idle connection leaves every other
# client waiting, so it keeps a connection only while nobody else waits.
# When a response head is written, a zero-timeout poll of the listeners
# decides: a pending connection means "Connection: close". A kept connection
# is then never closed unannounced while its client may be sending: only by
# the client, after --keep-alive seconds idle, or after a response that said
# "close". A retiring worker (HUP, TTOU, WINCH, --max-requests) says "close"
# on every response from then on, and waits out the keep-alive window of a
# kept connection, serving a request that arrives in it with "close". Only a
# full stop (TERM) closes idle kept connections at once. See docs/workers.md.
#
# Every decision about the connection itself (persistence, pipelining,
# 100-continue, framing, draining) is the connection core's
# (http/connection.py); this module does the I/O and the scheduling.
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

from ..http.connection import CLOSE, CONTINUE, DRAIN, LINGER, NEXT
from ..http.connection import Connection as HTTPConnection
from ..http.errors import HTTPError, IncompleteBody, RequestTimeout
from ..http.request import Request
from ..http.response import InvalidResponse
from ..listener import Listener, needs_poll
from ..wsgi import (
    EMPTY_INPUT,
    EmptyInput,
    Input,
    Response,
    SendFile,
    build_environ,
    run_app,
)
from .base import StopWaiting, Worker
from .ingress import ClientConnection, ConnectionRejected, Ingress, describe_peer
from .io import (
    RECV_SIZE,
    BodyReader,
    ClientGone,
    Sender,
    StalledReader,
    acceptor,
    close,
    error_response,
    file_sender,
    guarded_sendall,
    linger,
)

# BSD kernels give accepted sockets the listener's O_NONBLOCK; Linux does not.
_ACCEPTED_NONBLOCKING = not sys.platform.startswith("linux")


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
        self.header_timeout = self.read_timeout
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
        deadline = (self.draining or time.monotonic()) + self.cfg.graceful_timeout
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
                client = self.ingress.open(conn, addr, self.header_timeout)
            except ConnectionRejected as exc:
                self.log.debug("connection from %s closed: %s", describe_peer(addr), exc)
                return
            conn = client.sock  # a TLS connection replaces (detaches) the accepted socket
            self.serve_connection(listener, client)
        except StalledReader as exc:
            self.slow_clients.dropped("stopped reading")
            self.log.debug("connection closed: %s", exc)
        except ClientGone as exc:
            self.log.debug("connection closed: %s", exc)
        except OSError as exc:  # reading a head: the client reset or timed out
            if exc.errno not in (errno.EPIPE, errno.ECONNRESET, errno.ENOTCONN, errno.EAGAIN):
                self.log.debug("connection error: %s", exc)
        except Exception as exc:
            self.log.traceback("error handling a connection", exc)
        finally:
            close(conn)

    def serve_connection(self, listener: Listener, client: ClientConnection) -> None:
        """Serve requests on ``client`` until one of the sides ends it."""
        conn = client.sock
        remote = client.remote
        base = self.bases[listener]
        if client.environ:  # TLS and PROXY keys: the same for every request on it
            base = {**base, **client.environ}
        # Vectored writes and sendfile go straight to the socket: not under TLS.
        sender = None if client.is_tls else Sender(conn, self.slot.beat, self.read_timeout)
        sendfile = None if sender is None else file_sender(conn, sender)
        send = guarded_sendall(conn) if sender is None else sender.sendall
        forwarding = client if client.trusted else None
        http = HTTPConnection(self.limits, self.parse_head)
        while True:
            try:
                req = self.read_request(conn, http)
            except HTTPError as exc:
                self.reject(conn, exc, remote, None)
                return
            if req is None:
                return
            step = self.serve_request(conn, http, req, base, remote, send, sendfile, forwarding,
                                      sender)
            if step == NEXT:
                if not http.idle or self.wait_for_next(conn):
                    continue
                return
            if step == LINGER:
                self._linger(conn)
            return

    def read_request(self, conn: Connection, http: HTTPConnection) -> Request | None:
        """Read until a whole head is parsed; None if the client sent nothing.

        Usually one ``recv`` brings the whole head and this returns at once;
        anything slower goes through ``_read_head_slowly`` and its deadline.
        """
        req = http.pending()
        if req is not None:
            return req
        try:
            data = conn.recv(RECV_SIZE)
        except BlockingIOError:  # nothing for a beat interval
            return self._read_head_slowly(conn, http)
        if not data:
            http.eof()
            return None
        req = http.receive(data)
        if req is not None:
            return req
        return self._read_head_slowly(conn, http)

    def _read_head_slowly(self, conn: Connection, http: HTTPConnection) -> Request | None:
        timeout = self.header_timeout
        deadline = time.monotonic() + timeout
        beat = self.slot.beat
        while True:
            beat()
            try:
                data = conn.recv(RECV_SIZE)
            except BlockingIOError:
                data = None
            if data:
                req = http.receive(data)
                if req is not None:
                    return req
            elif data is not None:  # the client closed the connection
                http.eof()
                return None
            elif http.idle and not self.alive:
                return None  # an idle connection, and we are stopping
            if time.monotonic() > deadline:
                if http.idle:
                    return None
                self.slow_clients.dropped("request head timeouts (408)")
                raise RequestTimeout(f"request head not received within {timeout:g} s")

    def wait_for_next(self, conn: Connection) -> bool:
        """Idle between requests on a kept connection: True when the client
        sends first, False when its --keep-alive window ends or on a full stop.

        A retiring worker waits out the window too: the client may be sending
        its next request right now, and the response to it will say "close".
        """
        poller = select.poll()
        poller.register(conn.fileno(), select.POLLIN)
        deadline = time.monotonic() + self.keepalive
        slice_ms = self.beat_interval * 1000
        while not self.draining:
            remaining = (deadline - time.monotonic()) * 1000
            if remaining <= 0:
                return False
            try:
                self.waiting = True
                events = poller.poll(min(remaining, slice_ms)) if not self.draining else []
                self.waiting = False
            except StopWaiting:
                break
            if events:
                return True
            self.on_idle()
        # A full stop: a request already on its way is still served.
        return bool(poller.poll(0))

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
        http: HTTPConnection,
        req: Request,
        base: dict[str, Any],
        remote: tuple[str, str],
        send: Callable[[bytes], None],
        sendfile: SendFile | None = None,
        forwarding: ClientConnection | None = None,
        sender: Sender | None = None,
    ) -> int:
        """Serve one request; what the connection does next (``http.connection``).

        ``forwarding`` is the connection when its peer is a trusted proxy.
        """
        self.request_started(req)
        body = http.start(req, self.keepalive > 0 and self.alive)
        resp = Response(req, http, send, sendfile, self.server_lines, self.nobody_waiting,
                        sender.sendmsg if sender is not None else None)
        inp: Input | EmptyInput = EMPTY_INPUT
        if body is not None:
            inp = resp.input = self._body_input(conn, http, body, send)
        started = time.time() if self.log.access_enabled else 0.0
        environ: dict[str, Any] = {}
        try:
            environ = build_environ(base, req, remote, inp)
            if forwarding is not None:
                self.ingress.identify(forwarding, req, environ)
            run_app(self.app, environ, resp)  # type: ignore[arg-type]
        except ClientGone:
            raise
        except HTTPError as exc:
            self.reject(conn, inp.error or exc, remote, req, resp.head_sent)
            return CLOSE
        except SystemExit as exc:
            self._app_exited(conn, req, resp, exc)
            return CLOSE
        except Exception as exc:
            if inp.error is not None:  # the app failed because the body did
                self.reject(conn, inp.error, remote, req, resp.head_sent)
            else:
                self.app_failed(conn, req, resp, exc)
            return CLOSE
        finally:
            self.request_finished(req, environ, resp)
            if started:
                self.log.access(req, resp, environ, started, time.time() - started)
        if resp.problem:
            self.log.info("%r: %s; closing the connection", req.line, resp.problem)
        step = http.after_response()
        if step == DRAIN:
            assert isinstance(inp, Input)
            try:
                drained = inp.drain(http.drain_budget)
            except HTTPError:
                drained = False
            step = http.body_drained(drained)
        return step

    def _body_input(self, conn: Connection, http: HTTPConnection, body: Any,
                    send: Callable[[bytes], None]) -> Input:
        """``wsgi.input`` for a request with a body."""
        def send_continue() -> None:
            if http.continue_now():
                send(CONTINUE)
        reader = BodyReader(conn.recv, self.slot.beat, self.read_timeout)
        return Input(reader, body, http.take_buffer(), send_continue)

    # --- errors

    def app_failed(self, conn: Connection, req: Request, resp: Response, exc: Exception) -> None:
        """The application raised (anything, OSError included): log it with its
        traceback; answer 500 if no head was sent, else cut the response."""
        self.log.traceback(f"error handling request {req.line!r}", exc)
        if not resp.head_sent:
            self.send_error(conn, 500, "Internal Server Error")

    def _app_exited(self, conn: Connection, req: Request, resp: Response, exc: SystemExit) -> None:
        """``sys.exit()`` in a request: answer 500, then this worker exits and is replaced."""
        self.log.error("the application called sys.exit(%r) while handling %r; worker %s "
                       "exits and is replaced", exc.code, req.line, self.pid)
        self.alive = False
        self.app_exit = True
        if not resp.head_sent:
            self.send_error(conn, 500, "Internal Server Error")

    def reject(
        self,
        conn: Connection,
        exc: HTTPError,
        remote: tuple[str, str],
        req: Request | None,
        head_sent: bool = False,
    ) -> None:
        """Log a failed request in one line, answer it if still possible, and linger."""
        what = repr(req.line) if req is not None else "request"
        who = f"{remote[0]}:{remote[1]}" if remote[1] else "unix socket"
        if isinstance(exc, InvalidResponse):
            self.log.error("invalid response to %s: %s", what, exc.detail)
        elif isinstance(exc, (IncompleteBody, RequestTimeout)):
            if isinstance(exc, RequestTimeout) and req is not None:
                self.slow_clients.dropped("request body timeouts (408)")
            self.log.debug("%s from %s: %s %s (%s)", what, who, exc.status, exc.reason, exc.detail)
        else:
            self.log.info("rejected %s from %s: %s %s (%s)", what, who, exc.status, exc.reason, exc.detail)
        if not head_sent:
            self.send_error(conn, exc.status, exc.reason)

    def send_error(self, conn: Connection, status: int, reason: str) -> None:
        """A short response with ``Connection: close``, then a lingering close."""
        try:
            conn.sendall(error_response(status, reason))
        except OSError:
            return
        self._linger(conn)

    def _linger(self, conn: Connection) -> None:
        linger(conn, self.slot.beat, self.beat_interval)


__all__ = ["SyncWorker", "acceptor"]
