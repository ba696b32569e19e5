# Logging. The error log and the access log are stdlib ``logging`` loggers
# ("prefork.error", "prefork.access") so that users can reconfigure them with
# ``logging.config``; by default each writes through a ``LineHandler``: one
# whole line per ``os.write`` on a descriptor opened with O_APPEND, so lines
# from the master and every worker interleave whole and no process ever waits
# on a lock held by another. Files are reopened on USR1 (for logrotate).
from __future__ import annotations

import logging
import os
import sys
import time
import traceback
from typing import Any

ERROR_FORMAT = "[%(asctime)s] [%(process)d] [%(levelname)s] %(message)s"
DATE_FORMAT = "%Y-%m-%d %H:%M:%S %z"


class LineHandler(logging.Handler):
    """Writes each record as one line with a single ``write(2)``."""

    def __init__(self, target: str, default_fd: int) -> None:
        super().__init__()
        self.target = target
        self.default_fd = default_fd
        self.fd = self._open()

    def _open(self) -> int:
        if self.target == "-":
            return self.default_fd
        return os.open(self.target, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o644)

    def emit(self, record: logging.LogRecord) -> None:
        try:
            line = self.format(record)
            self.write_line(line)
        except Exception:
            self.handleError(record)

    def write_line(self, line: str) -> None:
        data = (line + "\n").encode("utf-8", "backslashreplace")
        while data:
            written = os.write(self.fd, data)
            data = data[written:]

    def reopen(self) -> None:
        if self.target == "-":
            return
        new_fd = self._open()
        old_fd, self.fd = self.fd, new_fd
        os.close(old_fd)

    def close(self) -> None:
        if self.target != "-" and self.fd >= 0:
            try:
                os.close(self.fd)
            except OSError:
                pass
            self.fd = -1
        super().close()


class Logger:
    """The server's logs: ``log.info(...)`` for the error log, ``log.access``."""

    def __init__(self, errorlog: str = "-", loglevel: str = "info", accesslog: str | None = None) -> None:
        self.error_log = logging.getLogger("prefork.error")
        self.access_log = logging.getLogger("prefork.access")
        self.error_log.propagate = False
        self.access_log.propagate = False
        self._handlers: list[LineHandler] = []
        self._setup(errorlog, loglevel, accesslog)

    def _setup(self, errorlog: str, loglevel: str, accesslog: str | None) -> None:
        for logger in (self.error_log, self.access_log):
            for handler in list(logger.handlers):
                logger.removeHandler(handler)
                handler.close()
        self._handlers = []
        error_handler = LineHandler(errorlog, sys.stderr.fileno())
        error_handler.setFormatter(logging.Formatter(ERROR_FORMAT, DATE_FORMAT))
        self.error_log.addHandler(error_handler)
        self.error_log.setLevel(loglevel.upper())
        self._handlers.append(error_handler)
        self.access_enabled = accesslog is not None
        if accesslog is not None:
            access_handler = LineHandler(accesslog, sys.stdout.fileno())
            access_handler.setFormatter(logging.Formatter("%(message)s"))
            self.access_log.addHandler(access_handler)
            self._handlers.append(access_handler)
        self.access_log.setLevel(logging.INFO)

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

    def traceback(self, msg: str, exc: BaseException) -> None:
        """Log ``msg`` and the full traceback of ``exc`` as one record."""
        text = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
        self.error_log.error("%s\n%s", msg, text.rstrip())

    def access(self, req: Any, resp: Any, environ: dict[str, Any], started: float,
               duration: float) -> None:
        """Log one served request. Called only when the access log is enabled.

        ``req`` is the parsed request (``method``, ``line``, ``version``,
        ``headers``, ``path``, ``query``), ``resp`` the response (``code``,
        ``status``, ``sent`` body bytes, ``headers``), ``environ`` the WSGI
        environ, ``started`` the wall-clock start and ``duration`` in seconds.
        """
        self.access_log.info(access_line(req, resp, environ, started))

    def reopen_files(self) -> None:
        for handler in self._handlers:
            handler.reopen()

    def close(self) -> None:
        for logger in (self.error_log, self.access_log):
            for handler in list(logger.handlers):
                logger.removeHandler(handler)
                handler.close()
        self._handlers = []


def access_line(req: Any, resp: Any, environ: dict[str, Any], started: float) -> str:
    """A line in Gunicorn's default access-log format (Common Log + referer, UA)."""
    stamp = time.strftime("[%d/%b/%Y:%H:%M:%S %z]", time.localtime(started))
    length = str(resp.sent) if resp.sent else "-"
    remote = environ.get("REMOTE_ADDR") or "-"
    referer = environ.get("HTTP_REFERER", "-")
    agent = environ.get("HTTP_USER_AGENT", "-")
    return f'{remote} - - {stamp} "{req.line}" {resp.code or 500} {length} "{referer}" "{agent}"'
