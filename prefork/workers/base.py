# What every worker does around its serving loop: become a worker after the
# fork (title, signals, parent-death signal), load the application, report
# readiness through its heartbeat slot, and answer the master's signals.
# Signal handlers only set flags, except that a TERM arriving while the worker
# is blocked waiting for a connection interrupts that wait (an idle worker
# stops at once), and ABRT (a timeout) writes where the worker is stuck.
#
# A worker whose master has died has nobody to enforce --timeout on it. The
# parent-death signal (TERM) or a thread watching the master's pidfd, whichever
# runs first, arms a kernel timer (ITIMER_REAL, SIGALRM left at its default
# action): the worker finishes its request if it can, and the kernel ends it
# at the deadline whatever it is doing. The thread covers a main thread that
# is inside C code that never returns to the interpreter, where the TERM
# handler cannot run.
from __future__ import annotations

import hashlib  # noqa: F401  (imported for the workers: see below)
import itertools
import os
import random
import select
import signal
import socket
import ssl  # noqa: F401  (imported for the workers: see below)
import sys
import threading
import time
import traceback
from types import FrameType
from typing import Any, NoReturn

from .. import SERVER_SOFTWARE
from ..app import application_files, describe_failure, load_app, prepare_path
from ..heartbeat import IDLE, STOPPING, HeartbeatSlot, beat_interval
from ..http import head_parser
from ..http.request import Limits
from ..http.response import InvalidResponse
from ..listener import Listener, own_listeners, start_listening
from ..logs import Logger
from ..settings import Config
from ..statsd import StatsdClient
from ..wsgi import ErrorStream, WSGIApp, base_environ
from .instrument import Instruments
from .io import SlowClients

# ssl and hashlib are imported above so that the master, which imports this
# module before it forks, initialises OpenSSL once for every worker. Almost
# every WSGI application imports them (Flask through Werkzeug and
# itsdangerous, Django, any HTTP client); done in each worker, that cost each
# worker 5 ms of start-up and ~1.7 MiB of resident library pages that are now
# shared with the master (docs/performance.md, "Memory").

# Exit statuses the master understands.
EXIT_OK = 0
EXIT_BOOT_ERROR = 3  # the worker itself could not start
EXIT_APP_LOAD_ERROR = 4  # the application could not be imported or built
EXIT_CRASHED = 5  # an unexpected error after the worker had booted


class StopWaiting(BaseException):
    """Raised by the TERM handler to end a blocking wait for a connection."""


