# Serving requests on one connection, for every worker class: read a head
# (with its deadline), call the application through the WSGI bridge, answer
# protocol and application errors, and carry out what the connection core
# decides next. A worker class adds only the scheduling: the sync worker runs
# one connection at a time in its only thread; the gthread worker runs
# connections on a pool of threads and parks idle ones in a selector. The
# per-connection state that outlives one request, and survives being parked,
# is a ``Client``.
from __future__ import annotations

import errno
import time
from collections.abc import Callable
from typing import Any

from ..http.connection import CLOSE, CONTINUE, DRAIN, LINGER, NEXT
from ..http.connection import Connection as HTTPConnection
from ..http.errors import HTTPError, IncompleteBody, RequestTimeout
from ..http.request import Request
from ..http.response import InvalidResponse
from ..listener import Listener
from ..wsgi import EMPTY_INPUT, EmptyInput, Input, Response, SendFile, build_environ, run_app
from .base import Worker, answered_with
from .ingress import ClientConnection, ConnectionRejected, Ingress, describe_peer
from .io import (
    RECV_SIZE,
    BodyReader,
    ClientGone,
    Sender,
    StalledReader,
    close,
    error_response,
    file_sender,
    guarded_sendall,
    linger,
)


class Client:
    """One client connection and what serving it needs across its requests."""

    __slots__ = ("sock", "listener", "http", "base", "remote", "send", "sendfile", "sendmsg",
                 "forwarding", "thread", "beat", "idle_since", "_sender")

    def __init__(self, worker: ConnectionServer, listener: Listener, conn: ClientConnection,
                 thread: int) -> None:
        sock = conn.sock
        self.sock = sock
        self.listener = listener
        self.http = HTTPConnection(worker.limits, worker.parse_head)
        base = worker.bases[listener]
        if conn.environ:  # TLS and PROXY keys: the same for every request on it
            base = {**base, **conn.environ}
        self.base = base
        self.remote = conn.remote
        self.thread = thread
        self.beat = worker.progress_beat(thread)  # called on each step of I/O progress
        # Vectored writes and sendfile go straight to the socket: not under TLS.
        sender = None if conn.is_tls else Sender(sock, self.beat, worker.read_timeout)
        self._sender = sender
        self.send: Callable[[bytes], None] = (
            guarded_sendall(sock) if sender is None else sender.sendall)
        self.sendfile: SendFile | None = None if sender is None else file_sender(sock, sender)
        self.sendmsg = None if sender is None else sender.sendmsg
        self.forwarding = conn if conn.trusted else None  # its peer is a trusted proxy
        self.idle_since = 0.0

    def use_thread(self, thread: int, beat: Callable[[], None]) -> None:
        """The connection is served by another thread from now on."""
        self.thread = thread
        self.beat = beat
        if self._sender is not None:
            self._sender.beat = beat

    def fileno(self) -> int:
        return int(self.sock.fileno())


