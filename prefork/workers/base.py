# What every worker does around its serving loop: become a worker after the
# fork (title, signals, parent-death signal), load the application, report
# readiness through its heartbeat slot, and answer the master's signals.
# Signal handlers only set flags, except that a TERM arriving while the worker
# is blocked waiting for a connection interrupts that wait (an idle worker
# stops at once), and ABRT (a timeout) writes where the worker is stuck.
from __future__ import annotations

import os
import random
import signal
import sys
import time
import traceback
from types import FrameType
from typing import Any

from .. import SERVER_SOFTWARE
from ..app import AppNotFound, load_app, prepare_path
from ..heartbeat import IDLE, STOPPING, HeartbeatSlot
from ..http.request import Limits
from ..logs import Logger
from ..settings import Config
from ..sockets import Listener
from ..wsgi import ErrorStream, WSGIApp, base_environ

# Exit statuses the master understands.
EXIT_OK = 0
EXIT_BOOT_ERROR = 3  # the worker itself could not start
EXIT_APP_LOAD_ERROR = 4  # the application could not be imported or built


class StopWaiting(BaseException):
    """Raised by the TERM handler to end a blocking wait for a connection."""


class Worker:
    """One worker process; ``run`` is the serving loop of a subclass."""

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
        self.booted = 0.0
        timeout = cfg.timeout
        self.beat_interval = min(1.0, timeout / 4) if timeout else 1.0
        self.limits = Limits(
            request_line=cfg.limit_request_line,
            fields=cfg.limit_request_fields,
            field_size=cfg.limit_request_field_size,
            body=cfg.limit_request_body,
            header_map=cfg.header_map,
        )
        self.server_lines = f"Server: {SERVER_SOFTWARE}\r\n"

    # --- life cycle, in the child

    def init_process(self) -> None:
        """Called in the child right after the fork; never returns."""
        self.pid = os.getpid()
        code = EXIT_OK
        try:
            self._become_worker()
            self._load()
            self.slot.set_state(IDLE)
            self.booted = time.monotonic()
            self.run()
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else EXIT_OK
        except BaseException as exc:  # a bug in the worker itself
            self.log.traceback(f"worker {self.pid} crashed", exc)
            code = EXIT_BOOT_ERROR
        finally:
            self.slot.set_state(STOPPING)
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
        _set_parent_death_signal(signal.SIGTERM)
        if os.getppid() != self.ppid:  # the master died before we could ask
            raise SystemExit(EXIT_OK)
        signal.set_wakeup_fd(-1)
        for sig in (signal.SIGHUP, signal.SIGTTIN, signal.SIGTTOU, signal.SIGWINCH,
                    signal.SIGUSR2, signal.SIGCHLD):
            signal.signal(sig, signal.SIG_DFL if sig == signal.SIGCHLD else signal.SIG_IGN)
        signal.signal(signal.SIGTERM, self._on_term)
        signal.signal(signal.SIGINT, self._on_quit)
        signal.signal(signal.SIGQUIT, self._on_quit)
        signal.signal(signal.SIGABRT, self._on_abort)
        signal.signal(signal.SIGUSR1, self._on_usr1)

    def _load(self) -> None:
        if self.app is not None:  # preloaded by the master
            return
        try:
            prepare_path(self.cfg.chdir, self.cfg.pythonpath)
            self.app = load_app(self.cfg.app_uri)
        except AppNotFound as exc:
            self.slot.write_error(f"cannot load the application: {exc}")
            raise SystemExit(EXIT_APP_LOAD_ERROR) from None
        except BaseException as exc:
            text = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
            self.slot.write_error(
                f"cannot load the application {self.cfg.app_uri!r}: an exception was raised "
                f"while importing it\n{text.rstrip()}"
            )
            raise SystemExit(EXIT_APP_LOAD_ERROR) from None

    def run(self) -> None:
        raise NotImplementedError

    # --- helpers for serving loops

    def environ_base(self, listener: Listener) -> dict[str, Any]:
        address = listener.address
        if listener.family == 1:  # AF_UNIX
            name, port = "localhost", ""
        else:
            host, port_number = listener.sock.getsockname()[:2]
            name, port = host, str(port_number)
        del address
        errors = ErrorStream(self.log.error_log.error)
        return base_environ(name, port, self.cfg.workers > 1, errors)

    def on_idle(self) -> None:
        """Called whenever a wait for work times out: beat, and check the master."""
        self.slot.beat()
        if os.getppid() != self.ppid:
            self.log.info("worker %s: master is gone, exiting", self.pid)
            self.alive = False

    # --- signal handlers

    def _on_term(self, signum: int, frame: FrameType | None) -> None:
        self.alive = False
        if self.waiting:
            self.waiting = False
            raise StopWaiting

    def _on_quit(self, signum: int, frame: FrameType | None) -> None:
        self.alive = False
        raise SystemExit(EXIT_OK)

    def _on_usr1(self, signum: int, frame: FrameType | None) -> None:
        self.log.reopen_files()

    def _on_abort(self, signum: int, frame: FrameType | None) -> None:
        """The master found our heartbeat stale: say where we are stuck, then exit."""
        current = self.slot.current_request()
        if current is not None:
            line, started = current
            doing = f"serving {line!r} for {time.monotonic() - started:.1f} s"
        else:
            doing = "not in a request"
        stacks = []
        frames = sys._current_frames()
        for thread_id, thread_frame in frames.items():
            stack = "".join(traceback.format_stack(thread_frame))
            stacks.append(f"Thread {thread_id}:\n{stack.rstrip()}")
        self.log.error(
            "WORKER TIMEOUT (pid:%s) %s; stack of the stuck worker:\n%s",
            self.pid, doing, "\n".join(stacks),
        )
        self._exit(1)


def _set_parent_death_signal(sig: int) -> None:
    """Linux: have the kernel send ``sig`` to this process when the master dies."""
    if not sys.platform.startswith("linux"):
        return
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        PR_SET_PDEATHSIG = 1
        libc.prctl(PR_SET_PDEATHSIG, int(sig), 0, 0, 0)
    except (OSError, AttributeError):
        pass
