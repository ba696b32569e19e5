# Logging. The error log and the access log are stdlib ``logging`` loggers
# ("prefork.error", "prefork.access") so that users can reconfigure them with
# ``logging.config``; by default each writes through a ``LineHandler``: one
# whole line per ``os.write`` on a descriptor opened with O_APPEND, so lines
# from the master and every worker interleave whole and no process ever waits
# on a lock held by another. Files are reopened on USR1 (for logrotate).
#
# Log files are opened by the master, often as root, in directories that the
# workers' user may be able to write to. So a log file is never opened through
# a symbolic link, what was opened is checked before it is written to (see
# ``open_log_file``), and ownership is given through the open descriptor,
# never through the path, which may have been replaced in the meantime.
#
# Access lines are built by a function compiled once from the format: only the
# atoms the format uses are computed, and nothing at all is computed when the
# access log is off (the worker checks ``access_enabled`` before timing a
# request).
from __future__ import annotations

import base64
import datetime
import errno
import json
import logging
import logging.config
import os
import re
import stat
import sys
import time
import traceback
from collections.abc import Callable, Iterator
from typing import Any

from .settings import DEFAULT_ACCESS_LOG_FORMAT, ConfigError

ERROR_FORMAT = "[%(asctime)s] [%(process)d] [%(levelname)s] %(message)s"
DATE_FORMAT = "%Y-%m-%d %H:%M:%S %z"


# These names are symbolic links, which a log file may not be; they mean the
# stream itself, as ``-`` does (1: standard output, 2: standard error).
STANDARD_STREAMS = {"/dev/stdout": 1, "/dev/stderr": 2, "/dev/fd/1": 1, "/dev/fd/2": 2,
                    "/proc/self/fd/1": 1, "/proc/self/fd/2": 2}

# O_NONBLOCK only for the open itself: a FIFO nobody reads must not hang the master.
_OPEN_FLAGS = (os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW
               | os.O_NOCTTY | os.O_NONBLOCK)


class UnsafeLogFile(OSError):
    """A log file path that prefork refuses to write to (``strerror`` says why)."""


def open_log_file(path: str, regular_only: bool = False) -> int:
    """Open ``path`` for appending, creating it if needed, and return the descriptor.

    The last component is never followed if it is a symbolic link. A FIFO or
    a character device (``/dev/null``) is accepted unless ``regular_only``
    (a reopen, when only a regular file is expected). Running as root, a
    regular file with more than one hard link is refused: it may be a link,
    made by a less privileged user, to a file that only root may write.
    Raises ``OSError`` (``UnsafeLogFile`` for a refusal) with ``filename`` set.
    """
    try:
        fd = os.open(path, _OPEN_FLAGS, 0o644)
    except OSError as exc:
        raise _open_error(exc, path) from None
    try:
        _check_opened(fd, path, regular_only)
        os.set_blocking(fd, True)
    except BaseException:
        os.close(fd)
        raise
    return fd


def _open_error(exc: OSError, path: str) -> OSError:
    if exc.errno == errno.ELOOP and os.path.islink(path):
        return UnsafeLogFile(exc.errno, "it is a symbolic link, and log files are never "
                             "opened through one", path)
    if exc.errno == errno.ENXIO and _is_fifo(path):
        return OSError(exc.errno, "it is a FIFO that nobody reads", path)
    return exc


def _is_fifo(path: str) -> bool:
    try:
        return stat.S_ISFIFO(os.lstat(path).st_mode)
    except OSError:
        return False


def _check_opened(fd: int, path: str, regular_only: bool) -> None:
    st = os.fstat(fd)
    if stat.S_ISREG(st.st_mode):
        if st.st_nlink > 1 and os.geteuid() == 0:
            raise UnsafeLogFile(errno.EPERM, f"it has {st.st_nlink} hard links, so it may "
                                "be another file linked there", path)
    elif regular_only or not (stat.S_ISFIFO(st.st_mode) or stat.S_ISCHR(st.st_mode)):
        raise UnsafeLogFile(errno.EPERM, "it is not a regular file", path)


def _is_regular(fd: int) -> bool:
    try:
        return stat.S_ISREG(os.fstat(fd).st_mode)
    except OSError:
        return False


