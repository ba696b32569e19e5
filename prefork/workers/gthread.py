# The gthread worker: a pool of ``--threads`` threads serves requests, and a
# selector over the listeners and the idle keep-alive connections holds what
# waits, so an idle connection takes no thread (Gunicorn's gthread design,
# with its known faults fixed):
#
# * Fair accept. The worker accepts a connection only when one of its
#   threads is free to serve it at once; otherwise the connection stays in
#   the kernel's listen queue, where another worker can take it. A busy
#   worker never hoards connections while others are idle: while its kept
#   connections wait for a thread, it tells one client in REBALANCE_SECONDS
#   to reconnect through the shared queue.
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
# Leader/followers (Schmidt's pattern). The free threads take turns to wait
# on the selector: one, the leader, waits; the others wait for its place.
# When a connection is ready (a new one in the listen queue, or a parked one
# that spoke), the leader takes it and serves it itself: the connection never
# crosses to another thread. It keeps the leadership while it serves, so no
# thread is woken for it; a thread that ends a job takes it over, and the
# main thread passes it to a free thread if the job runs HANDOFF_SECONDS.
# A CPU-bound application thus runs on one thread at a time (no GIL hand-offs
# between runnable threads), and one that waits still uses every thread.
# Under load no thread waits at all: a thread that ends a job takes the next
# one at once. A parked connection's descriptor is armed
# for one event (EPOLLONESHOT), so it is reported to one leader once, and
# parking it again is one system call. Only the leader takes events, accepts,
# and closes parked connections, so none of these races another. The main
# thread only keeps time: the heartbeat, request timeouts, signals, and the
# end of a stop.
#
# A thread serves a connection while requests keep coming (pipelined ones at
# once), then parks it. Everything about the connection itself is the
# connection core's (http/connection.py), the I/O is workers/io.py, and the
# serving of a request is shared with the sync worker (workers/serving.py).
from __future__ import annotations

import collections
import errno
import fcntl
import os
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
from .io import acceptor, close, readable
from .serving import Client, ConnectionServer

# After a response on a kept connection, how long the thread that served it
# waits for the next request (while other threads are free and nothing waits
# for one) before parking the connection; measured in docs/performance.md.
FOLLOW_SECONDS = 0.002
# While its kept connections wait for a thread, a worker tells one client in
# this long to reconnect through the shared listen queue, so that load moves
# to a worker with a free thread within a second or two, at the cost of at
# most 10 reconnections a second. Each client sent back is served before
# some that stayed (new and kept connections take turns), so more often
# widens the spread of waits: measured in docs/performance.md.
REBALANCE_SECONDS = 0.1
# A thread that takes a job keeps the leadership while it serves: nobody is
# woken for it, and a thread that ends a job (this one, or another) takes
# the selector back without a thread switch. Only if the job runs this long
# (the application waits on something, or works long) does the main thread
# pass the leadership to a free thread. A CPU-bound application then runs on
# one thread at a time, without the GIL hand-offs two runnable threads cost
# at every system call; one that waits lends its place within this long.
# Measured in docs/performance.md.
HANDOFF_SECONDS = 0.001
# While every look finds the leader on a job younger than that (a CPU-bound
# application), the main thread looks half as often, down to once in this
# long: each look takes the GIL from the serving thread. A job it hands
# over brings the looks back to every HANDOFF_SECONDS. So a job that starts
# waiting lends its place within HANDOFF_SECONDS to LOOK_SECONDS_MAX, plus,
# if the serving thread computes meanwhile, the GIL's switch interval (5 ms).
LOOK_SECONDS_MAX = 0.008
# Exit status of a worker that stopped because a request ran past --timeout.
EXIT_REQUEST_TIMEOUT = 6


