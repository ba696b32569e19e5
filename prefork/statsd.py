# statsd, for dashboards built on Gunicorn's: the same settings
# (--statsd-host, --statsd-prefix, --dogstatsd-tags) and the same names.
#
#   gunicorn.requests              counter, one per request      (worker)
#   gunicorn.request.duration      timer, milliseconds           (worker)
#   gunicorn.request.status.<code> counter                       (worker)
#   gunicorn.log.<level>           counter per critical, error, warning and
#                                  exception record              (any process)
#   gunicorn.workers               gauge, when the count changes (master)
#   gunicorn.backlog               timer, with --enable-backlog-metric (master)
#
# Only these names are sent: a dashboard made for Gunicorn keeps working, and
# the richer figures (histograms, restarts by reason, the listen queues) are
# in the Prometheus endpoint. Each datagram is sent on a connected,
# non-blocking socket and every error is ignored, so a missing or slow statsd
# server never delays or fails a request. A request's three lines go out in
# one datagram (statsd reads newline-separated lines).
from __future__ import annotations

import logging
import re
import socket
from typing import Any

DEFAULT_PORT = 8125
_MSG_DONTWAIT = getattr(socket, "MSG_DONTWAIT", 0)


def parse_statsd_address(text: str) -> tuple[str, Any]:
    """``HOST:PORT``, ``HOST`` (port 8125), ``[IPV6]:PORT`` or ``unix:PATH``;
    returns (kind, address) with kind "udp" or "unix"."""
    text = text.strip()
    if text.startswith("unix:"):
        path = text[5:]
        path = path[2:] if path.startswith("//") else path
        if not path:
            raise ValueError(f"statsd address {text!r} has no socket path")
        return "unix", path
    match = re.fullmatch(r"\[([0-9A-Fa-f:.]+)\](?::([0-9]+))?|([A-Za-z0-9.\-_]+)(?::([0-9]+))?", text)
    if match is None:
        raise ValueError(f"expected HOST:PORT or unix:PATH, got {text!r}")
    host = match.group(1) or match.group(3)
    port = match.group(2) or match.group(4)
    number = int(port) if port else DEFAULT_PORT
    if not 0 < number <= 65535:
        raise ValueError(f"statsd address {text!r}: invalid port {port!r}")
    return "udp", (host, number)


def normalize_prefix(prefix: str) -> str:
    """As Gunicorn does: a non-empty prefix ends with exactly one dot."""
    prefix = prefix.rstrip(".")
    return prefix + "." if prefix else ""


class StatsdClient:
    """Fire-and-forget statsd lines to one server; made once, before any fork."""

    def __init__(self, address: str, prefix: str = "", tags: str = "") -> None:
        kind, target = parse_statsd_address(address)
        family = socket.AF_UNIX if kind == "unix" else _family(target[0])
        self.sock = socket.socket(family, socket.SOCK_DGRAM)
        self.sock.setblocking(False)
        try:
            self.sock.connect(target)
        except OSError:
            pass  # a unix path that does not exist yet: sends fail until it does
        self.target = target
        self.prefix = normalize_prefix(prefix)
        self.suffix = f"|#{tags}" if tags else ""
        p, s = self.prefix, self.suffix
        # Prebuilt, so that a request costs one format and one send.
        self._request_lines = (f"{p}gunicorn.request.duration:%s|ms{s}\n"
                               f"{p}gunicorn.requests:1|c|@1.0{s}\n"
                               f"{p}gunicorn.request.status.%d:1|c|@1.0{s}")

    def send(self, data: str) -> None:
        try:
            self.sock.send(data.encode("ascii", "replace"), _MSG_DONTWAIT)
        except OSError:
            if isinstance(self.target, str):
                self._reconnect()

    def _reconnect(self) -> None:
        """A unix statsd socket that appeared (or came back) after we started."""
        try:
            self.sock.connect(self.target)
        except OSError:
            pass

    def request(self, code: int, seconds: float) -> None:
        self.send(self._request_lines % (_ms(seconds), code))

    def increment(self, name: str, value: int = 1) -> None:
        self.send(f"{self.prefix}{name}:{value}|c|@1.0{self.suffix}")

    def gauge(self, name: str, value: float) -> None:
        self.send(f"{self.prefix}{name}:{value}|g{self.suffix}")

    def timing(self, name: str, value: float) -> None:
        self.send(f"{self.prefix}{name}:{value}|ms{self.suffix}")

    def log_handler(self) -> StatsdLogHandler:
        return StatsdLogHandler(self)

    def close(self) -> None:
        self.sock.close()


class StatsdLogHandler(logging.Handler):
    """Counts error-log records: gunicorn.log.critical, .error, .warning, and
    .exception for an error logged with a traceback."""

    def __init__(self, client: StatsdClient) -> None:
        super().__init__(logging.WARNING)
        self.client = client

    def emit(self, record: logging.LogRecord) -> None:
        if record.levelno >= logging.CRITICAL:
            name = "critical"
        elif record.levelno >= logging.ERROR:
            name = "exception" if record.exc_info or _has_traceback(record) else "error"
        else:
            name = "warning"
        self.client.increment(f"gunicorn.log.{name}")


def _has_traceback(record: logging.LogRecord) -> bool:
    # Logger.traceback() puts the formatted traceback in the message's arguments.
    return any(isinstance(arg, str) and arg.startswith("Traceback (most recent call last)")
               for arg in (record.args if isinstance(record.args, tuple) else ()))


def _ms(seconds: float) -> str:
    return f"{seconds * 1000:.3f}"


def _family(host: str) -> int:
    return socket.AF_INET6 if ":" in host else socket.AF_INET
