# What the master reports about itself, in one place the arbiter calls at a
# few points of its loop: the endpoints it serves (metrics, control socket),
# the counts it keeps for workers that have exited (so every counter is
# monotonic for the master's life), the restarts by reason, the listen
# queues (and the warning when one is full), and statsd's master-side
# figures. It reads the scoreboard and the arbiter's records; it decides
# nothing about workers: commands from the control socket go back to the
# arbiter's own methods, exactly as the matching signal would.
from __future__ import annotations

import logging
import os
import signal
import socket
import time
from collections import Counter
from typing import TYPE_CHECKING, Any, Protocol

from . import __version__
from .control import Commands, ControlEndpoint
from .endpoint import AddressBusy, Endpoint, EndpointError, listen_tcp, listen_unix, serve_poll
from .heartbeat import BOOTING, BUSY
from .listen_queue import (
    process_socket_inodes,
    socket_inode,
    tcp_queue,
    tcp_queues_by_inode,
    unix_queues,
)
from .logs import RequestLine
from .metrics import MemoryReader, MetricsEndpoint, collect, process_figures
from .settings import Config, parse_address
from .stats import (
    CRASH,
    RESTART_REASONS,
    SIGNAL,
    InFlight,
    ListenerView,
    ServerView,
    Totals,
    WorkerView,
)
from .statsd import StatsdClient, StatsdLogHandler

if TYPE_CHECKING:
    from .logs import Logger
    from .records import WorkerRecord
    from .settings import Config
    from .sockets import Listener
    from .upgrade import Upgrade
    from .workerset import Phase


class Supervisor(Protocol):
    """What the observer reads of the master, and the control commands it may
    run there (the arbiter is one; the observer never imports it)."""

    cfg: Config
    log: Logger
    generation: int
    num_workers: int
    listeners: list[Listener]
    workers: dict[int, WorkerRecord]
    phase: Phase
    upgrade: Upgrade

    def handle_hup(self) -> None: ...
    def handle_term(self) -> None: ...
    def handle_usr1(self) -> None: ...
    def stop(self, graceful: bool, kill: bool = False) -> None: ...
    def set_num_workers(self, count: int, minimum: bool = True) -> None: ...
    def replace_worker(self, pid: int, reason: str) -> bool: ...

TICK = 1.0  # seconds between looks at the listen queues (and statsd gauges)
QUEUE_WARNING_INTERVAL = 10.0  # at most one "queue full" line per listener this often
RETRY_BIND = 1.0  # while the master this one replaces still holds an endpoint's address
# A worker killed by one of these signals crashed; by any other, it was stopped
# from outside (the OOM killer, an operator).
CRASH_SIGNALS = {signal.SIGSEGV, signal.SIGBUS, signal.SIGILL, signal.SIGFPE, signal.SIGABRT}
METRICS_UNIX_MODE = 0o660
FLAGS = {"metrics": "--metrics-bind", "control": "--control-socket"}
# Settings of the master's own endpoints, which a reload does not change.
RESTART_ONLY = {"metrics_bind": "--metrics-bind", "control_socket": "--control-socket",
                "control_socket_mode": "--control-socket-mode",
                "control_socket_disable": "--no-control-socket"}