class Worker:
    """One worker process; ``run`` is the serving loop of a subclass."""

    # Deployment features the serving loop implements ("tls", "proxy_protocol");
    # the master refuses to start with a setting that needs a missing one.
    supports: frozenset[str] = frozenset()
    multithread = False  # wsgi.multithread: the application is called from several threads

    def __init__(
        self,
        cfg: Config,
        listeners: list[Listener],
        slot: HeartbeatSlot,
        log: Logger,
        age: int,
        ppid: int,
        app: WSGIApp | None = None,
    ) -> None:
        self.cfg = cfg
        self.listeners = listeners
        self.slot = slot
        self.log = log
        self.age = age
        self.ppid = ppid
        self.pid = 0
        self.app = app
        self.alive = True
        self.waiting = False  # blocked waiting for a connection
        self.requests = 0
        self._counter = itertools.count(1)
        self.booted = 0.0
        self.beat_interval = beat_interval(cfg.timeout)
        self.max_requests = 0
        if cfg.max_requests:
            self.max_requests = cfg.max_requests + random.randint(0, cfg.max_requests_jitter)
        self.retire_asked = False
        self.reopen_logs = False  # USR1 arrived: reopen the log files at the next safe point
        self.draining = 0.0  # when a full stop (TERM) began: serve the listen queue, then exit
        self.orphaned = False  # the master is gone: the kernel timer is armed
        self._orphan_lock = threading.RLock()  # reentrant: a signal handler may come in
        self._watcher: threading.Thread | None = None
        self.pre_request = cfg.pre_request
        self.post_request = cfg.post_request
        self.limits = Limits(
            request_line=cfg.limit_request_line,
            fields=cfg.limit_request_fields,
            field_size=cfg.limit_request_field_size,
            body=cfg.limit_request_body,
            header_map=cfg.header_map,
        )
        # Chosen once here, so that reading a request never branches on it.
        self.parse_head = head_parser(cfg.http_parser)
        self.server_lines = f"Server: {SERVER_SOFTWARE}\r\n"
        self.ssl_context: Any = None  # set by the master when TLS is on
        self.app_exit = False  # the application called sys.exit() in a request
        self.slow_clients = SlowClients(log)
        self.statsd: StatsdClient | None = None  # set by the master with --statsd-host
        # --reload: where to list the application's source files for the master
        self.app_files_report: str | None = None
        self.instruments: Instruments | None = None  # made after the fork (init_process)

    # --- life cycle, in the child

    def init_process(self) -> int:
        """Run the worker in the child right after the fork; returns the exit status."""
        self.pid = os.getpid()
        code = EXIT_OK
        try:
            self._become_worker()
            self._load()
            self.instruments = Instruments(self.cfg, self.slot, self.log, self.statsd,
                                           self.slot.threads)
            run_hook(self.cfg, self.log, "post_worker_init", self)
            self._start_listening()
            self.slot.set_state(IDLE)
            self.booted = time.monotonic()
            self._wake_master()
            self.run()
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else EXIT_OK
        except BaseException as exc:  # a bug in the worker itself
            self.log.traceback(f"worker {self.pid} crashed", exc)
            code = EXIT_CRASHED if self.booted else EXIT_BOOT_ERROR
        finally:
            self.slot.set_state(STOPPING)
        return code

    def _wake_master(self) -> None:
        """Make the master look at our slot now (it treats SIGCHLD as "check children")."""
        try:
            os.kill(self.ppid, signal.SIGCHLD)
        except OSError:
            pass

    def exit(self, code: int) -> None:
        """Leave the process without running the master's cleanup (we are a fork)."""
        self._exit(code)

    def _exit(self, code: int) -> None:
        try:
            sys.stdout.flush()
            sys.stderr.flush()
        finally:
            os._exit(code)

    def _become_worker(self) -> None:
        from setproctitle import setproctitle

        random.seed()
        setproctitle(f"prefork: worker [{self.cfg.title_name}]")
        self._bind_own_sockets()  # as root still, if the master is: see own_listeners
        self._drop_privileges()
        # After the privilege drop, which clears the parent-death signal.
        _set_parent_death_signal(signal.SIGTERM)
        master = _pidfd(self.ppid)
        if os.getppid() != self.ppid:  # the master died before we could ask
            raise SystemExit(EXIT_OK)
        signal.signal(signal.SIGALRM, signal.SIG_DFL)  # what ends an orphan at its deadline
        if master is not None:
            self._watch_master(master)
        for sig in (signal.SIGTTIN, signal.SIGTTOU, signal.SIGWINCH, signal.SIGUSR2):
            signal.signal(sig, signal.SIG_IGN)
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)
        signal.signal(signal.SIGHUP, self._on_retire)
        signal.signal(signal.SIGTERM, self._on_term)
        signal.signal(signal.SIGINT, self._on_quit)
        signal.signal(signal.SIGQUIT, self._on_quit)
        signal.signal(signal.SIGABRT, self._on_abort)
        signal.signal(signal.SIGUSR1, self._on_usr1)
        # The master blocked these around fork(); what arrived since is delivered now.
        signal.pthread_sigmask(signal.SIG_SETMASK, set())

    def _watch_master(self, pidfd: int) -> None:
        """Start the thread that notices the master's death (its pidfd turns
        readable). It blocks every signal, so signals still interrupt the main
        thread's waits."""
        mask = signal.pthread_sigmask(signal.SIG_BLOCK, signal.valid_signals())
        watcher = threading.Thread(target=self._await_master_exit, args=(pidfd,),
                                   name="prefork-master-watch", daemon=True)
        try:
            watcher.start()
            self._watcher = watcher
        except RuntimeError as exc:  # a thread counts against RLIMIT_NPROC
            os.close(pidfd)
            self.log.warning("Worker %s: %s to watch the master; if the master dies while this "
                             "worker is stuck in C code, nothing will end it", self.pid, exc)
        finally:
            signal.pthread_sigmask(signal.SIG_SETMASK, mask)

    def _await_master_exit(self, pidfd: int) -> None:
        try:
            select.select([pidfd], [], [])
        except (OSError, ValueError):
            return
        self._orphan()

    def _orphan(self) -> None:
        """The master is gone: stop taking connections, and have the kernel end
        this process within min(--graceful-timeout, --timeout)."""
        # The watcher thread and the parent-death signal's handler both come
        # here: the one that comes second waits until the first has written
        # its line, or the process could exit with the line unwritten. Not for
        # ever: the handler may have interrupted this thread while it held the
        # log's lock, which the watcher needs to write.
        if not self._orphan_lock.acquire(timeout=1.0):
            return
        try:
            if self.orphaned:
                return
            self.orphaned = True
            self.alive = False
            limits = [t for t in (self.cfg.graceful_timeout, self.cfg.timeout) if t > 0]
            deadline = max(min(limits, default=0.0), 0.01)  # setitimer(0) would disarm it
            self.log.warning("Worker %s: the master (pid %s) is gone; finishing the request in "
                             "progress, exiting within %g s", self.pid, self.ppid, deadline)
            _default_alarm()
            signal.setitimer(signal.ITIMER_REAL, deadline)
        finally:
            self._orphan_lock.release()

    def _bind_own_sockets(self) -> None:
        """--reuse-port: replace the master's reservations by sockets of our own."""
        if not any(listener.per_worker for listener in self.listeners):
            return
        try:
            self.listeners = own_listeners(self.listeners)
        except OSError as exc:
            self._cannot_listen(exc)

    def _start_listening(self) -> None:
        """--reuse-port: take connections on our own sockets, now that the
        application has loaded."""
        try:
            start_listening(self.listeners, self.cfg.backlog)
        except OSError as exc:
            self._cannot_listen(exc)

    def _cannot_listen(self, exc: OSError) -> NoReturn:
        self.slot.write_error(f"worker {self.pid} cannot listen with --reuse-port: {exc.strerror}")
        raise SystemExit(EXIT_BOOT_ERROR) from None

    def _drop_privileges(self) -> None:
        uid, gid = self.cfg.user, self.cfg.group
        if gid is not None and gid != os.getgid():
            os.setgroups([])
            os.setgid(gid)
        if uid is not None and uid != os.getuid():
            import pwd

            try:
                name = pwd.getpwuid(uid).pw_name
                os.initgroups(name, gid if gid is not None else pwd.getpwuid(uid).pw_gid)
            except KeyError:
                pass
            if gid is None:
                with_gid = _primary_gid(uid)
                if with_gid is not None:
                    os.setgid(with_gid)
            os.setuid(uid)

    def _load(self) -> None:
        if self.app is not None:  # preloaded by the master
            return
        before = set(sys.modules)
        try:
            prepare_path(self.cfg.chdir, self.cfg.pythonpath)
            self.app = load_app(self.cfg.app_uri)
        except BaseException as exc:
            self.slot.write_error(describe_failure(self.cfg.app_uri, exc))
            self._report_app_files(before, exc)
            raise SystemExit(EXIT_APP_LOAD_ERROR) from None
        self._report_app_files(before)

    def _report_app_files(self, before: set[str], exc: BaseException | None = None) -> None:
        """--reload: tell the master which files to watch (it never imports the app)."""
        if self.app_files_report is None:
            return
        partial = f"{self.app_files_report}.part"
        try:
            with open(partial, "w", encoding="utf-8", errors="surrogateescape") as f:
                f.write("".join(f"{_stat_line(path)}\n" for path in application_files(before, exc)))
            os.replace(partial, self.app_files_report)
        except OSError as err:
            self.log.warning("--reload: cannot list the application's files in %s: %s",
                             self.app_files_report, err.strerror)

    def run(self) -> None:
        raise NotImplementedError

    # --- helpers for serving loops

    def environ_base(self, listener: Listener) -> dict[str, Any]:
        if listener.family == socket.AF_UNIX:
            name, port = "localhost", ""
        else:
            host, port_number = listener.sock.getsockname()[:2]
            name, port = host, str(port_number)
        errors = ErrorStream(self.log.app_line)
        scheme = "https" if self.ssl_context is not None else "http"
        return base_environ(name, port, self.cfg.workers > 1, errors, scheme, self.multithread)

    def on_idle(self) -> None:
        """Called whenever a wait for work times out: beat, and check the master."""
        self.slot.beat()
        if self.reopen_logs:
            self._reopen_logs()
        self.slow_clients.report()
        if os.getppid() != self.ppid:
            self._orphan()

    # --- signal handlers

    def _on_term(self, signum: int, frame: FrameType | None) -> None:
        if os.getppid() != self.ppid:  # the parent-death signal
            self._orphan()
        else:
            self.draining = time.monotonic()
        self.alive = False
        if self.waiting:
            self.waiting = False
            raise StopWaiting

    def _on_retire(self, signum: int, frame: FrameType | None) -> None:
        # An idle worker leaves now rather than at its next beat, so that a
        # reload or a recycle ends within milliseconds. Ending a wait is safe:
        # a connection accept() has just taken is stored before any handler
        # runs, and is still served (see SyncWorker._accept_loop); kept
        # connections live out their window.
        self.alive = False
        if self.waiting:
            self.waiting = False
            raise StopWaiting

    def _on_quit(self, signum: int, frame: FrameType | None) -> None:
        self.alive = False
        run_hook(self.cfg, self.log, "worker_int", self)
        raise SystemExit(EXIT_OK)

    def _on_usr1(self, signum: int, frame: FrameType | None) -> None:
        self.reopen_logs = True  # done between requests, not inside whatever is running

    def _reopen_logs(self) -> None:
        self.reopen_logs = False
        self.log.reopen_files()

    def _on_abort(self, signum: int, frame: FrameType | None) -> None:
        """The master found our heartbeat stale: say where we are stuck, then exit."""
        current = self.slot.current_request()
        if current is not None:
            line, started = current
            doing = f"serving {line!r} for {time.monotonic() - started:.1f} s"
        elif not self.booted:
            doing = "while loading the application"
        else:
            doing = "not in a request"
        stacks = []
        frames = sys._current_frames()
        if self._watcher is not None:
            frames.pop(self._watcher.ident or 0, None)  # ours, always in select()
        for thread_id, thread_frame in frames.items():
            stack = "".join(traceback.format_stack(thread_frame))
            stacks.append(f"Thread {thread_id}:\n{stack.rstrip()}")
        self.log.error(
            "WORKER TIMEOUT (pid:%s) %s; stack of the stuck worker:\n%s",
            self.pid, doing, "\n".join(stacks),
        )
        if self.instruments is not None:
            self.instruments.log_timed_out(self.log)
        run_hook(self.cfg, self.log, "worker_abort", self)
        self._exit(1)

    # --- around each request

    def request_started(self, req: Any, thread: int = 0) -> None:
        # next() on a C iterator is atomic: the count stays exact across threads.
        self.requests = count = next(self._counter)
        self.slot.start_request(req.line, count, thread)
        if self.instruments is not None:
            self.instruments.started(req, thread)
        if self.pre_request is not None:
            run_hook(self.cfg, self.log, "pre_request", self, req)

    def identify_request(self, environ: dict[str, Any], resp: Any, trusted: bool,
                         thread: int = 0) -> None:
        """Once the environ is built: the request id (``environ["prefork.request_id"]``
        and the response header); ``trusted``: the peer is a trusted proxy."""
        if self.instruments is not None:
            self.instruments.identify(environ, resp, trusted, thread)

    def request_rejected(self, exc: Any, thread: int = 0) -> None:
        """The server answers ``exc`` (an ``HTTPError``) itself: count it, unless it
        is the application's invalid response."""
        if self.instruments is not None and not isinstance(exc, InvalidResponse):
            self.instruments.rejected(exc.status, thread)

    def request_finished(self, req: Any, environ: dict[str, Any], resp: Any, thread: int = 0) -> None:
        self.slot.end_request(self.requests, thread)
        if self.instruments is not None:
            self.instruments.finished(req, resp, thread)
        if self.reopen_logs:
            self._reopen_logs()
        if self.post_request is not None:
            run_hook(self.cfg, self.log, "post_request", self, req, environ, resp)
        if self.max_requests and self.requests >= self.max_requests and not self.retire_asked:
            self.retire_asked = True
            self.log.info("Worker %s reached its request limit (%d of --max-requests %d + jitter); "
                          "it is replaced as soon as its successor is ready",
                          self.pid, self.requests, self.cfg.max_requests)
            self.slot.ask_to_retire(self.requests)
            self._wake_master()