class OneShotPoller:
    """Waits for descriptors to become readable. ``arm`` asks for one report
    of a parked connection (then it is disarmed until armed again, which any
    thread may do at any time); ``watch`` asks for every report (listeners,
    the wake pipe). Only one thread at a time calls ``wait``. epoll on Linux;
    elsewhere a selector whose ``wait`` unregisters what it reports."""

    def __init__(self) -> None:
        self._selector = selectors.DefaultSelector()
        self._watched: set[int] = set()

    def arm(self, fd: int) -> None:
        selector = self._selector
        try:
            selector.register(fd, selectors.EVENT_READ)
        except KeyError:  # a stale entry: its descriptor was closed while armed
            selector.unregister(fd)
            self.arm(fd)
        except (OSError, ValueError):
            pass  # closed meanwhile by the leader (the --worker-connections limit)

    def disarm(self, fd: int) -> None:
        try:
            self._selector.unregister(fd)
        except (KeyError, OSError, ValueError):
            pass

    def watch(self, fd: int) -> None:
        self._watched.add(fd)
        self._selector.register(fd, selectors.EVENT_READ)

    def unwatch(self, fd: int) -> None:
        self._watched.discard(fd)
        self._selector.unregister(fd)

    def wait(self, timeout: float) -> list[int]:
        ready = [key.fd for key, _ in self._selector.select(timeout)]
        for fd in ready:
            if fd not in self._watched:
                self.disarm(fd)
        return ready


class EpollPoller(OneShotPoller):
    """The same with EPOLLONESHOT: arming again is one ``epoll_ctl``."""

    _ONESHOT = select.EPOLLIN | getattr(select, "EPOLLONESHOT", 0)

    def __init__(self) -> None:
        self._epoll = select.epoll()
        self._watched = set()

    def arm(self, fd: int) -> None:
        epoll = self._epoll
        try:
            epoll.modify(fd, self._ONESHOT)
        except FileNotFoundError:  # its first park
            try:
                epoll.register(fd, self._ONESHOT)
            except FileExistsError:
                epoll.modify(fd, self._ONESHOT)
            except OSError:
                pass  # closed meanwhile by the leader (the --worker-connections limit)
        except OSError:
            pass  # closed meanwhile by the leader

    def disarm(self, fd: int) -> None:
        try:
            self._epoll.unregister(fd)
        except OSError:
            pass

    def watch(self, fd: int) -> None:
        self._watched.add(fd)
        self._epoll.register(fd, select.EPOLLIN)

    def unwatch(self, fd: int) -> None:
        self._watched.discard(fd)
        self._epoll.unregister(fd)

    def wait(self, timeout: float) -> list[int]:
        return [fd for fd, _ in self._epoll.poll(timeout, 64)]