class Observer:
    """The master's reporting: ``Observer(arbiter)``, then ``open`` at start."""

    def __init__(self, arbiter: Supervisor) -> None:
        self.arbiter = arbiter
        self.log = arbiter.log
        self.started_wall = time.time()
        self.started = time.monotonic()
        self.exited = Totals()  # counts of workers that are gone
        self.restarts: Counter[str] = Counter()
        self.timeouts = 0
        self.endpoints: list[Endpoint] = []
        self.pending: dict[str, float] = {}  # endpoint kind -> next bind attempt
        self.statsd: StatsdClient | None = None
        self._statsd_handler: StatsdLogHandler | None = None
        self._memory = MemoryReader()
        self._worker_sockets: dict[int, set[int]] = {}  # pid -> socket inodes (--reuse-port)
        self._queue_warned: dict[tuple[str, int], float] = {}
        self._next_tick = 0.0
        self.waiting = 0  # connections in the listen queues at the last tick
        self._workers_sent = -1
        self._killed_requests: dict[int, list[Any]] = {}  # pid -> requests when the timeout hit

    @property
    def cfg(self) -> Config:
        return self.arbiter.cfg

    # --- start and stop

    def open(self) -> None:
        """Create what the settings ask for; EndpointError (one line) if impossible."""
        self._open_statsd()
        for kind in ("metrics", "control"):
            self._open(kind, first=True)

    def _wanted(self, kind: str) -> str | None:
        if kind == "metrics":
            return self.cfg.metrics_bind
        if self.cfg.control_socket_disable:
            return None
        return self.cfg.control_socket

    def _open(self, kind: str, first: bool = False) -> None:
        """Create one endpoint. At start a failure is an EndpointError (the
        server does not start); later (a retry) it is logged, and the server
        goes on without it."""
        where = self._wanted(kind)
        if where is None:
            return
        try:
            endpoint = self._make(kind, where)
        except AddressBusy as exc:
            if self._replacing():
                if first:
                    self.log.info("%s: in use by the master this one replaces; taking it over "
                                  "when that one lets go", kind.capitalize())
                self.pending[kind] = time.monotonic() + RETRY_BIND
                return
            error: EndpointError = exc
        except EndpointError as exc:
            error = exc
        else:
            self.pending.pop(kind, None)
            self.endpoints.append(endpoint)
            self.log.info("%s", _announce(endpoint, kind))
            return
        self.pending.pop(kind, None)
        message = f"{FLAGS[kind]}: {error}"
        if first:
            raise EndpointError(message)
        self.log.error("%s; serving without it", message)

    def _replacing(self) -> bool:
        """This master is the new one of an upgrade and the old one still runs."""
        return self.arbiter.upgrade.replaced_running()

    def _make(self, kind: str, where: str) -> Endpoint:
        if kind == "control":
            path = os.path.abspath(where)
            sock = listen_unix(path, self.cfg.control_socket_mode)
            return ControlEndpoint(sock, path, self.log, Commands(self))
        address = parse_address(where)
        if address.kind == "unix":
            path = os.path.abspath(address.path)
            sock = listen_unix(path, METRICS_UNIX_MODE)
            return MetricsEndpoint(sock, f"metrics unix:{path}", self.log, self.render,
                                   owned_path=path)
        sock = listen_tcp(address)
        return MetricsEndpoint(sock, "metrics", self.log, self.render)

    def _open_statsd(self) -> None:
        host = self.cfg.statsd_host
        if self.statsd is not None:
            self._detach_statsd_handler()
            self.statsd.close()
            self.statsd = None
        if not host:
            return
        self.statsd = StatsdClient(host, self.cfg.statsd_prefix, self.cfg.dogstatsd_tags)
        self._attach_statsd_handler()

    def _attach_statsd_handler(self) -> None:
        if self.statsd is None:
            return
        self._statsd_handler = self.statsd.log_handler()
        self.log.error_log.addHandler(self._statsd_handler)

    def _detach_statsd_handler(self) -> None:
        if self._statsd_handler is not None:
            for logger in (self.log.error_log, logging.getLogger("prefork.error")):
                logger.removeHandler(self._statsd_handler)
            self._statsd_handler = None

    def config_changed(self, old: Config) -> None:
        """After a reload: the new logging setup lost our log handler; statsd
        settings apply to the next workers; endpoints change only on restart."""
        cfg = self.cfg
        if (cfg.statsd_host, cfg.statsd_prefix, cfg.dogstatsd_tags) != (
                old.statsd_host, old.statsd_prefix, old.dogstatsd_tags):
            self._open_statsd()
        else:
            self._detach_statsd_handler()
            self._attach_statsd_handler()
        for name, flag in RESTART_ONLY.items():
            if cfg.get(name) != old.get(name):
                self.log.warning("Reload: a changed %s takes effect only on restart or USR2", flag)

    def close_in_child(self) -> None:
        """In a new worker: drop the master's endpoints (the statsd socket stays)."""
        for endpoint in self.endpoints:
            endpoint.close_in_child()
        self.endpoints.clear()

    def close(self) -> None:
        for endpoint in self.endpoints:
            endpoint.close()
        self.endpoints.clear()
        self._detach_statsd_handler()

    # --- the loop

    def wait(self, fds: list[int], timeout: float) -> list[int]:
        """Wait for ``fds`` (the arbiter's wake-up pipe) or ``timeout``, serving
        the endpoints meanwhile; returns the ready ``fds``."""
        now = time.monotonic()
        deadline = min((d for d in (e.next_deadline() for e in self.endpoints) if d), default=0.0)
        if deadline:
            timeout = min(timeout, max(deadline - now, 0.0))
        return serve_poll(self.endpoints, fds, timeout)

    def next_check(self, now: float) -> float:
        """The latest time the loop should come back for us."""
        candidates = [self._next_tick, *self.pending.values()]
        return min((c for c in candidates if c > now), default=now + TICK)

    def tick(self, now: float) -> None:
        """Once a second: the listen queues, statsd's gauges, pending binds."""
        for kind, when in list(self.pending.items()):
            if now >= when:
                self._open(kind)
        if now < self._next_tick:
            return
        self._next_tick = now + TICK
        listeners = self.listener_views()
        self.waiting = sum(v.queue.length for v in listeners if v.queue is not None)
        self._warn_full(listeners, now)
        if self.statsd is not None:
            self._send_gauges(listeners)

    def _warn_full(self, listeners: list[ListenerView], now: float) -> None:
        for listener in listeners:
            queue = listener.queue
            if queue is None or not queue.full:
                continue
            key = (listener.name, listener.pid)
            if now - self._queue_warned.get(key, -QUEUE_WARNING_INTERVAL) < QUEUE_WARNING_INTERVAL:
                continue
            self._queue_warned[key] = now
            whose = f" (worker {listener.pid}'s own socket)" if listener.pid else ""
            self.log.warning("Listen queue full on %s%s: %d connections wait, the limit is %d; "
                             "new connections are dropped or refused (see --backlog, --workers)",
                             listener.name, whose, queue.length, queue.limit)

    def _send_gauges(self, listeners: list[ListenerView]) -> None:
        assert self.statsd is not None
        live = len(self.arbiter.workers)
        if live != self._workers_sent:
            self._workers_sent = live
            self.statsd.gauge("gunicorn.workers", live)
        if self.cfg.enable_backlog_metric:
            waiting = sum(lv.queue.length for lv in listeners if lv.queue is not None)
            self.statsd.timing("gunicorn.backlog", waiting)

    # --- workers

    def worker_timed_out(self, record: WorkerRecord) -> None:
        """The timeout is killing this worker: its requests count as timed out."""
        in_progress = record.slot.requests_in_progress()
        self.timeouts += len(in_progress)
        self._killed_requests[record.pid] = in_progress

    def worker_exited(self, record: WorkerRecord, status: int, reason: str, replaced: bool) -> None:
        """Keep what the worker counted; count its restart; and, for a worker
        the timeout had to SIGKILL (it could not write its access line), write
        the lines of its requests."""
        slot = record.slot
        self.exited.add_blocks(slot.counters(t).tolist() for t in range(slot.threads))
        if replaced:
            self.restarts[reason] += 1
        killed = self._killed_requests.pop(record.pid, [])
        if killed and os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL:
            self._log_killed_requests(killed)
        self._worker_sockets.pop(record.pid, None)

    def _log_killed_requests(self, requests: list[Any]) -> None:
        now_wall, now = time.time(), time.monotonic()
        for request in requests:
            duration = now - request.started
            self.log.access_timed_out(RequestLine(request.line), None, {}, now_wall - duration,
                                      duration)

    # --- reading the server

    def view(self) -> ServerView:
        now = time.monotonic()
        arbiter = self.arbiter
        totals = self.exited.copy()
        workers = []
        for record in list(arbiter.workers.values()):
            slot = record.slot
            totals.add_blocks(slot.counters(t).tolist() for t in range(slot.threads))
            workers.append(_worker_view(record, now))
        timeouts = self.timeouts + totals.timeouts
        return ServerView(
            workers=workers, listeners=self.listener_views(), totals=totals,
            restarts={reason: self.restarts.get(reason, 0) for reason in
                      (*RESTART_REASONS, *sorted(set(self.restarts) - set(RESTART_REASONS)))},
            timeouts=timeouts, wanted_workers=arbiter.num_workers, generation=arbiter.generation,
            phase=arbiter.phase.value, version=__version__, worker_class=_worker_class(arbiter),
            memory=self._memory.read(w.pid for w in workers),
        )

    def render(self, openmetrics: bool) -> bytes:
        return collect(self.view(), process_figures(self.started_wall)).render(openmetrics)

    def listener_views(self) -> list[ListenerView]:
        views = []
        unix: dict[int, tuple[str, str]] = {}  # inode -> (name, path)
        per_worker = [listener for listener in self.arbiter.listeners if listener.per_worker]
        for listener in self.arbiter.listeners:
            if listener.per_worker:
                continue
            sock = listener.sock
            try:
                if sock.family == socket.AF_UNIX:
                    unix[socket_inode(sock)] = (listener.url(), _unix_path(sock))
                    continue
                name = listener.url()
            except OSError:  # closed: the server is stopping
                continue
            views.append(ListenerView(name, 0, tcp_queue(sock)))
        if unix:
            queues = unix_queues(unix, {ino: path for ino, (_, path) in unix.items() if path})
            views += [ListenerView(name, 0, queues.get(ino)) for ino, (name, _) in unix.items()]
        if per_worker:
            views += self._worker_queues(per_worker)
        return views

    def _worker_queues(self, reservations: list[Any]) -> list[ListenerView]:
        """--reuse-port: each worker's own listening sockets, found by inode."""
        names = {}
        for listener in reservations:
            try:
                names[listener.sock.getsockname()[1]] = listener.url()
            except OSError:
                continue
        shared = set()
        for listener in self.arbiter.listeners:
            try:
                shared.add(socket_inode(listener.sock))
            except OSError:
                continue
        owner: dict[int, int] = {}
        for record in list(self.arbiter.workers.values()):
            if not record.ready:
                continue
            inodes = self._worker_sockets.get(record.pid)
            if not inodes:
                inodes = process_socket_inodes(record.pid) - shared
                self._worker_sockets[record.pid] = inodes
            owner.update(dict.fromkeys(inodes, record.pid))
        views = []
        for inode, (port, queue) in sorted(tcp_queues_by_inode(owner).items()):
            if port in names:
                views.append(ListenerView(names[port], owner[inode], queue))
        return views

    # --- what the control socket asks (Controlled)

    def config_rows(self) -> list[dict[str, Any]]:
        cfg = self.cfg
        return [{"name": name, "value": _jsonable(value), "source": cfg.sources.get(name, "default")}
                for name, value in cfg.items()]

    def uptime(self) -> float:
        return time.monotonic() - self.started

    def workers_wanted(self) -> int:
        return self.arbiter.num_workers

    def set_workers(self, count: int) -> int:
        previous = self.arbiter.num_workers
        self.arbiter.set_num_workers(count)
        return previous

    def kill_worker(self, pid: int) -> bool:
        return self.arbiter.replace_worker(pid, SIGNAL)

    def reload(self) -> None:
        self.arbiter.handle_hup()

    def reopen(self) -> None:
        self.arbiter.handle_usr1()

    def shutdown(self, graceful: bool) -> None:
        if graceful:
            self.arbiter.handle_term()
        else:
            self.arbiter.stop(graceful=False)