class LineHandler(logging.Handler):
    """Writes each record as one line with a single ``write(2)``.

    ``target`` is a file path, opened with O_APPEND by ``open_log_file``, or
    ``-`` for a duplicate of ``default_fd`` (so that it keeps pointing where
    that descriptor pointed when the handler was made, even after
    ``--capture-output`` redirects it). ``/dev/stdout`` and ``/dev/stderr``
    are the same as ``-`` with ``streams[0]`` or ``streams[1]``.
    Usable from ``logging.config``: ``{"()": "prefork.logs.LineHandler",
    "target": "/var/log/app.log"}``.
    """

    def __init__(self, target: str = "-", default_fd: int = 2,
                 streams: tuple[int, int] = (1, 2)) -> None:
        super().__init__()
        stream = STANDARD_STREAMS.get(target)
        if stream is not None:
            target, default_fd = "-", streams[stream - 1]
        self.target = target
        self.default_fd = default_fd
        self.fd = self._open()

    def _open(self) -> int:
        if self.target == "-":
            return os.dup(self.default_fd)
        return open_log_file(self.target)

    def emit(self, record: logging.LogRecord) -> None:
        try:
            line = self.format(record)
            self.write_line(line)
        except Exception:
            self.handleError(record)

    def write_line(self, line: str) -> None:
        data = (line + "\n").encode("utf-8", "backslashreplace")
        if self.fd < 0:
            # Closed under us: logging.config (e.g. an application's own
            # dictConfig) closes every existing handler. Like FileHandler, reopen.
            self.fd = self._open()
        while data:
            written = os.write(self.fd, data)
            data = data[written:]

    def reopen(self) -> None:
        """Open the file again (after logrotate moved it) and switch to it.
        A FIFO or a device is not reopened: there is nothing to rotate."""
        if self.target == "-" or (self.fd >= 0 and not _is_regular(self.fd)):
            return
        new_fd = open_log_file(self.target, regular_only=True)  # on failure the old file stays
        old_fd, self.fd = self.fd, new_fd
        if old_fd >= 0:
            os.close(old_fd)

    def close(self) -> None:
        if self.fd >= 0:
            try:
                os.close(self.fd)
            except OSError:
                pass
            self.fd = -1
        super().close()


# --- JSON


def iso_time(timestamp: float) -> str:
    """Local time in ISO 8601 with microseconds and the UTC offset."""
    stamp = datetime.datetime.fromtimestamp(timestamp).astimezone()
    return stamp.isoformat(timespec="microseconds")


class JSONFormatter(logging.Formatter):
    """One JSON object per record: ``time``, ``level``, ``pid``, ``logger``,
    ``message``, ``exception`` when there is one, and for access records the
    request's fields (see docs/logging.md; these names are a stable interface)."""

    def format(self, record: logging.LogRecord) -> str:
        fields: dict[str, Any] = {
            "time": iso_time(record.created),
            "level": record.levelname.lower(),
            "pid": record.process,
            "logger": record.name,
            "message": record.getMessage(),
        }
        if record.exc_info:
            fields["exception"] = self.formatException(record.exc_info)
        access = getattr(record, "access", None)
        if access:
            fields.update(access)
        return json.dumps(fields, ensure_ascii=False, default=str)


# --- the access log


def _quoted(value: str) -> str:
    return value.replace('"', '\\"') if '"' in value else value


def _header(headers: list[tuple[str, str]], name: str) -> str:
    """A header's value; repeated fields are combined with ", " (RFC 9110 §5.3)."""
    values = [v for k, v in headers if k.lower() == name]
    return ", ".join(values) if values else "-"


def _environ_value(environ: dict[str, Any], name: str) -> str:
    value = environ.get(name)
    if value is None:
        value = environ.get(name.upper())
    return "-" if value is None else str(value)


def basic_auth_user(environ: dict[str, Any]) -> str | None:
    auth = environ.get("HTTP_AUTHORIZATION", "")
    scheme, _, credentials = auth.partition(" ")
    if scheme.lower() != "basic" or not credentials:
        return None
    try:
        decoded = base64.b64decode(credentials.strip(), validate=True).decode("utf-8", "replace")
    except ValueError:
        return None
    user, sep, _ = decoded.partition(":")
    return user if sep else None