def make_poller() -> OneShotPoller:
    return EpollPoller() if hasattr(select, "EPOLLONESHOT") else OneShotPoller()


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
        self.poller = make_poller()
        self._wake_r, self._wake_w = self._pipe()  # wakes the leader
        self._tick_r, self._tick_w = self._pipe()  # wakes the main thread
        self.poller.watch(self._wake_r)
        self._tick_poll = select.poll()  # the main thread's pause: built once, not per look
        self._tick_poll.register(self._tick_r, select.POLLIN)
        # Held by the leader, and by any thread choosing its next job: the
        # ready queue, the accept turn, the closing of parked connections and
        # ``opened`` change only under it.
        self.lock = threading.Lock()
        # The leadership is ``lock``: held by the thread choosing its next job
        # (waiting on the selector, as the leader), or by the thread serving
        # the job it took (``serving``, since ``serving_since``), whose place
        # on the selector is empty until a thread takes it over: one ending a
        # job, or a free one the main thread wakes after HANDOFF_SECONDS.
        # ``baton`` makes each change of ``serving`` one step.
        self.baton = threading.Lock()
        self.serving: int | None = None
        self.serving_since = 0.0
        self._main_wakes_at = 0.0  # when the main thread's pause ends at the latest
        self.jobs = 0  # taken so far; the main thread looks in steps while they come
        self._jobs_seen = 0
        self._look = HANDOFF_SECONDS  # the main thread's step, HANDOFF_SECONDS to LOOK_SECONDS_MAX
        # Connections open (being served, parked, or waiting for a thread):
        # ``opened`` less those each thread closed, counted per thread so that
        # a thread need not wait for the lock (held by a waiting leader) to
        # say it closed one.
        self.opened = 0
        self.closed_by = [0] * self.thread_count
        self.free = [False] * self.thread_count  # per thread: looking for a job
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
        self._listener_fds = list(self._by_fd)
        self._listen_queue = select.poll()  # "is anyone waiting to be accepted?"
        for listener in self.listeners:
            self._listen_queue.register(listener.fileno(), select.POLLIN)
        self._accept_turn = True
        self._reported: list[tuple[int, int]] = []  # listeners the last wait found readable
        self._all_listeners = [(fd, 0) for fd in self._by_fd]
        self._accepted = False  # the last accept() found a connection
        self.accepting = False
        self._next_rebalance = 0.0
        self.stop_seen = False  # a thread has acted on the stop (accepts no more)
        self.quit = False  # the threads are to end
        for listener in self.listeners:
            # Accept must never block a thread while a connection waits; the
            # sync worker copes with a shared listener made non-blocking
            # (workers/sync.py).
            listener.sock.setblocking(False)
        self.pool = [threading.Thread(target=self._thread_main, args=(index,),
                                      name=f"prefork-thread-{index}", daemon=True)
                     for index in range(self.thread_count)]
        for thread in self.pool:
            thread.start()

    @staticmethod
    def _pipe() -> tuple[int, int]:
        r, w = os.pipe()
        for fd in (r, w):
            os.set_blocking(fd, False)
            fcntl.fcntl(fd, fcntl.F_SETFD, fcntl.FD_CLOEXEC)
        return r, w

    # --- the main thread: the heartbeat, request timeouts, signals, stopping

    @property
    def connections(self) -> int:
        return self.opened - sum(self.closed_by)

    def loop(self) -> None:
        while True:
            if not self.alive and self._finished_stopping():
                return
            self._pause(self._main_timeout())
            now = time.monotonic()
            self._hand_off(now)
            self._check_requests(now)
            self.on_idle()

    def _main_timeout(self) -> float:
        # Set before ``serving`` is read, as a thread that starts serving sets
        # ``serving`` before it reads this: one of the two sees the other.
        self._main_wakes_at = float("inf")
        timeout = self.beat_interval
        now = time.monotonic()
        if not self.alive and self.give_up_at:
            timeout = min(timeout, self.give_up_at - now)
        if self.thread_count > 1:
            # Watch the thread serving as leader; while jobs keep coming, look
            # every HANDOFF_SECONDS rather than be woken for each.
            if self.serving is not None:
                timeout = min(timeout, self.serving_since + self._look - now)
            elif self.jobs != self._jobs_seen:
                timeout = min(timeout, self._look)
            self._jobs_seen = self.jobs
        timeout = max(0.0, timeout)
        self._main_wakes_at = now + timeout
        return timeout

    def _hand_off(self, now: float) -> None:
        """Give the selector to a free thread if the thread holding the
        leadership has served its job for HANDOFF_SECONDS."""
        with self.baton:
            if self.serving is None or now - self.serving_since < HANDOFF_SECONDS:
                if self.jobs != self._jobs_seen:  # busy, and nothing to hand over
                    self._look = min(self._look * 2, LOOK_SECONDS_MAX)
                return
            try:  # (no signal handler runs between the test above and this store)
                self.serving = None
                self._look = HANDOFF_SECONDS
            finally:
                self.lock.release()  # a free thread, if any, waits for it

    def _pause(self, timeout: float) -> None:
        """Sleep up to ``timeout``, or until a thread or a signal wakes us."""
        try:
            self.waiting = True
            poked = bool(self._tick_poll.poll(timeout * 1000))
            self.waiting = False
        except StopWaiting:  # a stop or a retirement: act on it now
            return
        if poked:
            _drain(self._tick_r)

    # --- the threads: choosing the next job, and leading

    def _next_job(self) -> Any:
        """The next connection for this thread to serve, the lock held; None:
        end the thread."""
        while not self.quit:
            if not self.alive:
                self._act_on_stop()
            job = self._take()
            if job is not None:
                return job
            self._lead()
        return None

    def _start_serving(self, index: int) -> None:
        """Keep the leadership while serving the job just taken."""
        with self.baton:
            self.serving = index
            self.serving_since = since = time.monotonic()
            self.jobs += 1
        if self._main_wakes_at > since + LOOK_SECONDS_MAX and self.thread_count > 1:
            # The main thread would sleep on: it is to look at this job in time.
            self._main_wakes_at = 0.0
            _poke(self._tick_w)

    def _lead_after(self, index: int) -> bool:
        """After a job: whether this thread holds the leadership now, kept
        (nobody took it while it served) or taken over from the thread
        serving with it (whose place on the selector is empty)."""
        with self.baton:
            if self.serving is None:
                return False
            self.serving = None
            return True

    def _take(self) -> Any:
        """New connections from the listen queue and kept ones that spoke take
        turns while both wait, so that neither the clients already connected
        nor the ones still queued are starved (fair accept: a connection is
        taken only for a thread free now, this one)."""
        ready = self.ready
        if (self._accept_turn or not ready) and self.alive:
            # With nothing else to do, the listeners' state comes from the wait
            # (they are watched); otherwise one poll(0) asks.
            reported = self._reported
            if reported or ready:
                self._reported = []
                job = self._accept_one(reported or self._listen_queue.poll(0))
                if job is not None:
                    self._accept_turn = False
                    return job
            elif self._accepted and not self.parked:
                # New connections keep coming (Connection: close clients): try
                # the queue at once rather than wait on the selector to say
                # so; a miss costs one accept() that finds it empty. Not while
                # connections are parked: only the selector sees them speak,
                # and a stream of new clients would starve them.
                job = self._accept_one(self._all_listeners)
                if job is not None:
                    return job
        if ready:
            self._accept_turn = True
            return ready.popleft()
        return None

    def _lead(self) -> None:
        """Wait on the selector for work, as the leader."""
        self._set_accepting(self.alive and
                            self.connections - len(self.parked) < self.max_connections)
        parked = self.parked
        for fd in self.poller.wait(self._lead_timeout()):
            client = parked.pop(fd, None)
            if client is not None:
                self.ready.append(client)
            elif fd == self._wake_r:
                _drain(fd)
            elif fd in self._by_fd:
                self._reported.append((fd, 0))
        self._expire_parked(time.monotonic())

    def _lead_timeout(self) -> float:
        timeout = self.beat_interval
        if self.parked:
            _, oldest = _oldest(self.parked)
            timeout = min(timeout, max(0.0, oldest.idle_since + self.keepalive - time.monotonic()))
        return timeout

    def _set_accepting(self, on: bool) -> None:
        if on == self.accepting:
            return
        self.accepting = on
        for listener in self.listeners:
            if on:
                self.poller.watch(listener.fileno())
            else:
                self.poller.unwatch(listener.fileno())

    def _accept_one(self, readable: list[tuple[int, int]]) -> Any:
        """One connection from a readable listen queue, as a job; None if none
        was waiting (or another worker took it first)."""
        self._accepted = False
        if self.connections - len(self.parked) >= self.max_connections:
            return None
        for fd, _ in readable:
            listener = self._by_fd[fd]
            try:
                sock, addr = self.accepts[listener]()
            except (BlockingIOError, InterruptedError):
                continue  # another worker took it
            except OSError as exc:
                self._accept_failed(exc)
                return None
            if self.connections >= self.max_connections:
                self._close_oldest_parked()
            self.opened += 1
            self._accepted = True
            return (listener, sock, addr)
        return None

    def _accept_failed(self, exc: OSError) -> None:
        self.log.warning("accept() failed: %s", exc)
        if exc.errno in (errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM):
            self._set_accepting(False)
            time.sleep(0.1)  # out of descriptors: do not spin on a readable socket

    def _park(self, client: Client) -> None:
        """Keep an idle connection, taking no thread: any thread, no lock. The
        client is in ``parked`` before its descriptor is armed, so the leader
        finds it when it speaks; if the leader closes it in between (at the
        --worker-connections limit), arming a closed descriptor does nothing."""
        client.idle_since = time.monotonic()
        fd = client.fileno()
        self.parked[fd] = client
        self.poller.arm(fd)

    def _drop_parked(self, fd: int, client: Client) -> None:
        self.poller.disarm(fd)
        close(client.sock)
        self.opened -= 1

    def _close_oldest_parked(self) -> None:
        if self.parked:
            fd, client = _oldest(self.parked)
            del self.parked[fd]
            self._drop_parked(fd, client)

    def _expire_parked(self, now: float) -> None:
        """Close connections idle for their whole --keep-alive window."""
        parked = self.parked
        limit = now - self.keepalive
        while parked:
            fd, client = _oldest(parked)
            if client.idle_since > limit:
                return
            del parked[fd]
            self._drop_parked(fd, client)

    def _wake(self) -> None:
        _poke(self._wake_w)

    def _may_keep(self) -> bool:
        """Asked as each response head is written. A retiring worker says close.
        So, now and then, does a worker whose kept connections are waiting for
        a thread (more of them are ready than threads are free to take them):
        one client every REBALANCE_SECONDS then reconnects through the shared
        listen queue, where another worker (or a new one, with --workers-max)
        can serve it, instead of queueing inside this one. Not when clients
        already wait in the listen queue: then no worker has a thread free to
        take them, and a client sent there would wait as long."""
        ready = self.ready
        if not ready or len(ready) <= self.free.count(True) or not self.alive:
            return self.alive
        now = time.monotonic()
        if now < self._next_rebalance:
            return True
        # (Not the lock holder's poll object: one may not be polled twice at once.)
        if readable(self._listener_fds, 0):
            return True
        self._next_rebalance = now + REBALANCE_SECONDS
        return False

    # --- stopping

    def _act_on_stop(self) -> None:
        """In a thread, under the lock, once the worker is not alive: accept no
        more; in a full stop, close the parked connections and take what is
        already in the listen queue."""
        self._set_accepting(False)
        if self.draining:
            self._drain_listen_queue()
            parked = self.parked
            while parked:
                fd, client = parked.popitem()
                self._drop_parked(fd, client)
        if not self.stop_seen:
            self.stop_seen = True
            _poke(self._tick_w)

    def _finished_stopping(self) -> bool:
        """A retiring or stopping worker is done once it holds no connection
        (only the ones stuck past --timeout, after a request timeout)."""
        if not self.stop_seen:
            self._wake()  # the leader acts on the stop
        if self.give_up_at and time.monotonic() > self.give_up_at:
            self.log.error("worker %s: requests still running after --graceful-timeout; "
                           "exiting", self.pid)
            self._exit(EXIT_REQUEST_TIMEOUT)
        # Read without the lock, which a waiting leader holds: a connection
        # passing between parked, ready and a thread counts as busy for a
        # moment, never as neither.
        connections, parked, ready = self.connections, len(self.parked), len(self.ready)
        busy = connections - parked - ready
        if self.stuck and busy <= len(self.stuck) and not parked and not ready:
            self._exit(EXIT_REQUEST_TIMEOUT)  # the stuck threads cannot be joined
        return self.stop_seen and connections == 0

    def _drain_listen_queue(self) -> None:
        """A full stop: serve what is already queued, then take no more.

        The master has closed its copies of the listeners; connections left
        in the queue would be reset when the last worker closes its own."""
        for listener, accept in self.accepts.items():
            while True:
                try:
                    sock, addr = accept()
                except OSError:  # BlockingIOError: empty
                    break
                self.opened += 1
                self.ready.append((listener, sock, addr))

    def stop_threads(self) -> None:
        self.quit = True
        self._wake()
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

    def _thread_main(self, index: int) -> None:
        closed_by = self.closed_by
        free = self.free
        lock = self.lock
        leading = False  # this thread holds the lock
        while True:
            free[index] = True
            try:
                if not leading:
                    lock.acquire()
                    leading = True
                job = self._next_job()
            except Exception as exc:  # a bug, or the selector failed: never lose the thread
                if leading:
                    leading = False
                    lock.release()
                self._scheduling_failed(exc)
                continue
            finally:
                free[index] = False
            if job is None:
                lock.release()  # to the next thread, to end too
                return
            self._start_serving(index)
            closed = True
            try:
                closed = self._serve(index, job)
            except BaseException:  # a bug: the thread ends, never with the leadership
                if self._lead_after(index):
                    lock.release()
                closed_by[index] += 1
                raise
            leading = self._lead_after(index)
            if closed:
                closed_by[index] += 1
                if not self.alive:
                    _poke(self._tick_w)  # perhaps the last one

    def _scheduling_failed(self, exc: Exception) -> None:
        """Log it, and retire the worker: its requests in flight finish (up to
        --graceful-timeout) and a fresh worker replaces it."""
        self.log.traceback("gthread worker: choosing the next connection failed", exc)
        if self.alive:
            self.alive = False
            self.give_up_at = time.monotonic() + self.cfg.graceful_timeout
            self.slot.ask_to_retire(self.requests)
            self._wake_master()
        _poke(self._tick_w)
        time.sleep(0.1)  # if it fails again at once, do not spin

    def _follows(self, client: Client, index: int) -> bool:
        """Whether this thread should serve the client's next request itself:
        only while another thread is free (so a leader watches the others)
        and nothing waits for one, and only if the request comes within
        FOLLOW_SECONDS, and not by the thread holding the leadership (the
        selector is its to watch). It saves parking the connection and, when
        the client sends at once, a promotion: a thread switch or two."""
        if self.ready or not self.alive or self.free.count(True) == 0 or self.serving == index:
            return False
        return readable((client.fileno(),), FOLLOW_SECONDS)

    def _serve(self, index: int, job: Any) -> bool:
        """Serve one connection while it has requests; True if it was closed,
        False if it was parked."""
        if isinstance(job, tuple):
            listener, sock, addr = job
            client = self.open_client(listener, sock, addr, index)
            if client is None:
                return True
        else:
            client = job
            client.use_thread(index, self._beats[index])
        step = CLOSE
        try:
            step = self.serve_available(client)
            while step == NEXT and self._follows(client, index):
                step = self.serve_available(client)
        except BaseException as exc:  # also the application's CancelledError & co.
            step = CLOSE
            self.connection_failed(exc)
        if step == NEXT and not self.draining:
            self._park(client)
            return False
        self.close_client(client, step)
        return True


def _oldest(parked: dict[int, Client]) -> tuple[int, Client]:
    """The connection parked longest (``parked`` is not empty). Threads park
    connections while the leader looks: a dict iterator fails when the dict
    grows under it, so look again."""
    while True:
        try:
            return next(iter(parked.items()))
        except RuntimeError:
            continue


def _poke(fd: int) -> None:
    try:
        os.write(fd, b"\0")
    except (BlockingIOError, InterruptedError):
        pass  # the pipe is full: its reader is awake anyway


def _drain(fd: int) -> None:
    try:
        while os.read(fd, 4096):
            pass
    except (BlockingIOError, InterruptedError):
        pass


__all__ = ["EXIT_REQUEST_TIMEOUT", "GThreadWorker"]