def exit_reason(record: WorkerRecord, status: int) -> str:
    """Why a worker went: the master's reason if it asked, else crash or signal."""
    if record.reason:
        return record.reason
    if os.WIFSIGNALED(status):
        return CRASH if os.WTERMSIG(status) in CRASH_SIGNALS else SIGNAL
    return SIGNAL if os.waitstatus_to_exitcode(status) == 0 else CRASH


def _worker_view(record: WorkerRecord, now: float) -> WorkerView:
    slot = record.slot
    state = slot.state()
    in_flight = tuple(InFlight(r.thread, r.line, max(0.0, now - r.started))
                      for r in slot.requests_in_progress())
    label = "booting" if state == BOOTING else ("busy" if state == BUSY or in_flight else "idle")
    return WorkerView(pid=record.pid, state=label, age=now - record.started,
                      requests=slot.requests(), generation=record.generation,
                      threads=slot.threads, busy_threads=len(in_flight), in_flight=in_flight)


def _worker_class(arbiter: Supervisor) -> str:
    return str(getattr(arbiter.cfg, "worker_class", "sync") or "sync")


def _unix_path(sock: socket.socket) -> str:
    name = sock.getsockname()
    return name if isinstance(name, str) else ""


def _jsonable(value: Any) -> Any:
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if callable(value):
        return f"{getattr(value, '__module__', '?')}.{getattr(value, '__qualname__', repr(value))}"
    return repr(value)


def _announce(endpoint: Endpoint, kind: str) -> str:
    if kind == "control":
        return f"Control socket at {endpoint.owned_path} (preforkctl -s {endpoint.owned_path})"
    if endpoint.owned_path:
        return f"Metrics at unix:{endpoint.owned_path} (GET /metrics)"
    host, port = endpoint.sock.getsockname()[:2]
    if endpoint.sock.family == socket.AF_INET6:
        host = f"[{host}]"
    return f"Metrics at http://{host}:{port}/metrics"