def _stat_line(path: str) -> str:
    """``MTIME_NS SIZE INODE PATH`` as the worker saw the file, so that the master
    notices a change made between this import and its first look."""
    try:
        st = os.stat(path)
    except OSError:
        return f"- - - {path}"
    return f"{st.st_mtime_ns} {st.st_size} {st.st_ino} {path}"


def answered_with(resp: Any, error: Any) -> None:
    """The server answers for the application: record the status the client
    gets (``error``'s, or 500), for the access log and the counters, unless the
    application's head was sent already."""
    if not resp.head_sent:
        resp.code = error.status if error is not None else 500


def run_hook(cfg: Config, log: Logger, name: str, *args: Any) -> None:
    """Call the server hook ``name`` if it is set; an exception is logged, not raised."""
    fn = cfg.get(name)
    if fn is None:
        return
    try:
        fn(*args)
    except Exception as exc:
        log.traceback(f"the {name} hook raised an exception", exc)


def _primary_gid(uid: int) -> int | None:
    import pwd

    try:
        return pwd.getpwuid(uid).pw_gid
    except KeyError:
        return None


def _load_libc() -> Any:
    """libc (Linux), loaded once in the master; None elsewhere."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        libc.signal.argtypes = [ctypes.c_int, ctypes.c_void_p]
        return libc
    except (OSError, AttributeError):
        return None


_libc = _load_libc()
_prctl = None if _libc is None else _libc.prctl


def _pidfd(pid: int) -> int | None:
    """A descriptor that turns readable when process ``pid`` exits (Linux 5.3+)."""
    try:
        return os.pidfd_open(pid)
    except (AttributeError, OSError):
        return None


def _default_alarm() -> None:
    """SIGALRM back to its default action (end the process), from any thread."""
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGALRM, signal.SIG_DFL)
    elif signal.getsignal(signal.SIGALRM) is not signal.SIG_DFL and _libc is not None:
        _libc.signal(signal.SIGALRM, None)  # the application set a handler of its own


def _set_parent_death_signal(sig: int) -> None:
    """Linux: have the kernel send ``sig`` to this process when the master dies."""
    if _prctl is not None:
        PR_SET_PDEATHSIG = 1
        _prctl(PR_SET_PDEATHSIG, int(sig), 0, 0, 0)