class ConnectionServer(Worker):
    """What every worker class does with one connection."""

    supports = frozenset({"tls", "proxy_protocol"})

    def prepare_serving(self) -> None:
        """Once per worker, before the first connection."""
        self.bases = {listener: self.environ_base(listener) for listener in self.listeners}
        # Reading a request head, and a request body, must each be done
        # within their deadlines (docs/http.md: "Deadlines").
        self.read_timeout = float(self.cfg.timeout or 30.0)
        header_timeout = float(self.cfg.header_timeout)
        self.header_timeout = min(header_timeout, self.read_timeout) if header_timeout else self.read_timeout
        self.keepalive = float(self.cfg.keepalive)
        self.ingress = Ingress(self.cfg, self.ssl_context, self.slot.beat, self.beat_interval)
        self.keep_check: Callable[[], bool] | None = None

    def progress_beat(self, thread: int) -> Callable[[], None]:
        """What the I/O of ``thread`` calls whenever it makes progress: proof
        that a request waiting on a slow client is not stuck. The worker's
        heartbeat, unless the worker class times requests one by one."""
        return self.slot.beat

    def open_client(self, listener: Listener, conn: Any, addr: Any, thread: int) -> Client | None:
        """The PROXY header and the TLS handshake, if any; None if rejected."""
        try:
            opened = self.ingress.open(conn, addr, self.header_timeout)
        except ConnectionRejected as exc:
            self.log.debug("connection from %s closed: %s", describe_peer(addr), exc)
            close(conn)
            return None
        except Exception as exc:
            self.connection_failed(exc)
            close(conn)
            return None
        return Client(self, listener, opened, thread)

    def connection_failed(self, exc: BaseException) -> None:
        """Log the end of a connection that failed, at the level it deserves."""
        if isinstance(exc, StalledReader):
            self.slow_clients.dropped("stopped reading")
            self.log.debug("connection closed: %s", exc)
        elif isinstance(exc, ClientGone):
            self.log.debug("connection closed: %s", exc)
        elif isinstance(exc, OSError):  # reading a head: the client reset or timed out
            if exc.errno not in (errno.EPIPE, errno.ECONNRESET, errno.ENOTCONN, errno.EAGAIN):
                self.log.debug("connection error: %s", exc)
        else:
            self.log.traceback("error handling a connection", exc)

    def close_client(self, client: Client, step: int) -> None:
        if step == LINGER:
            linger(client.sock, self.slot.beat, self.beat_interval)
        close(client.sock)

    def serve_available(self, client: Client) -> int:
        """Serve the requests the client has sent; ``NEXT`` when the connection
        is kept and nothing of a next request is here yet, else CLOSE/LINGER."""
        http = client.http
        while True:
            try:
                req = self.read_request(client)
            except HTTPError as exc:
                self.reject(client, exc, None)
                return CLOSE
            if req is None:
                return CLOSE
            step = self.serve_request(client, req)
            if step != NEXT or http.idle:
                return step

    def read_request(self, client: Client) -> Request | None:
        """Read until a whole head is parsed; None if the client sent nothing.

        Usually one ``recv`` brings the whole head and this returns at once;
        anything slower goes through ``_read_head_slowly`` and its deadline.
        """
        http = client.http
        req = http.pending()
        if req is not None:
            return req
        started = time.monotonic()  # the head's deadline counts from here
        try:
            data = client.sock.recv(RECV_SIZE)
        except BlockingIOError:  # nothing for a beat interval
            return self._read_head_slowly(client, started)
        if not data:
            http.eof()
            return None
        req = http.receive(data)
        if req is not None:
            return req
        return self._read_head_slowly(client, started)

    def _read_head_slowly(self, client: Client, started: float) -> Request | None:
        timeout = self.header_timeout
        deadline = started + timeout
        beat = client.beat
        http = client.http
        recv = client.sock.recv
        while True:
            beat()
            try:
                data = recv(RECV_SIZE)
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

    def serve_request(self, client: Client, req: Request) -> int:
        """Serve one request; what the connection does next (``http.connection``)."""
        http = client.http
        thread = client.thread
        self.request_started(req, thread)
        body = http.start(req, self.keepalive > 0 and self.alive)
        resp = Response(req, http, client.send, client.sendfile, self.server_lines,
                        self.keep_check, client.sendmsg)
        inp: Input | EmptyInput = EMPTY_INPUT
        if body is not None:
            inp = resp.input = self._body_input(client, body)
        started = time.time() if self.log.access_enabled else 0.0
        environ: dict[str, Any] = {}
        try:
            environ = build_environ(client.base, req, client.remote, inp)
            if client.forwarding is not None:
                self.ingress.identify(client.forwarding, req, environ)
            self.identify_request(environ, resp, client.forwarding is not None, thread)
            run_app(self.app, environ, resp)  # type: ignore[arg-type]
        except ClientGone:
            raise
        except HTTPError as exc:
            answered_with(resp, inp.error or exc)
            self.reject(client, inp.error or exc, req, resp.head_sent)
            return CLOSE
        except SystemExit as exc:
            answered_with(resp, None)
            self._app_exited(client, req, resp, exc)
            return CLOSE
        except Exception as exc:
            answered_with(resp, inp.error)
            if inp.error is not None:  # the app failed because the body did
                self.reject(client, inp.error, req, resp.head_sent)
            else:
                self._app_failed(client, req, resp, exc)
            return CLOSE
        finally:
            self.request_finished(req, environ, resp, thread)
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

    def _body_input(self, client: Client, body: Any) -> Input:
        """``wsgi.input`` for a request with a body."""
        http = client.http
        send = client.send

        def send_continue() -> None:
            if http.continue_now():
                send(CONTINUE)

        reader = BodyReader(client.sock.recv, client.beat, self.read_timeout)
        return Input(reader, body, http.take_buffer(), send_continue)

    # --- errors

    def _app_failed(self, client: Client, req: Request, resp: Response, exc: Exception) -> None:
        """The application raised (anything, OSError included): log it with its
        traceback; answer 500 if no head was sent, else cut the response."""
        self.log.traceback(f"error handling request {req.line!r}", exc)
        if not resp.head_sent:
            self.send_error(client, 500, "Internal Server Error")

    def _app_exited(self, client: Client, req: Request, resp: Response, exc: SystemExit) -> None:
        """``sys.exit()`` in a request: answer 500, then this worker exits and is replaced."""
        self.log.error("the application called sys.exit(%r) while handling %r; worker %s "
                       "exits and is replaced", exc.code, req.line, self.pid)
        self.alive = False
        self.app_exit = True
        if not resp.head_sent:
            self.send_error(client, 500, "Internal Server Error")

    def reject(self, client: Client, exc: HTTPError, req: Request | None,
               head_sent: bool = False) -> None:
        """Log a failed request in one line, answer it if still possible, and linger."""
        if not head_sent:
            self.request_rejected(exc, client.thread)
        what = repr(req.line) if req is not None else "request"
        remote = client.remote
        who = f"{remote[0]}:{remote[1]}" if remote[1] else "unix socket"
        if isinstance(exc, InvalidResponse):
            self.log.error("invalid response to %s: %s", what, exc.detail)
        elif isinstance(exc, (IncompleteBody, RequestTimeout)):
            if isinstance(exc, RequestTimeout) and req is not None:
                self.slow_clients.dropped("request body timeouts (408)")
            self.log.debug("%s from %s: %s %s (%s)", what, who, exc.status, exc.reason, exc.detail)
        else:
            self.log.info("rejected %s from %s: %s %s (%s)", what, who, exc.status, exc.reason,
                          exc.detail)
        if not head_sent:
            self.send_error(client, exc.status, exc.reason)

    def send_error(self, client: Client, status: int, reason: str) -> None:
        """A short response with ``Connection: close``; a lingering close when
        request bytes may still be on their way (a reset could make the client
        lose the response), a plain one when the request was read whole."""
        try:
            client.sock.sendall(error_response(status, reason))
        except OSError:
            return
        http = client.http
        body = http.body
        if (body is not None and not body.done) or not http.idle or http.req is None:
            linger(client.sock, client.beat, self.beat_interval)


__all__ = ["Client", "ConnectionServer"]
