# The gthread worker: a pool of ``--threads`` threads serves requests, and
# the main thread runs a selector over the listeners and the idle keep-alive
# connections, so an idle connection takes no thread (Gunicorn's gthread
# design, with its known faults fixed):
#
# * Fair accept. The worker accepts a connection only when one of its
#   threads is free to serve it at once; otherwise the connection stays in
#   the kernel's listen queue, where another worker can take it. A busy
#   worker never hoards connections while others are idle.
# * A real per-request timeout. Each thread's request in progress (start,
#   request line) is known; one that runs past --timeout is logged with the
#   Python stack of the thread serving it, the worker stops accepting, its
#   other requests finish (up to --graceful-timeout), and it exits and is
#   replaced. The master's heartbeat check still catches a worker whose main
#   loop is stuck.
# * Idle connections are parked in the selector for at most --keep-alive
#   seconds; with --worker-connections of them open, the one idle longest is
#   closed to make room. A retiring worker says "close" on every response and
#   lets its parked connections live out their window, so a client's next
#   request is never lost; a full stop closes them at once.
#
# A thread serves a connection while requests keep coming (pipelined ones at
# once), then hands it back to the main thread to park. Everything about the
# connection itself is the connection core's (http/connection.py), the I/O is
# workers/io.py, and the serving of a request is shared with the sync worker
# (workers/serving.py).
from __future__ import annotations

import collections
import errno
import fcntl
import os
import queue
import select
import selectors
import sys
import threading
import time
import traceback
from collections.abc import Callable
from typing import Any

from ..http.connection import CLOSE, NEXT
from .base import StopWaiting
from .io import acceptor, close
from .serving import Client, ConnectionServer

# After a response on a kept connection, how long the thread that served it
# waits for the next request (while other threads are idle) before handing
# the connection to the selector; measured in docs/workers.md.
FOLLOW_SECONDS = 0.002
# Exit status of a worker that stopped because a request ran past --timeout.
EXIT_REQUEST_TIMEOUT = 6


