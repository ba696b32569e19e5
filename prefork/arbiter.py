# The master. It binds (or adopts) the listening sockets once, forks the
# workers, and from then on only reacts, in one loop:
#
#     wait for a signal or a deadline → handle queued signals
#     → reap dead children → murder stale workers → maintain the worker count
#
# Signal handlers only append the signal to a queue; the write to the wakeup
# pipe (``signal.set_wakeup_fd``) ends the wait. Everything else happens in the
# loop, outside handler context. Workers are plain forked children; what the
# master knows of each is in its ``WorkerRecord`` and its heartbeat slot.
from __future__ import annotations

import collections
import errno
import fcntl
import os
import select
import signal
import sys
import time
from dataclasses import dataclass

from .heartbeat import BOOTING, HeartbeatSlot
from .logs import Logger
from .settings import Config
from .sockets import Listener, close_listeners, create_listeners, needs_poll
from .systemd import Notifier
from .workers.base import EXIT_APP_LOAD_ERROR, EXIT_BOOT_ERROR, Worker
from .workers.sync import SyncWorker

HANDLED_SIGNALS = ("TERM", "INT", "QUIT", "CHLD")
# After SIGABRT a stuck worker gets this long to write its stack before SIGKILL.
ABORT_GRACE = 2.0
# How often the master looks at booting workers' slots (to report readiness fast).
BOOT_POLL = 0.02
QUICK_STOP_TIMEOUT = 5.0


@dataclass
class WorkerRecord:
    pid: int
    age: int
    slot: HeartbeatSlot
    started: float
    aborted_at: float = 0.0
    killed: bool = False  # the master sent KILL (timeout or stop)


