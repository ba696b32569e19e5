# The sync worker: one connection at a time. With one listener it blocks in
# accept() on the shared socket, so the kernel wakes exactly one idle worker
# per connection; the socket's SO_RCVTIMEO (set by the master) makes that
# wait, and every read from a client, return at least once per beat interval
# so the worker can beat, notice a dead master, and enforce read deadlines.
# With several listeners (or off Linux) it polls them instead. With
# --reuse-port the listeners are the worker's own sockets (workers/base.py),
# so "the listen queue" below is this worker's own queue.
#
# Keep-alive: a kept connection is closed only by its client, after
# --keep-alive seconds idle, or after a response that said "close" — never
# under a client that may be sending its next request. When a response head
# is written, a zero-timeout poll of the listeners decides: a pending
# connection means "Connection: close", so under load connections go back to
# the shared queue. A kept connection that goes idle is not a reason for
# anyone to wait: while the worker holds idle connections it polls them and
# the listeners together, and a newcomer is accepted and served while the
# idle ones stay open (serving stays one request at a time). A retiring worker
# (HUP, TTOU, WINCH, --max-requests) takes no new connection, says "close" on
# every response, and lets kept connections live out their window; only a
# full stop (TERM) closes them at once. See docs/workers.md.
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
from itertools import starmap
from typing import Any

from ..http.connection import CLOSE, NEXT
from ..listener import Listener, needs_poll
from .base import StopWaiting
from .io import acceptor
from .serving import Client, ConnectionServer

# BSD kernels give accepted sockets the listener's O_NONBLOCK; Linux does not.
_ACCEPTED_NONBLOCKING = not sys.platform.startswith("linux")


class SyncWorker(ConnectionServer):
    """Serves one request at a time; idle kept connections make nobody wait."""

    def run(self) -> None:
        self.prepare()
        if not needs_poll(self.listeners):
            self._accept_loop(self.listeners[0])
        else:
            self._poll_loop()
        self._drain_backlog()

    def prepare(self) -> None:
        """Set up what serving needs, once per worker (``run`` calls it)."""
        self.prepare_serving()
        self.listener_fds = [listener.fileno() for listener in self.listeners]
        self._pending = select.poll()
        for fd in self.listener_fds:
            self._pending.register(fd, select.POLLIN)
        self._by_fd = {listener.fileno(): listener for listener in self.listeners}
        self.keep_check = self._nobody_waiting
        self.kept: dict[int, Client] = {}  # idle keep-alive connections, by descriptor
        self.max_kept = int(self.cfg.worker_connections)
        # What _serve_kept waits on: the kept connections, and the listeners
        # while the worker takes new connections. Kept up to date as
        # connections come and go, rather than built again for every wait.
        self._kept_poll = select.poll()
        for fd in self.listener_fds:
            self._kept_poll.register(fd, select.POLLIN)
        self._kept_listening = True

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
        if _ACCEPTED_NONBLOCKING:
            conn.setblocking(True)
        client = self.open_client(listener, conn, addr, 0)
        if client is None:
            return
        self._serve(client)
        if self.kept:
            self._serve_kept()

    def _serve(self, client: Client) -> None:
        """Serve what the client has sent; then keep its connection, or close it."""
        step = CLOSE
        try:
            step = self.serve_available(client)
        except Exception as exc:
            step = CLOSE
            self.connection_failed(exc)
        if step == NEXT and not self.draining and len(self.kept) < self.max_kept:
            client.idle_since = time.monotonic()
            fd = client.fileno()
            self.kept[fd] = client
            self._kept_poll.register(fd, select.POLLIN)
            return
        self.close_client(client, step)

    def _unkeep(self, fd: int) -> Client:
        """Take a connection out of the kept ones (to serve or close it)."""
        self._kept_poll.unregister(fd)
        return self.kept.pop(fd)

    def _serve_kept(self) -> None:
        """While connections are kept: wait on them and on the listeners at once.

        A kept connection is served when its client speaks, and closed only
        when its --keep-alive window ends (or on a full stop): never under a
        client that may be sending. A newcomer is accepted and served while
        the idle connections stay open, so nobody waits for an idle client.
        """
        kept = self.kept
        while kept:
            now = time.monotonic()
            self._expire_kept(now)
            if not kept:
                return
            if self.draining:  # a full stop: a request already on its way is still served
                self._close_kept(serve_ready=True)
                return
            oldest = min(client.idle_since for client in kept.values())
            timeout = min(self.beat_interval, max(0.0, oldest + self.keepalive - now))
            if self._kept_listening and not self.alive:  # a retiring worker takes no new connection
                self._kept_listening = False
                for fd in self.listener_fds:
                    self._kept_poll.unregister(fd)
            try:
                self.waiting = True
                events = self._kept_poll.poll(timeout * 1000) if not self.draining else []
                self.waiting = False
            except StopWaiting:
                continue
            if not events:
                self.on_idle()
                continue
            for fd, _ in events:
                if fd in kept:
                    self._serve(self._unkeep(fd))
                elif self.alive:
                    self._accept_one(self._by_fd[fd])

    def _accept_one(self, listener: Listener) -> None:
        """A listener was readable while connections are kept: take one connection.
        If another worker took it first, accept() returns after a beat interval
        at most (SO_RCVTIMEO), and the kept clients are polled again."""
        try:
            conn, addr = acceptor(listener)()
        except (BlockingIOError, InterruptedError):
            return
        except OSError as exc:
            self._accept_failed(exc)
            return
        if _ACCEPTED_NONBLOCKING:
            conn.setblocking(True)
        client = self.open_client(listener, conn, addr, 0)
        if client is not None:
            self._serve(client)

    def _expire_kept(self, now: float) -> None:
        limit = now - self.keepalive
        for fd, client in list(self.kept.items()):
            if client.idle_since <= limit:
                self.close_client(self._unkeep(fd), CLOSE)

    def _close_kept(self, serve_ready: bool) -> None:
        """A full stop: serve a kept client whose request is already here, close the rest."""
        for fd in list(self.kept):
            client = self._unkeep(fd)
            poller = select.poll()
            poller.register(fd, select.POLLIN)
            if serve_ready and poller.poll(0):
                self._serve(client)
            else:
                self.close_client(client, CLOSE)

    def _nobody_waiting(self) -> bool:
        """The keep-alive test made when a response head is written: one
        poll(0) of the listeners (0.26 µs; TCP_INFO's queue length costs
        0.34 µs, docs/performance.md). With --reuse-port these are the
        worker's own sockets, so it is this worker's queue that counts: a
        connection waiting for another worker is no reason to close."""
        return self.alive and not self._pending.poll(0)


__all__ = ["SyncWorker", "acceptor"]
