# The sync worker: one connection at a time. With one listener it blocks in
# accept() on the shared socket, so the kernel wakes exactly one idle worker
# per connection; the socket's SO_RCVTIMEO (set by the master) makes that
# wait, and every read from a client, return at least once per beat interval
# so the worker can beat and notice a dead master. With several listeners (or
# off Linux) it polls them instead.
from __future__ import annotations

import errno
import fcntl
import os
import select
import socket
import time
from typing import Any

from ..heartbeat import IDLE
from ..http import response as http_response
from ..http.body import ChunkedBody, LengthBody
from ..http.errors import BadRequest, HTTPError, RequestTimeout
from ..http.request import Request, parse_head
from ..sockets import Listener, needs_poll
from ..wsgi import Input, Response, build_environ, run_app
from .base import StopWaiting, Worker

CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"
# After a response, unread body bytes up to this many are read and discarded
# so the connection can be reused; beyond it the connection is closed.
DRAIN_BUDGET = 256 * 1024


class SyncWorker(Worker):
    """Serves one connection at a time, closing it after each response."""

    def run(self) -> None:
        self.bases = {listener.fileno(): self.environ_base(listener) for listener in self.listeners}
        self.read_timeout = self.cfg.timeout or 30.0
        if not needs_poll(self.listeners):
            self._accept_loop(self.listeners[0])
        else:
            self._poll_loop()
        self._drain_backlog()

    # --- waiting for connections

    def _accept_loop(self, listener: Listener) -> None:
        accept = listener.sock.accept
        while self.alive:
            conn = None
            try:
                self.waiting = True
                if self.alive:
                    conn, addr = accept()
                self.waiting = False
            except BlockingIOError:  # SO_RCVTIMEO: a beat interval without work
                self.waiting = False
                self.on_idle()
                continue
            except StopWaiting:
                pass
            if conn is not None:
                self.handle(listener, conn, addr)

    def _poll_loop(self) -> None:
        socks = {listener.fileno(): listener for listener in self.listeners}
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
                listener = socks[fd]
                try:
                    conn, addr = listener.sock.accept()
                except (BlockingIOError, InterruptedError):
                    continue  # another worker took it
                self.handle(listener, conn, addr)
            self.slot.beat()

    def _drain_backlog(self) -> None:
        """On a full stop, serve connections already waiting in the listen queue."""
        for listener in self.listeners:
            if not fcntl.fcntl(listener.fileno(), fcntl.F_GETFL) & os.O_NONBLOCK:
                continue  # the master keeps serving through this socket
            while True:
                try:
                    conn, addr = listener.sock.accept()
                except (BlockingIOError, InterruptedError):
                    break
                except OSError:
                    break
                self.handle(listener, conn, addr)

    # --- one connection

    def handle(self, listener: Listener, conn: socket.socket, addr: Any) -> None:
        try:
            self.serve_connection(listener, conn, addr)
        except OSError as exc:
            if exc.errno not in (errno.EPIPE, errno.ECONNRESET, errno.ENOTCONN, errno.EAGAIN):
                self.log.debug("connection error: %s", exc)
        except Exception as exc:
            self.log.traceback("error handling a connection", exc)
        finally:
            conn.close()

    def serve_connection(self, listener: Listener, conn: socket.socket, addr: Any) -> None:
        if isinstance(addr, tuple):
            remote = (addr[0], str(addr[1]))
        else:
            remote = ("", "")
        base = self.bases[listener.fileno()]
        buf = b""
        try:
            parsed = self.read_head(conn, buf)
        except HTTPError as exc:
            self.send_error(conn, exc)
            return
        if parsed is None:
            return
        req, buf = parsed
        self.serve_request(conn, req, buf, base, remote)

    def read_head(self, conn: socket.socket, buf: bytes) -> tuple[Request, bytes] | None:
        """Read until a whole head is parsed; None if the client sent nothing."""
        limits = self.limits
        deadline = 0.0
        recv = conn.recv
        while True:
            if buf:
                parsed = parse_head(buf, limits)
                if parsed is not None:
                    req, used = parsed
                    return req, buf[used:]
            now = time.monotonic()
            if not deadline:
                deadline = now + self.read_timeout
            elif now > deadline:
                if not buf:
                    return None
                raise RequestTimeout("request head not received in time")
            try:
                data = recv(65536)
            except BlockingIOError:  # a stall of one beat interval
                self.slot.beat()
                continue
            if not data:
                if buf:
                    raise BadRequest("connection closed inside the request head")
                return None
            buf = buf + data if buf else data

    def serve_request(
        self,
        conn: socket.socket,
        req: Request,
        leftover: bytes,
        base: dict[str, Any],
        remote: tuple[str, str],
    ) -> bool:
        """Serve one request; True if the connection may carry another."""
        self.request_started(req)
        body: LengthBody | ChunkedBody
        body = ChunkedBody(self.limits) if req.chunked else LengthBody(req.content_length)
        send_continue = (lambda: conn.sendall(CONTINUE)) if req.expect_continue else None
        started = time.time() if self.log.access_enabled else 0.0
        resp = Response(req, conn.sendall, self._sendfile(conn), False, self.server_lines)
        environ: dict[str, Any] = {}
        try:
            inp = Input(conn.recv, body, leftover, send_continue)
            resp.input = inp
            environ = build_environ(base, req, remote, inp)
            run_app(self.app, environ, resp)  # type: ignore[arg-type]
        except HTTPError as exc:
            if not resp.head_sent:
                self.send_error(conn, exc)
            return False
        except OSError:
            raise
        except Exception as exc:
            self.log.traceback(f"error handling request {req.line!r}", exc)
            if not resp.head_sent:
                conn.sendall(http_response.simple_response(
                    500, "Internal Server Error", "Internal Server Error\n", http_response_server()))
            return False
        finally:
            self.request_finished(req, environ, resp)
            if started:
                self.log.access(req, resp, environ, started, time.time() - started)
        return False

    def send_error(self, conn: socket.socket, exc: HTTPError) -> None:
        self.log.debug("bad request: %s %s", exc.status, exc.detail)
        try:
            conn.sendall(http_response.simple_response(
                exc.status, exc.reason, f"{exc.reason}\n", http_response_server()))
        except OSError:
            pass

    def _sendfile(self, conn: socket.socket) -> Any:
        out = conn.fileno()

        def sendfile(fd: int, offset: int, count: int) -> int:
            sent = 0
            while sent < count:
                n = os.sendfile(out, fd, offset + sent, count - sent)
                if n == 0:
                    break
                sent += n
            return sent

        return sendfile


def http_response_server() -> str:
    from .. import SERVER_SOFTWARE

    return SERVER_SOFTWARE


__all__ = ["SyncWorker", "IDLE"]