class GThreadWorker(ConnectionServer):
    """Serves up to ``--threads`` requests at once; parks idle connections."""

    multithread = True

    def run(self) -> None:
        self.prepare()
        try:
            self.loop()
        finally:
            self.stop_threads()
            self._close_own_listeners()

    def prepare(self) -> None:
        self.prepare_serving()
        self.keep_check = self._may_keep
        self.thread_count = max(1, int(self.cfg.threads))
        self.max_connections = max(self.thread_count, int(self.cfg.worker_connections))
        self.selector = selectors.DefaultSelector()
        self._wake_r, self._wake_w = os.pipe()
        for fd in (self._wake_r, self._wake_w):
            os.set_blocking(fd, False)
            fcntl.fcntl(fd, fcntl.F_SETFD, fcntl.FD_CLOEXEC)
        self.selector.register(self._wake_r, selectors.EVENT_READ, None)
        self.jobs: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self.returned: collections.deque[Client] = collections.deque()  # threads append
        # One entry per job a thread ended: True if it closed the connection.
        self.finished: collections.deque[bool] = collections.deque()
        self.free = self.thread_count
        self.connections = 0  # open: being served, parked, or waiting for a thread
        self.parked: dict[int, Client] = {}  # fd -> client, oldest first
        # Connections with a request to serve and no thread yet: parked ones
        # that spoke, and, during a full stop, the last ones from the queue.
        self.ready: collections.deque[Any] = collections.deque()
        # thread -> its request in progress: [start, request line, last I/O progress]
        self.active: dict[int, list[Any]] = {}
        self._beats = [self._make_beat(index) for index in range(self.thread_count)]
        self.stuck: set[int] = set()
        self.give_up_at = 0.0  # after a request timeout: exit by then at the latest
        self.accepts = {listener: acceptor(listener) for listener in self.listeners}
        self._by_fd = {listener.fileno(): listener for listener in self.listeners}
        self._listen_queue = select.poll()  # "is anyone waiting to be accepted?"
        for listener in self.listeners:
            self._listen_queue.register(listener.fileno(), select.POLLIN)
        self._accept_turn = True
        self.accepting = False
        for listener in self.listeners:
            # Accept must never block the selector thread; the sync worker copes
            # with a shared listener made non-blocking (workers/sync.py).
            listener.sock.setblocking(False)
        self.pool = [threading.Thread(target=self._thread_main, args=(index,),
                                      name=f"prefork-thread-{index}", daemon=True)
                     for index in range(self.thread_count)]
        for thread in self.pool:
            thread.start()

    # --- the main thread

    def loop(self) -> None:
        while True:
            self._collect()
            if not self.alive and self._finished_stopping():
                return
            self._set_accepting(self.alive and self.free > 0
                                and self.connections - len(self.parked) < self.max_connections)
            events = self._select(self._next_timeout())
            for key, _ in events:
                data = key.data
                if data is None:
                    self._drain_wake_pipe()
                elif isinstance(data, Client):
                    self._unpark(data)
            self._collect()
            self._dispatch()
            now = time.monotonic()
            self._expire_parked(now)
            self._check_requests(now)
            self.on_idle()

    def _select(self, timeout: float) -> list[tuple[selectors.SelectorKey, int]]:
        try:
            self.waiting = True
            events = self.selector.select(timeout) if self.alive or not self.draining else []
            self.waiting = False
            return events
        except StopWaiting:  # TERM: stop now, serve what is in hand
            return []

    def _next_timeout(self) -> float:
        timeout = self.beat_interval
        if self.parked:
            oldest = next(iter(self.parked.values()))
            timeout = min(timeout, max(0.0, oldest.idle_since + self.keepalive - time.monotonic()))
        return timeout

    def _set_accepting(self, on: bool) -> None:
        if on == self.accepting:
            return
        self.accepting = on
        for listener in self.listeners:
            if on:
                self.selector.register(listener.fileno(), selectors.EVENT_READ, listener)
            else:
                self.selector.unregister(listener.fileno())

    def _accept_one(self) -> bool:
        """Take one connection from a listen queue for a free thread; False if
        none was waiting (or another worker took it first)."""
        if self.connections - len(self.parked) >= self.max_connections:
            return False
        for fd, _ in self._listen_queue.poll(0):
            listener = self._by_fd[fd]
            try:
                sock, addr = self.accepts[listener]()
            except (BlockingIOError, InterruptedError):
                continue  # another worker took it
            except OSError as exc:
                self._accept_failed(exc)
                return False
            if self.connections >= self.max_connections:
                self._close_oldest_parked()
            self.connections += 1
            self._run(("new", listener, sock, addr))
            return True
        return False

    def _accept_failed(self, exc: OSError) -> None:
        self.log.warning("accept() failed: %s", exc)
        if exc.errno in (errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM):
            self._set_accepting(False)
            time.sleep(0.1)  # out of descriptors: do not spin on a readable socket

    def _run(self, job: Any) -> None:
        self.free -= 1
        self.jobs.put(job)

    def _collect(self) -> None:
        """Take back the threads that ended a job, and park the kept connections."""
        finished = self.finished
        while finished:
            if finished.popleft():
                self.connections -= 1
            self.free += 1
        returned = self.returned
        while returned:
            self._park(returned.popleft())

    def _park(self, client: Client) -> None:
        if self.draining:  # a full stop: idle connections are closed at once
            self._drop(client)
            return
        client.idle_since = time.monotonic()
        fd = client.fileno()
        self.parked[fd] = client
        self.selector.register(fd, selectors.EVENT_READ, client)

    def _unpark(self, client: Client) -> None:
        fd = client.fileno()
        self.selector.unregister(fd)
        del self.parked[fd]
        self.ready.append(client)

    def _dispatch(self) -> None:
        """Give free threads work: kept connections that spoke, and new ones
        from the listen queue, taking turns while both wait, so that neither
        the clients already connected nor the ones still queued are starved
        (fair accept: a connection is taken only for a thread free now)."""
        ready = self.ready
        while self.free > 0:
            if (self._accept_turn or not ready) and self.alive and self._accept_one():
                self._accept_turn = False
            elif ready:
                self._run(ready.popleft())
                self._accept_turn = True
            else:
                return

    def _drop(self, client: Client) -> None:
        close(client.sock)
        self.connections -= 1

    def _close_oldest_parked(self) -> None:
        if not self.parked:
            return
        fd, client = next(iter(self.parked.items()))
        self.selector.unregister(fd)
        del self.parked[fd]
        self._drop(client)

    def _expire_parked(self, now: float) -> None:
        """Close connections idle for their whole --keep-alive window."""
        parked = self.parked
        limit = now - self.keepalive
        while parked:
            fd, client = next(iter(parked.items()))
            if client.idle_since > limit:
                return
            self.selector.unregister(fd)
            del parked[fd]
            self._drop(client)

    def _drain_wake_pipe(self) -> None:
        try:
            while os.read(self._wake_r, 4096):
                pass
        except (BlockingIOError, InterruptedError):
            pass

    def _wake(self) -> None:
        try:
            os.write(self._wake_w, b"\0")
        except (BlockingIOError, InterruptedError):
            pass  # the pipe is full: the main thread is awake anyway

    def _may_keep(self) -> bool:
        """Asked as each response head is written. A retiring worker says close;
        so does a worker whose kept connections are waiting for a thread: its
        clients then reconnect through the shared listen queue, where another
        worker (or a new one, with --workers-max) can serve them, instead of
        queueing inside this one."""
        return self.alive and not self.ready

    # --- stopping

    def _finished_stopping(self) -> bool:
        """A retiring or stopping worker is done once it holds no connection
        (only the ones stuck past --timeout, after a request timeout)."""
        self._set_accepting(False)
        if self.draining:
            self._drain_listen_queue()
            for client in list(self.parked.values()):
                self.selector.unregister(client.fileno())
                self._drop(client)
            self.parked.clear()
        self._dispatch()
        if self.give_up_at and time.monotonic() > self.give_up_at:
            self.log.error("worker %s: requests still running after --graceful-timeout; "
                           "exiting", self.pid)
            self._exit(EXIT_REQUEST_TIMEOUT)
        busy = self.connections - len(self.parked) - len(self.ready)
        if self.stuck and busy <= len(self.stuck) and not self.parked and not self.ready:
            self._exit(EXIT_REQUEST_TIMEOUT)  # the stuck threads cannot be joined
        return self.connections == 0

    def _drain_listen_queue(self) -> None:
        """A full stop: serve what is already queued, then take no more.

        The master has closed its copies of the listeners; connections left
        in the queue would be reset when the last worker closes its own."""
        for listener, accept in self.accepts.items():
            if not listener.per_worker and not self.draining:
                continue
            while True:
                try:
                    sock, addr = accept()
                except (BlockingIOError, InterruptedError):
                    break
                except OSError:
                    break
                self.connections += 1
                self.ready.append(("new", listener, sock, addr))

    def stop_threads(self) -> None:
        for _ in self.pool:
            self.jobs.put(None)
        deadline = time.monotonic() + 1.0
        for thread in self.pool:
            thread.join(max(0.0, deadline - time.monotonic()))

    def _close_own_listeners(self) -> None:
        for listener in self.listeners:
            if listener.per_worker:
                listener.close()

    # --- per-request timeouts

    def progress_beat(self, thread: int) -> Callable[[], None]:
        return self._beats[thread]

    def _make_beat(self, thread: int) -> Callable[[], None]:
        active = self.active
        monotonic = time.monotonic

        def beat() -> None:
            record = active.get(thread)
            if record is not None:
                record[2] = monotonic()

        return beat

    def request_started(self, req: Any, thread: int = 0) -> None:
        now = time.monotonic()
        self.active[thread] = [now, req.line, now]
        super().request_started(req, thread)

    def request_finished(self, req: Any, environ: dict[str, Any], resp: Any, thread: int = 0) -> None:
        self.active.pop(thread, None)
        self.stuck.discard(thread)
        super().request_finished(req, environ, resp, thread)

    def _check_requests(self, now: float) -> None:
        timeout = self.cfg.timeout
        if not timeout:
            return
        # A request waiting on its client (a slow upload, a slow reader) makes
        # progress; one that has made none for --timeout seconds is stuck.
        for thread, (started, line, progress) in list(self.active.items()):
            if now - progress > timeout and thread not in self.stuck:
                self._request_timed_out(thread, line, now - started)

    def _request_timed_out(self, thread: int, line: str, elapsed: float) -> None:
        self.stuck.add(thread)
        frame = sys._current_frames().get(self.pool[thread].ident or -1)
        stack = "".join(traceback.format_stack(frame)).rstrip() if frame is not None else "?"
        self.log.critical(
            "REQUEST TIMEOUT (pid:%s) %r has run for %.1f s, past --timeout %g; stack of thread "
            "%s serving it:\n%s\nThe worker takes no new connections, lets its other requests "
            "finish and is replaced.", self.pid, line, elapsed, self.cfg.timeout, thread, stack)
        if self.alive:
            self.alive = False
            self.give_up_at = time.monotonic() + self.cfg.graceful_timeout
            self.slot.ask_to_retire(self.requests)
            self._wake_master()

    # --- the pool threads

    def _follows(self, client: Client) -> bool:
        """Whether this thread should serve the client's next request itself:
        only while some thread is idle and nothing waits for one (so nobody is
        kept waiting by it), and only if the request comes within
        FOLLOW_SECONDS. It saves handing the connection to the selector and
        back, two thread switches, for a client that sends at once."""
        if self.free <= 0 or self.ready or not self.alive:
            return False
        poller = select.poll()
        poller.register(client.fileno(), select.POLLIN)
        return bool(poller.poll(FOLLOW_SECONDS * 1000))

    def _thread_main(self, index: int) -> None:
        jobs = self.jobs
        while True:
            job = jobs.get()
            if job is None:
                return
            closed = True
            try:
                closed = self._serve(index, job)
            finally:
                self.finished.append(closed)
                self._wake()

    def _serve(self, index: int, job: Any) -> bool:
        """Serve one connection while it has requests; True if it was closed,
        False if it was handed back to be parked."""
        if isinstance(job, tuple):
            _, listener, sock, addr = job
            client = self.open_client(listener, sock, addr, index)
            if client is None:
                return True
        else:
            client = job
            client.use_thread(index, self._beats[index])
        step = CLOSE
        try:
            step = self.serve_available(client)
            while step == NEXT and self._follows(client):
                step = self.serve_available(client)
        except Exception as exc:
            step = CLOSE
            self.connection_failed(exc)
        if step == NEXT and not self.draining:
            self.returned.append(client)
            return False
        self.close_client(client, step)
        return True


__all__ = ["EXIT_REQUEST_TIMEOUT", "GThreadWorker"]