_last_stamp: tuple[int, str] = (-1, "")


def clf_time(timestamp: float) -> str:
    """``[10/Oct/2000:13:55:36 -0700]``, computed once per second."""
    global _last_stamp
    second = int(timestamp)
    if _last_stamp[0] != second:
        _last_stamp = (second, time.strftime("[%d/%b/%Y:%H:%M:%S %z]", time.localtime(second)))
    return _last_stamp[1]


# Each atom: (req, resp, environ, started, microseconds) -> text.
Atom = Callable[[Any, Any, dict[str, Any], float, int], str]

ATOMS: dict[str, Atom] = {
    "h": lambda req, resp, env, t, us: env.get("REMOTE_ADDR") or "-",
    "l": lambda req, resp, env, t, us: "-",
    "u": lambda req, resp, env, t, us: _quoted(basic_auth_user(env) or "-"),
    "t": lambda req, resp, env, t, us: clf_time(t),
    "r": lambda req, resp, env, t, us: _quoted(req.line),
    "m": lambda req, resp, env, t, us: req.method,
    "U": lambda req, resp, env, t, us: _quoted(env.get("PATH_INFO", req.path)),
    "q": lambda req, resp, env, t, us: _quoted(req.query),
    "H": lambda req, resp, env, t, us: req.version,
    "s": lambda req, resp, env, t, us: str(resp.code or 500),
    "B": lambda req, resp, env, t, us: str(resp.sent),
    "b": lambda req, resp, env, t, us: str(resp.sent),
    "f": lambda req, resp, env, t, us: _quoted(env.get("HTTP_REFERER", "-")),
    "a": lambda req, resp, env, t, us: _quoted(env.get("HTTP_USER_AGENT", "-")),
    "T": lambda req, resp, env, t, us: str(us // 1_000_000),
    "M": lambda req, resp, env, t, us: str(us // 1000),
    "D": lambda req, resp, env, t, us: str(us),
    "L": lambda req, resp, env, t, us: "%d.%06d" % divmod(us, 1_000_000),
    "p": lambda req, resp, env, t, us: f"<{os.getpid()}>",
}

_KEY = re.compile(r"%%|%\(([^)]*)\)")


def _atom(key: str) -> Atom:
    braced = re.fullmatch(r"\{(.*)\}([ioe])", key, re.S)
    if braced is None:
        return ATOMS.get(key, lambda req, resp, env, t, us: "-")
    name, kind = braced.group(1), braced.group(2)
    if kind == "i":
        lower = name.lower()
        return lambda req, resp, env, t, us: _quoted(_header(req.headers, lower))
    if kind == "o":
        lower = name.lower()
        return lambda req, resp, env, t, us: _quoted(_header(resp.headers, lower))
    return lambda req, resp, env, t, us: _quoted(_environ_value(env, name))


AccessFormat = Callable[[Any, Any, dict[str, Any], float, float], str]


def compile_access_format(fmt: str) -> AccessFormat:
    """A function that formats one request with ``fmt`` (Gunicorn's atoms)."""
    keys = {m.group(1) for m in _KEY.finditer(fmt) if m.group(1) is not None}
    atoms = [(key, _atom(key)) for key in keys]

    def format_line(req: Any, resp: Any, environ: dict[str, Any], started: float,
                    duration: float) -> str:
        us = round(duration * 1_000_000)
        return fmt % {key: atom(req, resp, environ, started, us) for key, atom in atoms}

    return format_line


def access_fields(req: Any, resp: Any, environ: dict[str, Any], started: float,
                  duration: float) -> dict[str, Any]:
    """The fields of a JSON access record (documented in docs/logging.md)."""
    return {
        "time": iso_time(started),
        "remote_addr": environ.get("REMOTE_ADDR") or None,
        "remote_user": basic_auth_user(environ),
        "method": req.method,
        "path": environ.get("PATH_INFO", req.path),
        "query": req.query,
        "protocol": req.version,
        "status": resp.code or 500,
        "bytes": resp.sent,
        "referer": environ.get("HTTP_REFERER"),
        "user_agent": environ.get("HTTP_USER_AGENT"),
        "duration_us": round(duration * 1_000_000),
        "request_id": environ.get("prefork.request_id"),
    }


class TimedOutResponse:
    """What the access log says of a request the timeout killed: 504, and the
    body bytes the client got before it (``timed_out`` marks JSON records)."""

    __slots__ = ("code", "sent", "headers")
    timed_out = True

    def __init__(self, resp: Any) -> None:
        self.code = 504
        self.sent = getattr(resp, "sent", 0) or 0
        self.headers = list(getattr(resp, "headers", None) or [])


class RequestLine:
    """A request known only by its request line (what the scoreboard keeps),
    for the access-log line of a request whose worker could not write it."""

    __slots__ = ("line", "method", "target", "path", "query", "version", "headers")

    def __init__(self, line: str) -> None:
        parts = line.split(" ")
        self.line = line
        self.method = parts[0] if parts else "-"
        self.target = parts[1] if len(parts) > 1 else "-"
        self.path, _, self.query = self.target.partition("?")
        self.version = parts[2] if len(parts) > 2 else "-"
        self.headers: list[tuple[str, str]] = []


# --- the server's logs

KINDS = ("error", "access")


class Logger:
    """The server's logs: ``log.info(...)`` for the error log, ``log.access``."""

    def __init__(self, errorlog: str = "-", loglevel: str = "info", accesslog: str | None = None,
                 **options: Any) -> None:
        """``options`` are the keyword arguments of ``configure``."""
        # Where standard output and error pointed at start, for "-" targets.
        self._stdout = _dup_or_devnull(1)
        self._stderr = _dup_or_devnull(2)
        self._handlers: list[LineHandler] = []
        self.error_log = logging.getLogger("prefork.error")
        self.access_log = logging.getLogger("prefork.access")
        self.access_enabled = False
        self.capture_output = False
        self._json = False
        self._direct: LineHandler | None = None
        self.configure(errorlog, loglevel, accesslog, **options)

    @classmethod
    def from_config(cls, cfg: Any) -> Logger:
        """The logs as the settings say; ``ConfigError`` if a logging config is bad."""
        return cls(cfg.errorlog, cfg.loglevel, cfg.accesslog, **_options(cfg))

    def reconfigure(self, cfg: Any) -> None:
        """Apply the logging settings of a new configuration (a reload)."""
        self.configure(cfg.errorlog, cfg.loglevel, cfg.accesslog, **_options(cfg))

    def chown_files(self, uid: int, gid: int) -> None:
        """Give the log files to the workers' user, so they can reopen them (USR1).

        Through the open descriptors: the path may lead elsewhere by now."""
        for handler in self._handlers:
            if handler.target != "-" and handler.fd >= 0 and _is_regular(handler.fd):
                try:
                    os.fchown(handler.fd, uid, gid)
                except OSError as exc:
                    self.warning("cannot give %s to the workers' user: %s", handler.target, exc)

    def configure(
        self,
        errorlog: str,
        loglevel: str,
        accesslog: str | None,
        *,
        access_log_format: str = DEFAULT_ACCESS_LOG_FORMAT,
        log_format: str = "text",
        capture_output: bool = False,
        logconfig: str | None = None,
        logconfig_dict: dict[str, Any] | None = None,
        logconfig_json: str | None = None,
    ) -> None:
        """(Re)build the handlers; may be called again, e.g. on a reload.

        A user's logging config is applied first (``logging.config`` closes every
        handler that exists when it runs); prefork's own handlers then go on the
        loggers it left alone."""
        self._remove_handlers()
        self._json = log_format == "json"
        self._format_access = compile_access_format(access_log_format)
        loggers = {kind: logging.getLogger(f"prefork.{kind}") for kind in KINDS}
        for logger in loggers.values():
            for handler in list(logger.handlers):
                logger.removeHandler(handler)
            logger.propagate = False
        # As in Gunicorn, the config may override these levels.
        loggers["error"].setLevel(loglevel.upper())
        loggers["access"].setLevel(logging.INFO)
        user_config = any(x is not None for x in (logconfig, logconfig_dict, logconfig_json))
        touched = {kind: False for kind in KINDS}
        if user_config:
            touched = self._apply_user_config(loggers, logconfig, logconfig_dict, logconfig_json)
        self._error_handler = self._handler(errorlog, self._stderr, error=True)
        targets = {"error": self._error_handler,
                   "access": None if accesslog is None else
                   self._handler(accesslog, self._stdout, error=False)}
        for kind in KINDS:
            logger, target = loggers[kind], targets[kind]
            theirs = _gunicorn_logger(kind) if user_config and not touched[kind] else None
            if theirs is not None:
                if theirs.level == logging.NOTSET:
                    theirs.setLevel(logger.level)
                logger = theirs
            elif not touched[kind] and target is not None:
                logger.addHandler(target)
            setattr(self, f"{kind}_log", logger)
        self.access_enabled = (self.access_log.isEnabledFor(logging.INFO)
                               and self.access_log.hasHandlers())
        # When the only thing on the access logger is our own handler, lines are
        # written straight to it: the same result without logging's per-record cost.
        self._direct = targets["access"] if self.access_log.handlers == [targets["access"]] \
            and not self._json else None
        self.capture_output = capture_output
        if capture_output:
            self._redirect_output()

    def _handler(self, target: str, default_fd: int, error: bool) -> LineHandler:
        handler = LineHandler(target, default_fd, (self._stdout, self._stderr))
        if self._json:
            handler.setFormatter(JSONFormatter())
        elif error:
            handler.setFormatter(logging.Formatter(ERROR_FORMAT, DATE_FORMAT))
        else:
            handler.setFormatter(logging.Formatter("%(message)s"))
        self._handlers.append(handler)
        return handler

    def _apply_user_config(self, loggers: dict[str, logging.Logger], logconfig: str | None,
                           logconfig_dict: dict[str, Any] | None,
                           logconfig_json: str | None) -> dict[str, bool]:
        """Apply the config; say which of prefork's loggers it configured."""
        # logging.config strips the handlers of every logger it configures (and
        # of their children), so a marker handler that survives means "left alone".
        markers = {kind: logging.NullHandler() for kind in KINDS}
        for kind, marker in markers.items():
            loggers[kind].addHandler(marker)
        apply_logging_config(logconfig, logconfig_dict, logconfig_json, self._stdout, self._stderr)
        touched = {}
        for kind, marker in markers.items():
            touched[kind] = marker not in loggers[kind].handlers
            loggers[kind].removeHandler(marker)
        return touched

    def _redirect_output(self) -> None:
        """--capture-output: the process's fds 1 and 2 into the error log."""
        handler = self._error_handler
        target = handler.fd if handler.target != "-" else handler.default_fd
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except (OSError, ValueError):
                pass
        os.dup2(target, 1)
        os.dup2(target, 2)
        try:
            sys.stdout.reconfigure(line_buffering=True)  # type: ignore[union-attr]
        except (AttributeError, ValueError):
            pass

    # --- the error log

    def debug(self, msg: str, *args: Any) -> None:
        self.error_log.debug(msg, *args)

    def info(self, msg: str, *args: Any) -> None:
        self.error_log.info(msg, *args)

    def warning(self, msg: str, *args: Any) -> None:
        self.error_log.warning(msg, *args)

    def error(self, msg: str, *args: Any) -> None:
        self.error_log.error(msg, *args)

    def critical(self, msg: str, *args: Any) -> None:
        self.error_log.critical(msg, *args)

    def exception(self, msg: str, *args: Any) -> None:
        self.error_log.error(msg, *args, exc_info=True)

    def app_line(self, line: str) -> None:
        """A line the application wrote to ``wsgi.errors`` (Flask's default log
        handler does): it goes into the error log as written, as in Gunicorn,
        without the server's prefix in front of the application's own. JSON logs
        and handlers that do not write to a stream get it as a record's message."""
        logger = self.error_log
        if not logger.isEnabledFor(logging.ERROR):
            return
        record = logger.makeRecord(logger.name, logging.ERROR, "wsgi.errors", 0, line, (), None)
        for handler in _handlers_of(logger):
            if record.levelno < handler.level:
                continue
            if isinstance(handler.formatter, JSONFormatter):
                handler.handle(record)
            elif isinstance(handler, LineHandler):
                try:
                    handler.write_line(line)
                except Exception:
                    handler.handleError(record)
            elif isinstance(handler, logging.StreamHandler) and handler.stream is not None:
                _write_raw(handler, record)
            else:
                handler.handle(record)

    def traceback(self, msg: str, exc: BaseException) -> None:
        """Log ``msg`` and the full traceback of ``exc`` as one record."""
        text = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
        self.error_log.error("%s\n%s", msg, text.rstrip())

    # --- the access log

    def access(self, req: Any, resp: Any, environ: dict[str, Any], started: float,
               duration: float) -> None:
        """Log one served request. Called only when the access log is enabled.

        ``req`` is the parsed request (``method``, ``line``, ``version``,
        ``headers``, ``path``, ``query``), ``resp`` the response (``code``,
        ``status``, ``sent`` body bytes, ``headers``), ``environ`` the WSGI
        environ, ``started`` the wall-clock start and ``duration`` in seconds.
        """
        direct = self._direct
        logger = self.access_log
        handlers = logger.handlers
        if (direct is not None and len(handlers) == 1 and handlers[0] is direct
                and logger.isEnabledFor(logging.INFO) and not direct.filters):
            direct.write_line(self._format_access(req, resp, environ, started, duration))
        elif self._json:
            fields = access_fields(req, resp, environ, started, duration)
            if getattr(resp, "timed_out", False):
                fields["timed_out"] = True
            logger.info("%s", req.line, extra={"access": fields})
        else:
            logger.info(self._format_access(req, resp, environ, started, duration))

    def access_timed_out(self, req: Any, resp: Any, environ: dict[str, Any], started: float,
                         duration: float) -> None:
        """The line of a request the timeout killed: status 504 (``timed_out`` in JSON)."""
        if self.access_enabled:
            self.access(req, TimedOutResponse(resp), environ, started, duration)

    # --- files

    def reopen_files(self) -> None:
        """Reopen every log file (ours and those of a logging config), e.g. after
        logrotate moved them; with --capture-output, redirect fds 1 and 2 again."""
        for handler in _all_handlers(self._handlers):
            try:
                if isinstance(handler, LineHandler):
                    handler.reopen()
                elif isinstance(handler, logging.FileHandler):
                    _reopen_file_handler(handler)
            except OSError as exc:
                name = exc.filename or getattr(handler, "target", None) or \
                    getattr(handler, "baseFilename", "a log file")
                self.error("cannot reopen log file %s: %s; still writing to the one open before",
                           name, exc.strerror or exc)
        if self.capture_output:
            self._redirect_output()

    def _remove_handlers(self) -> None:
        for handler in self._handlers:
            for kind in KINDS:
                logging.getLogger(f"prefork.{kind}").removeHandler(handler)
            handler.close()
        self._handlers = []

    def standard_streams_changed(self) -> None:
        """Fds 1 and 2 now point elsewhere (``--daemon``): make every ``-`` target
        follow them, and let go of the old ones (a pipe a launcher waits on)."""
        for saved, fd in ((self._stdout, 1), (self._stderr, 2)):
            for handler in self._handlers:
                if handler.target == "-" and handler.default_fd == saved and handler.fd >= 0:
                    os.dup2(fd, handler.fd, inheritable=False)
            os.dup2(fd, saved, inheritable=False)

    def close(self) -> None:
        self._remove_handlers()
        for fd in (self._stdout, self._stderr):
            try:
                os.close(fd)
            except OSError:
                pass
        self._stdout = self._stderr = -1


def _handlers_of(logger: logging.Logger) -> Iterator[logging.Handler]:
    """The handlers a record logged on ``logger`` reaches (as ``callHandlers`` walks)."""
    current: logging.Logger | None = logger
    while current is not None:
        yield from current.handlers
        current = current.parent if current.propagate else None


def _write_raw(handler: logging.StreamHandler[Any], record: logging.LogRecord) -> None:
    handler.acquire()
    try:
        handler.stream.write(record.getMessage() + handler.terminator)
        handler.flush()
    except Exception:
        handler.handleError(record)
    finally:
        handler.release()


def _dup_or_devnull(fd: int) -> int:
    """A copy of ``fd``; /dev/null when it is closed (as under some supervisors)."""
    try:
        return os.dup(fd)
    except OSError:
        return os.open(os.devnull, os.O_WRONLY | os.O_CLOEXEC)


def _gunicorn_logger(kind: str) -> logging.Logger | None:
    """Gunicorn's logger of that kind, if a logging config gave it handlers."""
    logger = logging.Logger.manager.loggerDict.get(f"gunicorn.{kind}")
    if isinstance(logger, logging.Logger) and logger.hasHandlers():
        return logger
    return None


def _options(cfg: Any) -> dict[str, Any]:
    return {name: getattr(cfg, name) for name in (
        "access_log_format", "log_format", "capture_output", "logconfig", "logconfig_dict",
        "logconfig_json")}


def _all_handlers(own: list[LineHandler]) -> Iterator[logging.Handler]:
    """Our handlers, and every handler attached to any logger."""
    seen: set[int] = set()
    loggers: list[logging.Logger] = [logging.getLogger()]
    loggers += [lg for lg in logging.Logger.manager.loggerDict.values()
                if isinstance(lg, logging.Logger)]
    for handler in [*own, *(h for lg in loggers for h in lg.handlers)]:
        if id(handler) not in seen:
            seen.add(id(handler))
            yield handler


def _reopen_file_handler(handler: logging.FileHandler) -> None:
    """Reopen a logging.FileHandler's file as safely as our own (appending:
    a reopened file is never truncated); on failure the old stream stays."""
    handler.acquire()
    try:
        if handler.stream is not None and _is_regular(handler.stream.fileno()):
            fd = open_log_file(handler.baseFilename, regular_only=True)
            stream = open(fd, "a", encoding=handler.encoding, errors=handler.errors)
            handler.stream.close()
            handler.stream = stream
    finally:
        handler.release()


# --- logging.config


def apply_logging_config(logconfig: str | None, logconfig_dict: dict[str, Any] | None,
                         logconfig_json: str | None, stdout_fd: int = 1,
                         stderr_fd: int = 2) -> None:
    """Apply the user's logging configuration over prefork's own setup.
    Errors are ``ConfigError`` naming the setting."""
    if logconfig is not None:
        try:
            logging.config.fileConfig(logconfig, disable_existing_loggers=False, defaults={
                "__file__": os.path.abspath(logconfig),
                "here": os.path.dirname(os.path.abspath(logconfig))})
        except Exception as exc:
            raise ConfigError(f"--log-config {logconfig}: {_describe(exc)}") from None
    if logconfig_json is not None:
        try:
            with open(logconfig_json, encoding="utf-8") as f:
                loaded = json.load(f)
        except (OSError, ValueError) as exc:
            raise ConfigError(f"--log-config-json {logconfig_json}: {_describe(exc)}") from None
        _apply_dict(loaded, f"--log-config-json {logconfig_json}", stdout_fd, stderr_fd)
    if logconfig_dict:
        _apply_dict(logconfig_dict, "--log-config-dict", stdout_fd, stderr_fd)


def _apply_dict(config: Any, where: str, stdout_fd: int, stderr_fd: int) -> None:
    if not isinstance(config, dict):
        raise ConfigError(f"{where}: expected a dictionary, got {type(config).__name__}")
    # As Gunicorn does: version 1, existing loggers kept, and the names of its
    # predefined formatter and handlers usable without defining them.
    merged: dict[str, Any] = {
        "version": 1,
        "disable_existing_loggers": False,
        **config,
        "formatters": {
            "generic": {"format": ERROR_FORMAT, "datefmt": DATE_FORMAT},
            **config.get("formatters", {}),
        },
        "handlers": {
            "console": {"()": LineHandler, "target": "-", "default_fd": stdout_fd,
                        "formatter": "generic"},
            "error_console": {"()": LineHandler, "target": "-", "default_fd": stderr_fd,
                              "formatter": "generic"},
            **config.get("handlers", {}),
        },
    }
    try:
        logging.config.dictConfig(merged)
    except Exception as exc:
        raise ConfigError(f"{where}: {_describe(exc)}") from None


def _describe(exc: BaseException) -> str:
    """One line: the innermost cause of a logging.config error."""
    while exc.__cause__ is not None:
        exc = exc.__cause__
    text = str(exc).splitlines()[0] if str(exc) else ""
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__
