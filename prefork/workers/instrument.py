# What a worker records about each request besides serving it: its counts
# in the scoreboard (for metrics), its statsd lines, its request id, and,
# while it runs, enough about it to write its access-log line if the timeout
# kills it. ``Worker.request_started`` and ``request_finished`` call this for
# every worker class; the serving loop calls ``identify`` once the environ is
# built. Each thread of a worker has its own counter block and in-flight
# record, so nothing here takes a lock.
from __future__ import annotations

import os
import re
import time
from itertools import count
from typing import Any

from ..heartbeat import HeartbeatSlot
from ..logs import Logger
from ..settings import Config
from ..stats import RequestCounters
from ..statsd import StatsdClient

REQUEST_ID_KEY = "prefork.request_id"
# An id taken from a trusted peer is echoed in the response and written to
# logs: a plain token, bounded, nothing a log parser or a client could trip on.
_SAFE_ID = re.compile(r"[A-Za-z0-9._~:/+=@-]{1,200}")


def counting_enabled(cfg: Config) -> bool:
    """Count requests only when something reads the counts: a worker of a
    server without metrics, control socket or statsd pays nothing."""
    return bool(cfg.metrics_bind or (cfg.control_socket and not cfg.control_socket_disable))


class InFlight:
    """A request being served by one thread."""

    __slots__ = ("req", "environ", "resp", "started")

    def __init__(self, req: Any, started: float) -> None:
        self.req = req
        self.environ: dict[str, Any] = {}
        self.resp: Any = None
        self.started = started  # time.monotonic()


class Instruments:
    """One worker's per-request bookkeeping; made in the worker after the fork."""

    def __init__(self, cfg: Config, slot: HeartbeatSlot, log: Logger,
                 statsd: StatsdClient | None, threads: int = 1) -> None:
        self.counters: list[RequestCounters] | None = None
        if counting_enabled(cfg):
            self.counters = [RequestCounters(slot.counters(t)) for t in range(threads)]
        self.statsd = statsd
        # Whether requests are followed at all: not when nothing would use it.
        self.active = self.counters is not None or statsd is not None or log.access_enabled
        self.in_flight: list[InFlight | None] = [None] * threads
        header = cfg.request_id_header
        self.id_header = header
        self.id_key = "HTTP_" + header.upper().replace("-", "_") if header else ""
        # Ids are this worker's random prefix and its count of requests:
        # unique across workers and restarts, and no system call per request.
        self._id_prefix = os.urandom(8).hex()
        self._ids = count(1)

    def started(self, req: Any, thread: int) -> None:
        if self.active:
            self.in_flight[thread] = InFlight(req, time.monotonic())

    def identify(self, environ: dict[str, Any], resp: Any, trusted: bool, thread: int) -> None:
        """Give the request its id (``environ`` and the response header), and
        remember the environ and response for a timed-out access line."""
        current = self.in_flight[thread]
        if current is not None:
            current.environ = environ
            current.resp = resp
        if not self.id_header:
            return
        given = environ.get(self.id_key) if trusted else None
        if given is None or not _SAFE_ID.fullmatch(given):
            given = f"{self._id_prefix}{next(self._ids):08x}"
        environ[REQUEST_ID_KEY] = given
        resp.request_id = (self.id_header, given)

    def finished(self, req: Any, resp: Any, thread: int) -> None:
        current = self.in_flight[thread]
        self.in_flight[thread] = None
        if current is None:
            return
        seconds = time.monotonic() - current.started
        code = getattr(resp, "code", 0) or 500
        if self.counters is not None:
            self.counters[thread].request(req.method, code, seconds)
        if self.statsd is not None:
            self.statsd.request(code, seconds)

    def rejected(self, status: int, thread: int) -> None:
        """The server answered an error itself (a malformed request, a body too large)."""
        if self.counters is not None:
            self.counters[thread].rejected(status)

    def log_timed_out(self, log: Logger) -> None:
        """The timeout is killing this worker: an access-log line for each request
        in progress, with status 504 (the client gets no response)."""
        if not log.access_enabled:
            return
        now_wall, now = time.time(), time.monotonic()
        for current in self.in_flight:
            if current is None:
                continue
            duration = now - current.started
            log.access_timed_out(current.req, current.resp, current.environ, now_wall - duration,
                                 duration)