class Arbiter:
    def __init__(self, cfg: Config, log: Logger, notifier: Notifier | None = None) -> None:
        self.cfg = cfg
        self.log = log
        self.notifier = notifier or Notifier()
        self.pid = os.getpid()
        self.listeners: list[Listener] = []
        self.workers: dict[int, WorkerRecord] = {}
        self.num_workers = cfg.workers
        self.worker_age = 0
        self.healthy = False  # every initial worker has booted once
        self.stopping = False
        self.stop_deadline = 0.0
        self.exit_code = 0
        self.sig_queue: collections.deque[int] = collections.deque()
        self._wake_r = self._wake_w = -1

    # --- start and the main loop

    def run(self) -> int:
        """Serve until stopped; returns the process exit status."""
        self.start()
        try:
            while not (self.stopping and not self.workers):
                self.wait()
                self.handle_signals()
                self.reap()
                self.murder()
                self.maintain()
                self.check_ready()
        finally:
            self.cleanup()
        return self.exit_code

    def start(self) -> None:
        from setproctitle import setproctitle

        setproctitle(f"prefork: master [{self.cfg.title_name}]")
        self.log.info("Starting prefork %s", _version())
        self.listeners = create_listeners(self.cfg.addresses, self.cfg.backlog)
        self._configure_listeners()
        for listener in self.listeners:
            self.log.info("Listening at: %s (%s)", listener.url(), self.pid)
        self.log.info("Using worker: sync")
        self._install_signals()
        self.maintain()

    def _configure_listeners(self) -> None:
        import socket
        import struct

        beat = min(1.0, self.cfg.timeout / 4) if self.cfg.timeout else 1.0
        seconds = int(beat)
        rcv = struct.pack("@ll", seconds, int((beat - seconds) * 1_000_000))
        poll = needs_poll(self.listeners)
        for listener in self.listeners:
            listener.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO, rcv)
            listener.sock.setblocking(not poll)

    def _install_signals(self) -> None:
        self._wake_r, self._wake_w = os.pipe()
        for fd in (self._wake_r, self._wake_w):
            os.set_blocking(fd, False)
            fcntl.fcntl(fd, fcntl.F_SETFD, fcntl.FD_CLOEXEC)
        signal.set_wakeup_fd(self._wake_w, warn_on_full_buffer=False)
        for name in HANDLED_SIGNALS:
            signal.signal(getattr(signal, f"SIG{name}"), self._on_signal)

    def _on_signal(self, signum: int, frame: object) -> None:
        self.sig_queue.append(signum)

    def wait(self) -> None:
        """Sleep until a signal arrives or the next check is due."""
        if self.sig_queue:
            return
        timeout = self._next_check()
        try:
            select.select([self._wake_r], [], [], timeout)
        except InterruptedError:
            pass
        try:
            while os.read(self._wake_r, 4096):
                pass
        except (BlockingIOError, InterruptedError):
            pass

    def _next_check(self) -> float:
        if any(r.slot.state() == BOOTING for r in self.workers.values()):
            return BOOT_POLL
        if self.stopping:
            return 0.1
        timeout = self.cfg.timeout
        return min(1.0, timeout / 4) if timeout else 1.0

    # --- signals

    def handle_signals(self) -> None:
        while self.sig_queue:
            signum = self.sig_queue.popleft()
            name = signal.Signals(signum).name[3:].lower()
            if signum != signal.SIGCHLD:
                self.log.info("Handling signal: %s", name)
            getattr(self, f"handle_{name}")()

    def handle_chld(self) -> None:
        pass  # reaping happens in every turn of the loop

    def handle_term(self) -> None:
        self.stop(graceful=True)

    def handle_int(self) -> None:
        self.stop(graceful=False)

    def handle_quit(self) -> None:
        self.stop(graceful=False)

    # --- children

    def reap(self) -> None:
        """Collect every dead child without blocking."""
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            record = self.workers.pop(pid, None)
            if record is None:
                continue  # not ours (e.g. an orphan adopted by PID 1): reaped quietly
            self._worker_exited(record, status)
            record.slot.close()

    def _worker_exited(self, record: WorkerRecord, status: int) -> None:
        how = describe_exit(status)
        code = os.waitstatus_to_exitcode(status)
        if code in (EXIT_APP_LOAD_ERROR, EXIT_BOOT_ERROR):
            self._boot_failed(record, code)
            return
        if self.stopping or record.killed or code == 0:
            self.log.info("Worker %s exited (%s)", record.pid, how)
        else:
            self.log.error("Worker %s died unexpectedly (%s)", record.pid, how)

    def _boot_failed(self, record: WorkerRecord, code: int) -> None:
        message = record.slot.error() or f"worker {record.pid} failed to boot (exit {code})"
        if self.healthy or self.stopping:
            if not self.stopping:
                self.log.error("Worker %s failed to boot: %s", record.pid, message)
            return
        # Never loop forking workers that cannot start: stop everything now.
        self.log.error("%s", message)
        self.log.error("Shutting down: the application could not be loaded")
        self.exit_code = 1
        self.stop(graceful=False, kill=True)

    def murder(self) -> None:
        """Abort workers whose heartbeat is stale; kill those that ignore it."""
        if self.stopping:
            self.murder_on_stop()
        timeout = self.cfg.timeout
        now = time.monotonic()
        for record in list(self.workers.values()):
            if record.aborted_at:
                if not record.killed and now - record.aborted_at > ABORT_GRACE:
                    self._kill(record.pid, signal.SIGKILL)
                    record.killed = True
                continue
            booting = record.slot.state() == BOOTING
            limit = self.cfg.boot_timeout if booting else timeout
            if not limit:
                continue
            idle_for = now - record.slot.last_beat()
            if idle_for <= limit:
                continue
            self._report_timeout(record, idle_for, booting, now)
            record.aborted_at = now
            self._kill(record.pid, signal.SIGABRT)

    def _report_timeout(self, record: WorkerRecord, stale: float, booting: bool, now: float) -> None:
        current = record.slot.current_request()
        if booting:
            doing = "while loading the application (--boot-timeout)"
        elif current is not None:
            line, started = current
            doing = f"serving {line!r}, running for {now - started:.1f} s"
        else:
            doing = "not in a request"
        self.log.critical(
            "WORKER TIMEOUT (pid:%s) no heartbeat for %.1f s, %s; sending SIGABRT",
            record.pid, stale, doing,
        )

    def maintain(self) -> None:
        """Keep exactly ``num_workers`` workers running."""
        if self.stopping:
            return
        while len(self.workers) < self.num_workers:
            self.spawn_worker()
        excess = len(self.workers) - self.num_workers
        if excess > 0:
            for record in sorted(self.workers.values(), key=lambda r: r.age)[:excess]:
                self._kill(record.pid, signal.SIGTERM)

    def spawn_worker(self) -> None:
        self.worker_age += 1
        slot = HeartbeatSlot(self.cfg.worker_tmp_dir)
        worker = SyncWorker(self.cfg, self.listeners, slot, self.log, self.worker_age, self.pid)
        pid = os.fork()
        if pid == 0:
            self._become_child(slot)
            worker.init_process()  # never returns
            os._exit(0)
        self.workers[pid] = WorkerRecord(pid, self.worker_age, slot, time.monotonic())

    def _become_child(self, own_slot: HeartbeatSlot) -> None:
        """Drop what belongs to the master in a freshly forked worker."""
        os.close(self._wake_r)
        os.close(self._wake_w)
        for record in self.workers.values():
            record.slot.close()
        self.workers.clear()
        self.notifier.close()
        del own_slot

    def check_ready(self) -> None:
        if self.healthy or self.stopping or len(self.workers) < self.num_workers:
            return
        if any(r.slot.state() == BOOTING for r in self.workers.values()):
            return
        self.healthy = True
        self.log.info("Ready: %d worker(s) serving", len(self.workers))
        self.notifier.notify("READY=1", f"STATUS=serving with {len(self.workers)} workers",
                             f"MAINPID={self.pid}")

    # --- stopping

    def stop(self, graceful: bool, kill: bool = False) -> None:
        if self.stopping and graceful:
            return
        first = not self.stopping
        self.stopping = True
        if first:
            self.notifier.notify("STOPPING=1")
            self._stop_listening()
        if kill:
            sig = signal.SIGKILL
        else:
            sig = signal.SIGTERM if graceful else signal.SIGQUIT
        limit = self.cfg.graceful_timeout if graceful else min(self.cfg.graceful_timeout, QUICK_STOP_TIMEOUT)
        self.stop_deadline = time.monotonic() + limit
        for pid in list(self.workers):
            self._kill(pid, sig)

    def _stop_listening(self) -> None:
        """Stop taking new connections; workers still drain what is queued."""
        for listener in self.listeners:
            try:
                listener.sock.setblocking(False)  # shared: workers' accepts stop blocking
            except OSError:
                pass
        close_listeners(self.listeners, unlink=True)

    def murder_on_stop(self) -> None:
        if self.stopping and self.workers and time.monotonic() > self.stop_deadline:
            for record in self.workers.values():
                if not record.killed:
                    self.log.warning("Worker %s did not stop in time; killing it", record.pid)
                    self._kill(record.pid, signal.SIGKILL)
                    record.killed = True

    def _kill(self, pid: int, sig: int) -> None:
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            pass
        except OSError as exc:
            if exc.errno != errno.ESRCH:
                raise

    def cleanup(self) -> None:
        for pid in list(self.workers):
            self._kill(pid, signal.SIGKILL)
        deadline = time.monotonic() + 5
        while self.workers and time.monotonic() < deadline:
            try:
                pid, _ = os.waitpid(-1, 0)
            except ChildProcessError:
                break
            record = self.workers.pop(pid, None)
            if record is not None:
                record.slot.close()
        close_listeners(self.listeners, unlink=True)
        if self.exit_code == 0:
            self.log.info("Shutting down: master")
        self.notifier.close()


def describe_exit(status: int) -> str:
    if os.WIFSIGNALED(status):
        sig = os.WTERMSIG(status)
        try:
            name = signal.Signals(sig).name
        except ValueError:
            name = f"signal {sig}"
        return f"killed by {name}"
    return f"exit code {os.WEXITSTATUS(status)}"


def _version() -> str:
    from . import __version__

    return __version__


__all__ = ["Arbiter", "Worker", "describe_exit", "sys"]
