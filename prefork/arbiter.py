# The master. It binds (or inherits) the listening sockets once, forks the
# workers, and from then on only reacts, in one loop:
#
#     wait for a signal or a deadline → handle queued signals
#     → reap dead children → note who became ready → murder stale workers
#     → recycle, scale and maintain the workers
#
# Signal handlers only append the signal to a queue; the byte that
# ``signal.set_wakeup_fd`` writes to a pipe ends the wait. Everything else
# happens in the loop, outside handler context. What the master knows of each
# worker is its ``WorkerRecord`` and its heartbeat slot; a worker reports
# "ready" and "replace me" through the slot and wakes the master with SIGCHLD;
# readiness is noted before the turn's plan, so a replacement that became
# ready gets its predecessor retired in the same turn.
#
# The decisions are not made here: ``WorkerSet`` (workerset.py) says what to
# spawn, retire, abort or kill and when to back off, ``Recycler`` and
# ``Scaler`` when to replace and resize; this module carries them out, and
# keeps the server's ``Phase``. Binding the sockets (binding.py), --daemon
# (daemon.py) and the USR2 upgrade (upgrade.py) are modules of their own.
#
# Workers are stopped in one of two ways. ``TERM`` stops one at once when it
# is idle, and is used only for a full stop, after the master has closed its
# copies of the listeners so the workers drain the listen queue. Everywhere
# the listening sockets stay in use (reload, recycling, fewer workers, WINCH,
# an upgraded master taking over) a worker is *retired* with ``HUP``: it
# finishes what it is doing and exits as soon as it is idle (an idle one at
# once), so no connection the kernel has handed it is ever dropped.
from __future__ import annotations

import collections
import errno
import fcntl
import gc
import os
import signal
import time
from collections.abc import Callable
from typing import Any

from . import binding
from .app import AppNotFound, load_app, prepare_path
from .daemon import Launcher
from .endpoint import EndpointError
from .heartbeat import BUSY, IDLE, HeartbeatSlot, beat_interval, default_tmp_dir
from .logs import Logger
from .metrics import worker_memory
from .observe import Observer, exit_reason
from .pidfile import Pidfile, PidfileError
from .records import WorkerRecord
from .recycling import KILL, MIB, Recycler
from .reloader import Reloader
from .scaling import SCALE_INTERVAL, Scaler, load_of, over_budget, settled_pool
from .settings import Config, ConfigError
from .sockets import Listener, close_listeners
from .stats import (
    MEMORY,
    RELOAD_FAILED,
    RESTART_REASONS,
    STOP,
    TIMEOUT,
)
from .systemd import Notifier, watchdog_interval
from .tls import TLSSetupError, build_context
from .tls import describe as describe_tls
from .upgrade import Upgrade, exec_new_master
from .workers import worker_class
from .workers.base import EXIT_APP_LOAD_ERROR, EXIT_BOOT_ERROR, run_hook
from .workerset import ABORT_GRACE, TORN, Phase, WorkerSet

SIGNALS = ("HUP", "QUIT", "INT", "TERM", "TTIN", "TTOU", "USR1", "USR2", "WINCH", "CHLD")
RETIRE = signal.SIGHUP  # to a worker: finish, then exit when idle
# What the master sends workers; blocked across fork() until the worker's handlers exist.
WORKER_SIGNALS = {signal.SIGHUP, signal.SIGTERM, signal.SIGINT, signal.SIGQUIT,
                  signal.SIGABRT, signal.SIGUSR1}
QUICK_STOP_TIMEOUT = 5.0
STATUS_INTERVAL = 5.0  # how often systemd's STATUS= is refreshed without a watchdog


class StartupError(Exception):
    """The server cannot start; the message is one line (exit status 1)."""


class SpawnError(Exception):
    """A worker could not be started; the message says why, in one line."""


class Arbiter:
    """The master process: ``Arbiter(cfg, log).run()`` serves until stopped."""

    def __init__(self, cfg: Config, log: Logger, notifier: Notifier | None = None,
                 reload_config: Callable[[], Config] | None = None) -> None:
        self.cfg = cfg
        self.log = log
        self.notifier = notifier or Notifier()
        self.reload_config = reload_config
        self.pid = os.getpid()
        self.start_cwd = os.getcwd()
        self.listeners: list[Listener] = []
        self.workers: dict[int, WorkerRecord] = {}
        self.num_workers = cfg.workers
        self.min_workers = cfg.workers  # TTIN/TTOU move it; --workers-max scales above it
        self.worker_age = 0
        self.generation = 1
        self.app: Any = None  # the application, with --preload
        self.phase = Phase.STARTING
        self.healthy = False  # the first generation has booted (once, whatever came after)
        self.stop_at = 0.0  # --shutdown-delay: when the stop will begin (0: not scheduled)
        self.stop_deadline = 0.0
        self.exit_code = 0
        self.pidfile: Pidfile | None = None
        self.upgrade = Upgrade(log)  # USR2, either end
        self.activated = False  # the sockets came from systemd: use them as they are
        self.watchdog = 0.0  # seconds between WATCHDOG=1 pings, 0 when off
        self.next_ping = 0.0
        self.served_by_exited = 0  # requests served by workers that are gone
        self.launcher = Launcher()  # --daemon: tells the launching process how the start went
        self.ssl_context: Any = None  # built once from the settings, shared by the workers
        self.sig_queue: collections.deque[int] = collections.deque()
        self._wake_r = self._wake_w = -1
        self.observer = Observer(self)  # metrics, control socket, statsd
        self.recycler = Recycler(log)  # --max-worker-lifetime, --max-worker-memory
        self.scaler = Scaler()  # --workers-max
        self.workerset = WorkerSet(_usable_cores())  # what to spawn and retire
        self.next_scale = 0.0
        self.budget_logged = False
        self.reloader = Reloader(cfg, log)  # --reload

    # --- start and the main loop

    def run(self) -> int:
        """Serve until stopped; returns the process exit status."""
        try:
            self.start()
            while not (self.stopping and not self.workers):
                self.wait()
                self.handle_signals()
                self.reap()
                self.check_progress()
                self.murder()
                self.recycle()
                self.scale()
                self.maintain()
                self.ping()
                self.observer.tick(time.monotonic())
                self.reload_on_change()
        except StartupError as exc:
            self.log.error("%s", exc)
            self.exit_code = 1
        finally:
            self.halt()
        return self.exit_code

    def start(self) -> None:
        from setproctitle import setproctitle

        setproctitle(f"prefork: master [{self.cfg.title_name}]")
        if self.cfg.umask is not None:
            os.umask(self.cfg.umask)
        for pair in self.cfg.raw_env:
            key, _, value = pair.partition("=")
            os.environ[key] = value
        self.log.info("Starting prefork %s", _version())
        self.hook("on_starting", self)
        self._load_tls()
        check_worker_tmp_dir(self.cfg.worker_tmp_dir)
        self._install_signals()
        try:
            bound = binding.bind(self.cfg, self.log, self.pid, self.ssl_context is not None,
                                 (_id(self.cfg.user), _id(self.cfg.group)))
        except binding.BindingError as exc:
            raise StartupError(str(exc)) from None
        self.listeners, self.activated = bound.listeners, bound.activated
        try:
            self.observer.open()
        except EndpointError as exc:
            raise StartupError(str(exc)) from None
        if self.cfg.daemon and not self.upgrade.replaces:  # an upgrade's new master is detached already
            self.launcher.daemonize()
            self.pid = os.getpid()
            self.log.standard_streams_changed()
        self.watchdog = watchdog_interval(os.environ, self.pid)
        if self.cfg.user is not None or self.cfg.group is not None:
            self.log.chown_files(_id(self.cfg.user), _id(self.cfg.group))
        if self.cfg.pidfile:
            self.pidfile = Pidfile(self.cfg.pidfile)
            try:
                self.pidfile.create(self.pid)
            except PidfileError as exc:
                self.pidfile = None
                raise StartupError(str(exc)) from None
        if self.cfg.preload_app:
            self._preload()
        self.reloader.start()
        self.log.info("Using worker: %s", self.cfg.worker_class)
        self.hook("nworkers_changed", self, self.num_workers, None)
        self.maintain()

    def _load_tls(self) -> None:
        """Build the TLS context before any fork: a bad certificate is a one-line error."""
        try:
            self.ssl_context = build_context(self.cfg)
        except TLSSetupError as exc:
            raise StartupError(str(exc)) from None
        missing = {"tls"} if self.ssl_context else set()
        if self.cfg.proxy_protocol:
            missing.add("proxy_protocol")
        missing -= worker_class(self.cfg.worker_class).supports
        if missing:
            raise StartupError(f"the {self.cfg.worker_class} worker does not support "
                               f"{' and '.join(sorted(missing))} yet")
        if self.ssl_context is not None:
            self.log.info("%s", describe_tls(self.cfg))

    def _reload_tls(self) -> None:
        """Load the certificate again (renewals need no restart); keep the old one on error."""
        try:
            context = build_context(self.cfg)
        except TLSSetupError as exc:
            self.log.error("Reload: %s; keeping the previous TLS certificate", exc)
            return
        if (context is None) != (self.ssl_context is None):
            self.log.warning("Reload: turning TLS on or off takes effect only on restart or USR2")
            return
        self.ssl_context = context

    def _preload(self) -> None:
        try:
            prepare_path(self.cfg.chdir, self.cfg.pythonpath)
            self.app = load_app(self.cfg.app_uri)
        except AppNotFound as exc:
            raise StartupError(f"cannot load the application: {exc}") from None
        except Exception as exc:
            self.log.traceback(f"cannot load the application {self.cfg.app_uri!r}", exc)
            raise StartupError("Shutting down: the application could not be loaded") from None
        # Move everything imported so far out of the collector's reach, so that
        # collections in the workers do not write to (and un-share) its pages.
        gc.freeze()
        self.workerset.preloaded = True

    def _install_signals(self) -> None:
        self._wake_r, self._wake_w = os.pipe()
        for fd in (self._wake_r, self._wake_w):
            os.set_blocking(fd, False)
            fcntl.fcntl(fd, fcntl.F_SETFD, fcntl.FD_CLOEXEC)
        signal.set_wakeup_fd(self._wake_w, warn_on_full_buffer=False)
        for name in SIGNALS:
            signal.signal(getattr(signal, f"SIG{name}"), self._on_signal)

    def _on_signal(self, signum: int, frame: object) -> None:
        self.sig_queue.append(signum)

    def wait(self) -> None:
        """Sleep until a signal arrives or the next check is due, serving the
        metrics and control endpoints meanwhile (without blocking on them)."""
        if not self.sig_queue:
            self.observer.wait([self._wake_r, *self.reloader.fds()], self._next_check())
        try:
            while os.read(self._wake_r, 4096):
                pass
        except (BlockingIOError, InterruptedError):
            pass

    def _next_check(self) -> float:
        now = time.monotonic()
        delay = beat_interval(self.cfg.timeout)
        for deadline in (self.workerset.next_check(now), self.stop_at, self.stop_deadline,
                         self.next_ping, self.observer.next_check(now),
                         self.recycler.next_check(now),
                         self.next_scale if self.cfg.workers_max else 0.0,
                         self.reloader.next_check(now)):
            if deadline > now:
                delay = min(delay, deadline - now)
        if self.stopping or any(r.aborted_at for r in self.workers.values()):
            delay = min(delay, 0.1)
        return max(delay, 0.001)

    # --- signals

    def handle_signals(self) -> None:
        while self.sig_queue:
            signum = self.sig_queue.popleft()
            name = signal.Signals(signum).name[3:].lower()
            if signum != signal.SIGCHLD:
                self.log.info("Handling signal: %s", name)
            getattr(self, f"handle_{name}")()

    def handle_chld(self) -> None:
        pass  # reaping and readiness checks happen in every turn of the loop

    @property
    def shutting_down(self) -> bool:
        """A stop has begun or is scheduled (--shutdown-delay)."""
        return self.phase is Phase.STOPPING

    @property
    def stopping(self) -> bool:
        """The stop has begun: the workers are draining."""
        return self.phase is Phase.STOPPING and not self.stop_at

    def _settle(self) -> None:
        """Back to running (or upgrading) after a start, a reload or an upgrade's end."""
        self.phase = Phase.UPGRADING if self.upgrade.new_master else Phase.RUNNING

    def handle_term(self) -> None:
        if self.shutting_down:
            return
        delay = self.cfg.shutdown_delay
        if delay:
            self.log.info("Shutdown delay: serving for %.1f s more before stopping", delay)
            self.stop_at = time.monotonic() + delay
            self.phase = Phase.STOPPING
            self.notifier.notify("STOPPING=1")
        else:
            self.stop(graceful=True)

    def handle_int(self) -> None:
        self.stop(graceful=False)

    def handle_quit(self) -> None:
        self.stop(graceful=False)

    def handle_hup(self) -> None:
        if self.shutting_down:
            return
        self.reload()

    def handle_ttin(self) -> None:
        self.move_minimum(1)

    def handle_ttou(self) -> None:
        self.move_minimum(-1)

    def move_minimum(self, step: int) -> None:
        """One worker more (or fewer) now, and the same for the minimum that
        --workers-max scales above."""
        minimum = max(1, self.min_workers + step)
        self.set_num_workers(max(1, self.num_workers + step))
        self.min_workers = minimum

    def handle_usr1(self) -> None:
        self.log.reopen_files()
        if self.cfg.user is not None or self.cfg.group is not None:
            self.log.chown_files(_id(self.cfg.user), _id(self.cfg.group))
        for pid in self.workers:
            self._kill(pid, signal.SIGUSR1)

    def handle_winch(self) -> None:
        if self.shutting_down:
            return
        self.log.info("Stopping all workers; the master keeps running (HUP starts them again)")
        self.set_num_workers(0)

    def set_num_workers(self, count: int, minimum: bool = True) -> None:
        """Want ``count`` workers; ``minimum``: it is also the new minimum."""
        if minimum:
            self.min_workers = count
        if count == self.num_workers:
            return
        old, self.num_workers = self.num_workers, count
        self.log.info("Number of workers: %d (was %d)", count, old)
        self.hook("nworkers_changed", self, count, old)
        self._status()

    # --- reload (HUP)

    def reload(self) -> None:
        """Re-read the config, then roll a new generation of workers in."""
        if self.reload_config is not None:
            cwd = os.getcwd()  # --preload --chdir moved the master; paths are relative to the start
            try:
                os.chdir(self.start_cwd)
                cfg = self.reload_config()
            except Exception as exc:  # whatever is wrong with it, the server keeps running
                message = exc.format_message() if hasattr(exc, "format_message") else str(exc)
                self.log.error("Reload: the config has an error, keeping the current one: %s",
                               message)
            else:
                self._apply_config(cfg)
            finally:
                os.chdir(cwd)
        self._reload_tls()
        self.hook("on_reload", self)
        if self.phase is not Phase.STARTING:  # a HUP during the start: the start goes on
            self.phase = Phase.RELOADING
        self.generation += 1
        self.notifier.notify("RELOADING=1", f"MONOTONIC_USEC={time.monotonic_ns() // 1000}",
                             "STATUS=reloading")
        if self.cfg.preload_app:
            self.log.info("Reloading: new workers (--preload: application code is not reloaded)")
        else:
            self.log.info("Reloading: starting generation %d of workers", self.generation)
        if self.num_workers == 0:
            self.set_num_workers(self.cfg.workers)

    def _apply_config(self, cfg: Config) -> None:
        if cfg.bind != self.cfg.bind:
            self.log.warning("Reload: a changed --bind takes effect only on restart or USR2")
        if cfg.reuse_port != self.cfg.reuse_port:
            self.log.warning("Reload: a changed --reuse-port takes effect only on restart or USR2")
        try:
            self.log.reconfigure(cfg)
        except (OSError, ConfigError) as exc:
            self.log.error("Reload: keeping the current logging settings: %s", exc)
        old, self.cfg = self.cfg, cfg
        self.observer.config_changed(old)
        binding.set_timeouts(self.listeners, self.cfg.timeout)
        for warning in cfg.warnings:
            self.log.warning("%s", warning)
        self.set_num_workers(cfg.workers)

    def _end_reload(self, failed: str = "") -> None:
        self._settle()
        if failed:
            self.log.error("Reload failed, keeping the workers of the previous generation: %s", failed)
            for record in self.workers.values():
                if record.generation == self.generation and not record.ready:
                    self._kill(record.pid, signal.SIGKILL)
                    record.killed = True
                    record.reason = record.reason or RELOAD_FAILED
            self.generation -= 1
            for record in self.workers.values():
                record.generation = min(record.generation, self.generation)
        else:
            self.log.info("Reload complete: %d worker(s) of generation %d", self.num_workers,
                          self.generation)
        self.notifier.notify("READY=1", self._status_line())

    def reload_on_change(self) -> None:
        """--reload: a new generation once the server is up and a watched file changed."""
        self.reloader.step(time.monotonic())
        if self.healthy and not self.shutting_down and self.reloader.changed:
            changed = self.reloader.take_changes()
            more = f" and {len(changed) - 1} more" if len(changed) > 1 else ""
            self.log.info("Reload: %s changed%s", changed[0], more)
            self.reload()

    # --- binary upgrade (USR2)

    def handle_usr2(self) -> None:
        """Start a new master from the same command, handing it the sockets."""
        if self.shutting_down:
            self.log.warning("USR2 ignored: the server is stopping")
            return
        refusal = self.upgrade.refusal()
        if refusal:
            self.log.warning("USR2 ignored: %s", refusal)
            return
        self.upgrade.start(self.pidfile, self._exec_new_master)
        if self.phase is Phase.RUNNING:
            self.phase = Phase.UPGRADING

    def _exec_new_master(self) -> None:
        self.hook("pre_exec", self)
        exec_new_master(self.listeners, self.activated, bool(self.watchdog), self.start_cwd,
                        self.pid)

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
            if pid == self.upgrade.new_master:
                self.upgrade.failed(describe_exit(status), self.pidfile)
                if self.phase is Phase.UPGRADING:
                    self._settle()
                continue
            record = self.workers.pop(pid, None)
            if record is None:
                continue  # not ours (e.g. an orphan adopted by PID 1): reaped quietly
            reason = STOP if self.stopping else exit_reason(record, status)
            replaced = reason in RESTART_REASONS
            self._worker_exited(record, status, reason)
            self.observer.worker_exited(record, status, reason, replaced)
            self.served_by_exited += record.slot.requests()
            record.slot.close()
            self.hook("child_exit", self, record.worker)

    def _worker_exited(self, record: WorkerRecord, status: int, reason: str) -> None:
        how = describe_exit(status)
        code = os.waitstatus_to_exitcode(status)
        if record.boot_timed_out:
            self._boot_failed(record, "the application did not finish loading within "
                                      f"--boot-timeout {self.cfg.boot_timeout:g} s", timed_out=True)
        elif code in (EXIT_APP_LOAD_ERROR, EXIT_BOOT_ERROR):
            self._boot_failed(record, record.slot.error()
                              or f"worker {record.pid} failed to boot (exit {code})")
        elif record.aborted_at:
            self.log.info("Worker %s exited after its timeout (%s); reason: %s", record.pid, how, reason)
        elif self.stopping or record.retiring or record.killed or code == 0:
            self.log.info("Worker %s exited (%s); reason: %s", record.pid, how, reason)
        else:
            self.log.error("Worker %s died unexpectedly (%s); reason: %s", record.pid, how, reason)
            self._note_crash(record)

    def _boot_failed(self, record: WorkerRecord, message: str, timed_out: bool = False) -> None:
        # A worker killed on purpose (a stop, an abandoned reload) did not fail;
        # one killed because it ignored its boot timeout's SIGABRT did.
        if self.stopping or (record.killed and not timed_out):
            return
        if not self.healthy:
            # Never loop forking workers that cannot start: stop everything now.
            self.log.error("%s", message)
            self.log.error("Shutting down: the application could not be loaded")
            self.exit_code = 1
            self.stop(graceful=False, kill=True)
        elif self.phase is Phase.RELOADING and record.generation == self.generation:
            self._end_reload(failed=message)
        else:
            self.log.error("Worker %s failed to boot: %s", record.pid, message)
            self._note_crash(record, always=timed_out)

    def _note_crash(self, record: WorkerRecord, always: bool = False) -> None:
        """Back off from respawning when workers keep dying soon after they start
        (``always``: however long it lived, e.g. it never finished booting)."""
        delay = self.workerset.crashed(record.started, time.monotonic(), always)
        if delay:
            self.log.warning("Workers keep dying right after they start (%d in a row); "
                             "waiting %.2f s before starting another",
                             self.workerset.crash_streak, delay)

    def murder(self) -> None:
        """Abort workers whose heartbeat is stale; kill those that ignore it,
        and those still running when a stop's time is up."""
        now = time.monotonic()
        deadline = self.stop_deadline if self.stopping else 0.0
        for verdict in self.workerset.overdue(self.workers.values(), time.monotonic,
                                              self.cfg.timeout, self.cfg.boot_timeout, deadline):
            record = verdict.record
            if verdict.action == TORN:
                self.log.debug("Worker %s: impossible heartbeat %r (a torn read), not a timeout",
                               record.pid, verdict.beat)
            elif verdict.action == KILL:
                if verdict.late:
                    self.log.warning("Worker %s did not stop in time; killing it", record.pid)
                self._kill(record.pid, signal.SIGKILL)
                record.killed = True
            else:
                self._abort(record, verdict.silent, verdict.booting, now)

    def _abort(self, record: WorkerRecord, stale: float, booting: bool, now: float) -> None:
        self._report_timeout(record, stale, booting, now)
        record.aborted_at = now
        record.reason = TIMEOUT
        self.observer.worker_timed_out(record)
        record.boot_timed_out = booting
        if booting and not self.healthy:
            # The server stops once this worker is reaped (after it has
            # logged where it is stuck): start no other meanwhile.
            self.workerset.hold(now + ABORT_GRACE + 1.0)
        self._kill(record.pid, signal.SIGABRT)

    def _report_timeout(self, record: WorkerRecord, stale: float, booting: bool, now: float) -> None:
        current = record.slot.current_request()
        if booting:
            doing = "while loading the application (see --boot-timeout)"
        elif current is not None:
            line, started = current
            doing = f"serving {line!r}, running for {now - started:.1f} s"
        else:
            doing = "not in a request"
        self.log.critical("WORKER TIMEOUT (pid:%s) no heartbeat for %.1f s, %s; sending SIGABRT",
                          record.pid, stale, doing)

    def recycle(self) -> None:
        """Replace workers past their lifetime or memory limit (gracefully, as
        --max-requests does); kill those past the hard memory limit."""
        if self.stopping:
            return
        for action in self.recycler.check(self.cfg, self.workers, self.generation, time.monotonic()):
            record = action.record
            if action.kind == KILL:
                self.log.error("Worker %s %s", record.pid, action.why)
                record.reason = record.reason or action.reason
                record.killed = True
                self._kill(record.pid, signal.SIGKILL)
            elif action.reason == MEMORY:
                self.log.warning("Worker %s %s", record.pid, action.why)
                record.replace = action.reason
            else:
                self.log.info("Worker %s %s", record.pid, action.why)
                record.replace = action.reason

    def scale(self) -> None:
        """--workers-max: a worker more when the pool is saturated, one fewer after
        --scale-down-after with spare capacity; never while a worker boots."""
        now = time.monotonic()
        if not self.cfg.workers_max or now < self.next_scale:
            return
        self.next_scale = now + SCALE_INTERVAL
        current = settled_pool(self.workers.values(), self.generation, self.num_workers)
        if self.phase is not Phase.RUNNING or not self.min_workers or current is None:
            self.scaler.hold()
            return
        load = load_of(current, self.observer.waiting)
        step, inputs = self.scaler.decide(now, load, self.num_workers, self.min_workers,
                                          max(self.cfg.workers_max, self.min_workers),
                                          self.cfg.scale_down_after)
        if step > 0 and self._over_memory_budget(current):
            return
        if step:
            self.budget_logged = False
            count = self.num_workers + step
            self.log.info("Scaling %s to %d worker%s: %s", "up" if step > 0 else "down",
                          count, "" if count == 1 else "s", inputs)
            self.set_num_workers(self.num_workers + step, minimum=False)

    def _over_memory_budget(self, current: list[WorkerRecord]) -> bool:
        budget = self.cfg.workers_max_memory
        if not budget:
            return False
        total = sum(sample[0] for r in current if (sample := worker_memory(r.pid)) is not None)
        if not over_budget(total, len(current), budget * MIB):
            return False
        if not self.budget_logged:
            self.budget_logged = True
            self.log.warning("Not scaling up past %d workers: they use %.1f MiB, and one more "
                             "would pass --workers-max-memory %d MiB", len(current),
                             total / MIB, budget)
        return True

    def maintain(self) -> None:
        """Bring the workers to ``num_workers`` ready ones of the current generation.

        Capacity never drops on purpose: a worker of an old generation, or one
        that asked to be replaced, is retired only once a replacement is ready.
        """
        now = time.monotonic()
        if self.stop_at and now >= self.stop_at:
            self.stop(graceful=True)
        if self.stopping:
            return
        plan = self.workerset.plan(self.workers.values(), self.num_workers, self.generation, now)
        for _ in range(plan.spawn):
            if not self.spawn_worker():
                return  # it failed: back off (or stop) before another
        for record, reason in plan.retire:
            self.retire(record, reason)

    def retire(self, record: WorkerRecord, reason: str) -> None:
        record.retiring = True
        record.reason = record.reason or reason
        self._kill(record.pid, RETIRE)

    def replace_worker(self, pid: int, reason: str) -> bool:
        """Replace worker ``pid`` as recycling does: its successor first, then a
        graceful retirement. False if there is no such live worker."""
        record = self.workers.get(pid)
        if record is None or record.retiring or record.killed or record.aborted_at:
            return False
        record.replace = reason
        self.maintain()
        return True

    def spawn_worker(self) -> bool:
        """Start one worker; False if that failed (the server backs off, or stops)."""
        try:
            self._spawn_worker()
        except (SpawnError, OSError) as exc:
            self._spawn_failed(str(exc))
            return False
        self.workerset.spawned()
        return True

    def _spawn_failed(self, reason: str) -> None:
        """Stop if the server never became healthy and this keeps happening;
        otherwise back off, doubling the wait."""
        delay = self.workerset.spawn_failed(time.monotonic(), self.healthy)
        if delay is None:
            self.log.error("Cannot start a worker: %s", reason)
            self.log.error("Shutting down: %d attempts in a row failed before the server was ready",
                           self.workerset.spawn_failures)
            self.exit_code = 1
            self.stop(graceful=False, kill=True)
            return
        self.log.error("Cannot start a worker: %s; trying again in %.2f s", reason, delay)

    def _spawn_worker(self) -> None:
        self.worker_age += 1
        tmp_dir = self.cfg.worker_tmp_dir or default_tmp_dir()
        try:
            slot = HeartbeatSlot(tmp_dir, self.slot_threads())
        except OSError as exc:  # ENOSPC, EMFILE, EACCES...
            raise SpawnError(f"cannot create its heartbeat file in {tmp_dir}: {exc.strerror}") from exc
        worker = worker_class(self.cfg.worker_class)(
            self.cfg, self.listeners, slot, self.log, self.worker_age, self.pid, app=self.app)
        worker.ssl_context = self.ssl_context
        worker.statsd = self.observer.statsd
        worker.app_files_report = self.reloader.report_path(self.worker_age)
        self.hook("pre_fork", self, worker)
        # Signals sent to the new worker before it has its own handlers must not
        # reach the master's: they stay pending until the worker unblocks them.
        mask = signal.pthread_sigmask(signal.SIG_BLOCK, WORKER_SIGNALS)
        try:
            pid = os.fork()
        except OSError as exc:  # EAGAIN under a process limit, ENOMEM
            slot.close()
            raise SpawnError(f"fork() failed: {exc.strerror}") from exc
        finally:
            if os.getpid() == self.pid:
                signal.pthread_sigmask(signal.SIG_SETMASK, mask)
        if pid == 0:
            code = EXIT_BOOT_ERROR
            try:
                self._become_child()
                worker.pid = os.getpid()
                self.hook("post_fork", self, worker)
                code = worker.init_process()
                self.hook("worker_exit", self, worker)
            finally:
                worker.exit(code)
        worker.pid = pid
        self.workers[pid] = WorkerRecord(pid, worker, self.generation, slot, time.monotonic())

    def slot_threads(self) -> int:
        """Request records per worker slot: one per thread that serves requests."""
        return self.cfg.threads if self.cfg.worker_class == "gthread" else 1

    def _become_child(self) -> None:
        """Drop what belongs to the master in a freshly forked worker."""
        signal.set_wakeup_fd(-1)
        self.launcher.close()
        os.close(self._wake_r)
        os.close(self._wake_w)
        for record in self.workers.values():
            record.slot.close()
        self.workers.clear()
        self.notifier.close()
        self.observer.close_in_child()
        self.reloader.close_in_child()

    def check_progress(self) -> None:
        """Notice workers that became ready, and the end of a start or reload."""
        for record in self.workers.values():
            if not record.ready and record.slot.state() in (IDLE, BUSY):
                record.ready = True
        if self.stopping:
            return
        current = [r for r in self.workers.values()
                   if r.generation == self.generation and not r.retiring]
        done = len(current) >= self.num_workers and all(r.ready for r in current)
        if self.phase is Phase.STARTING and done and self.workers:
            self.healthy = True
            self._settle()
            self.log.info("Ready: %d worker(s) serving", len(current))
            self.hook("when_ready", self)
            self.launcher.tell(ready=True)
            self.notifier.notify("READY=1", self._status_line(), f"MAINPID={self.pid}")
            self.upgrade.took_over(self.pid, self.cfg.upgrade_auto)
        elif self.phase is Phase.RELOADING and done and all(r.generation == self.generation for r in self.workers.values()):
            self._end_reload()

    def ping(self) -> None:
        """Tell systemd the main loop is alive (watchdog) and how things stand."""
        if not self.notifier.enabled:
            return
        now = time.monotonic()
        if now < self.next_ping:
            return
        lines = [self._status_line()]
        if self.watchdog:
            lines.append("WATCHDOG=1")
        self.notifier.notify(*lines)
        self.next_ping = now + (self.watchdog or STATUS_INTERVAL)

    def _status_line(self) -> str:
        served = self.served_by_exited + sum(r.slot.requests() for r in self.workers.values())
        state = f"{self.phase}, " if self.phase in (Phase.RELOADING, Phase.STOPPING) else ""
        return f"STATUS={state}{len(self.workers)} workers, {served} requests served"

    def _status(self) -> None:
        self.notifier.notify(self._status_line())

    # --- stopping

    def stop(self, graceful: bool, kill: bool = False) -> None:
        if self.stopping and graceful:
            return
        first = not self.stopping
        self.phase = Phase.STOPPING
        self.stop_at = 0.0
        successor = self.upgrade.successor_running()
        if first:
            self.notifier.notify("STOPPING=1")
            if not successor:
                self._stop_listening()
        if kill:
            sig = signal.SIGKILL
        elif not graceful:
            sig = signal.SIGQUIT
        else:
            sig = RETIRE if successor else signal.SIGTERM
        limit = self.cfg.graceful_timeout if graceful else min(self.cfg.graceful_timeout, QUICK_STOP_TIMEOUT)
        self.stop_deadline = time.monotonic() + limit
        for record in self.workers.values():
            record.retiring = True
            if record.aborted_at and not record.killed:
                continue  # writing where it was stuck: SIGKILL after its grace (murder)
            self._kill(record.pid, sig)

    def _stop_listening(self) -> None:
        """Close the master's copies; the workers drain what is queued, then close theirs.

        The sockets' flags are left alone: they are shared with every process
        that holds the sockets, including another master after an upgrade."""
        close_listeners(self.listeners, unlink=self._may_unlink())

    def _may_unlink(self) -> bool:
        """Socket files go with the server, unless another master still uses them
        (the new one of an upgrade, or the old one while it is rolled back to)."""
        return not self.activated and not self.upgrade.other_master_running()

    def _kill(self, pid: int, sig: int) -> None:
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            pass
        except OSError as exc:
            if exc.errno != errno.ESRCH:
                raise

    def halt(self) -> None:
        """Last steps of the master: no worker, socket file or pid file left behind."""
        self.launcher.tell(ready=False)  # still waiting: the server never became ready
        for pid in list(self.workers):
            self._kill(pid, signal.SIGKILL)
        deadline = time.monotonic() + 5
        while self.workers and time.monotonic() < deadline:
            try:
                pid, _ = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                break
            if pid == 0:
                time.sleep(0.01)
                continue
            record = self.workers.pop(pid, None)
            if record is not None:
                record.slot.close()
        close_listeners(self.listeners, unlink=self._may_unlink())
        self.observer.close()
        self.reloader.close()
        if self.exit_code == 0:
            self.log.info("Shutting down: master")
        self.hook("on_exit", self)
        if self.pidfile is not None:
            self.pidfile.unlink(self.pid)
        self.notifier.close()

    # --- hooks

    def hook(self, name: str, *args: Any) -> None:
        run_hook(self.cfg, self.log, name, *args)


def check_worker_tmp_dir(tmp_dir: str | None) -> None:
    """``StartupError`` unless a worker's heartbeat file can be made in ``tmp_dir``:
    found at start, not by a master that retries every second with no worker."""
    try:
        HeartbeatSlot(tmp_dir).close()
    except (OSError, ValueError) as exc:
        where = tmp_dir or f"{default_tmp_dir()} (the default)"
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        raise StartupError(f"--worker-tmp-dir {where} cannot hold the workers' heartbeat "
                           f"files: {reason}") from None


def _id(value: int | None) -> int:
    """A uid or gid for os.chown; -1 leaves it unchanged."""
    return -1 if value is None else value


def describe_exit(status: int) -> str:
    if os.WIFSIGNALED(status):
        sig = os.WTERMSIG(status)
        try:
            name = signal.Signals(sig).name
        except ValueError:
            name = f"signal {sig}"
        return f"killed by {name}"
    return f"exit code {os.WEXITSTATUS(status)}"


def _usable_cores() -> int:
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return max(1, os.cpu_count() or 1)


def _version() -> str:
    from . import __version__

    return __version__
