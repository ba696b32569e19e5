# Prometheus metrics, served by the master on --metrics-bind. A scrape reads
# the scoreboard (every worker's slot, summed with what the master kept of
# the workers that have exited) and the kernel's listen queues, and writes it
# in the text exposition format 0.0.4, or OpenMetrics 1.0.0 when the scrape's
# Accept header asks for it. Both formats are written here by hand: they are
# small and documented (prometheus.io/docs/instrumenting/exposition_formats,
# the OpenMetrics specification). The names are an interface: docs/observability.md
# lists them, and dashboards and tests rely on them.
from __future__ import annotations

import math
import os
import resource
import socket
import sys
import time
from collections.abc import Callable, Iterable

from .endpoint import Endpoint
from .http.errors import HTTPError
from .http.request import Limits, parse_head
from .http.response import date_line
from .logs import Logger
from .stats import RESTART_REASONS, ServerView

TEXT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
OPENMETRICS_TYPE = "application/openmetrics-text; version=1.0.0; charset=utf-8"
WORKER_STATES = ("booting", "idle", "busy")
# A scrape's head: a short request line, a few fields.
SCRAPE_LIMITS = Limits(request_line=2048, fields=50, field_size=4096)

Labels = tuple[tuple[str, str], ...]


# --- the exposition formats


def _escape_help(text: str) -> str:
    return text.replace("\\", "\\\\").replace("\n", "\\n")


def _escape_label(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def format_value(value: float) -> str:
    if isinstance(value, int):
        return str(value)
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    if math.isnan(value):
        return "NaN"
    return repr(float(value))


def _labels(labels: Labels) -> str:
    if not labels:
        return ""
    return "{" + ",".join(f'{k}="{_escape_label(v)}"' for k, v in labels) + "}"


class Family:
    """One metric: its name (without ``_total`` for a counter), type, help and samples."""

    __slots__ = ("name", "kind", "help", "samples")

    def __init__(self, name: str, kind: str, help: str) -> None:
        self.name = name
        self.kind = kind
        self.help = help
        self.samples: list[tuple[str, Labels, float]] = []  # (name suffix, labels, value)

    def add(self, value: float, labels: Labels = (), suffix: str = "") -> Family:
        self.samples.append((suffix, labels, value))
        return self


class Exposition:
    """Metric families, rendered in either format."""

    def __init__(self) -> None:
        self.families: list[Family] = []

    def family(self, name: str, kind: str, help: str) -> Family:
        family = Family(name, kind, help)
        self.families.append(family)
        return family

    def counter(self, name: str, help: str, samples: Iterable[tuple[Labels, float]] = ()) -> Family:
        family = self.family(name, "counter", help)
        for labels, value in samples:
            family.add(value, labels, "_total")
        return family

    def gauge(self, name: str, help: str, samples: Iterable[tuple[Labels, float]] = ()) -> Family:
        family = self.family(name, "gauge", help)
        for labels, value in samples:
            family.add(value, labels)
        return family

    def histogram(self, name: str, help: str, buckets: list[tuple[float, int]], total: float) -> Family:
        """``buckets``: (upper bound, cumulative count), the last bound +Inf."""
        family = self.family(name, "histogram", help)
        for bound, count in buckets:
            family.add(count, (("le", format_value(float(bound))),), "_bucket")
        family.add(buckets[-1][1] if buckets else 0, (), "_count")
        family.add(total, (), "_sum")
        return family

    def render(self, openmetrics: bool = False) -> bytes:
        lines = []
        for family in self.families:
            # The text format names a counter by its sample (``x_total``);
            # OpenMetrics names the family without the suffix.
            name = family.name
            if family.kind == "counter" and not openmetrics:
                name += "_total"
            lines.append(f"# HELP {name} {_escape_help(family.help)}")
            lines.append(f"# TYPE {name} {family.kind}")
            for suffix, labels, value in family.samples:
                lines.append(f"{family.name}{suffix}{_labels(labels)} {format_value(value)}")
        if openmetrics:
            lines.append("# EOF")
        return ("\n".join(lines) + "\n").encode("utf-8")


def wants_openmetrics(accept: str | None) -> bool:
    return bool(accept) and "application/openmetrics-text" in accept.lower()  # type: ignore[union-attr]


# --- what is reported


def collect(view: ServerView, process: dict[str, float]) -> Exposition:
    """Every metric of docs/observability.md, from one reading of the server."""
    out = Exposition()
    totals = view.totals
    out.counter("prefork_requests", "Requests answered, by status code and method.",
                [((("code", code), ("method", method)), count)
                 for (code, method), count in sorted(totals.requests().items())])
    out.histogram("prefork_request_duration_seconds",
                  "Time from the request head parsed to the response written.",
                  totals.cumulative_buckets(), totals.duration_sum)
    in_flight = sum(w.busy_threads for w in view.workers)
    out.gauge("prefork_requests_in_progress", "Requests being served now.", [((), in_flight)])
    states = dict.fromkeys(WORKER_STATES, 0)
    for worker in view.workers:
        states[worker.state] = states.get(worker.state, 0) + 1
    out.gauge("prefork_workers", "Live worker processes, by state.",
              [((("state", state),), count) for state, count in states.items()])
    out.gauge("prefork_busy_threads", "Threads serving a request now (for sync workers, busy workers).",
              [((), in_flight)])
    out.gauge("prefork_workers_wanted", "The number of workers the master maintains.",
              [((), view.wanted_workers)])
    _listen_queues(out, view)
    out.counter("prefork_worker_restarts", "Workers replaced, by reason.",
                [((("reason", reason),), view.restarts.get(reason, 0))
                 for reason in (*RESTART_REASONS, *sorted(set(view.restarts) - set(RESTART_REASONS)))])
    out.counter("prefork_request_timeouts", "Requests ended by the timeout (their worker was killed).",
                [((), view.timeouts)])
    memory = out.gauge("prefork_worker_memory_bytes", "Memory of each live worker (rss, and pss "
                       "where the kernel reports it).")
    for pid, (rss, pss) in sorted(view.memory.items()):
        memory.add(rss, (("pid", str(pid)), ("kind", "rss")))
        if pss is not None:
            memory.add(pss, (("pid", str(pid)), ("kind", "pss")))
    out.counter("prefork_parse_errors", "Errors the server answered by itself, for requests "
                "it could not accept, by status code.",
                [((("code", code),), count) for code, count in sorted(totals.rejected().items())])
    out.gauge("prefork_info", "The server's version and worker class (always 1).",
              [((("version", view.version), ("worker_class", view.worker_class)), 1)])
    _process(out, process)
    return out


def _listen_queues(out: Exposition, view: ServerView) -> None:
    length = out.gauge("prefork_listen_queue", "Connections waiting in the kernel's accept queue.")
    limit = out.gauge("prefork_listen_queue_max", "The limit of that accept queue.")
    for listener in view.listeners:
        if listener.queue is None:
            continue
        labels: Labels = (("listener", listener.name),)
        if listener.pid:
            labels += (("pid", str(listener.pid)),)
        length.add(listener.queue.length, labels)
        if listener.queue.limit is not None:
            limit.add(listener.queue.limit, labels)


def _process(out: Exposition, figures: dict[str, float]) -> None:
    described = (
        ("process_cpu_seconds", "counter", "Total user and system CPU time of the master, in seconds."),
        ("process_resident_memory_bytes", "gauge", "Resident memory of the master, in bytes."),
        ("process_virtual_memory_bytes", "gauge", "Virtual memory of the master, in bytes."),
        ("process_start_time_seconds", "gauge", "Start time of the master since the Unix epoch, in seconds."),
        ("process_open_fds", "gauge", "Open file descriptors of the master."),
        ("process_max_fds", "gauge", "The master's limit of open file descriptors."),
    )
    for name, kind, help in described:
        if name in figures:
            family = out.family(name, kind, help)
            family.add(figures[name], (), "_total" if kind == "counter" else "")


# --- the master's process, and its workers' memory


_PAGE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096


def _boot_time() -> float | None:
    try:
        with open("/proc/stat") as f:
            for line in f:
                if line.startswith("btime "):
                    return float(line.split()[1])
    except OSError:
        pass
    return None


def process_start_time(pid: int = 0) -> float | None:
    """When process ``pid`` (0: this one) started, in seconds since the epoch."""
    try:
        with open(f"/proc/{pid or 'self'}/stat") as f:
            stat = f.read()
    except OSError:
        return None
    boot = _boot_time()
    if boot is None:
        return None
    ticks = int(stat[stat.rfind(")") + 2:].split()[19])
    return boot + ticks / os.sysconf("SC_CLK_TCK")


def process_figures(started: float) -> dict[str, float]:
    """The master's own process_* metrics; ``started`` stands in where /proc is missing."""
    times = os.times()
    figures: dict[str, float] = {"process_cpu_seconds": round(times.user + times.system, 6)}
    figures["process_start_time_seconds"] = process_start_time() or started
    try:
        with open("/proc/self/statm") as f:
            size, resident = (int(x) for x in f.read().split()[:2])
        figures["process_virtual_memory_bytes"] = size * _PAGE
        figures["process_resident_memory_bytes"] = resident * _PAGE
    except (OSError, ValueError):
        pass
    for fd_dir in ("/proc/self/fd", "/dev/fd"):
        if sys.platform.startswith("linux") or fd_dir == "/dev/fd":
            try:
                figures["process_open_fds"] = len(os.listdir(fd_dir))
                break
            except OSError:
                continue
    soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    if soft != resource.RLIM_INFINITY:
        figures["process_max_fds"] = soft
    return figures


class MemoryReader:
    """Workers' resident memory (RSS, cheap to read) and proportional set size
    (PSS: walking a process's page tables, so it is read at most every
    ``pss_interval`` seconds per worker and within ``budget`` seconds per scrape)."""

    def __init__(self, pss_interval: float = 10.0, budget: float = 0.02,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.pss_interval = pss_interval
        self.budget = budget
        self.clock = clock
        self._pss: dict[int, tuple[float, int]] = {}  # pid -> (when read, bytes)

    def read(self, pids: Iterable[int]) -> dict[int, tuple[int, int | None]]:
        result: dict[int, tuple[int, int | None]] = {}
        start = self.clock()
        live = set()
        for pid in pids:
            live.add(pid)
            rss = _rss(pid)
            if rss is None:
                continue
            result[pid] = (rss, self._pss_of(pid, start))
        for pid in set(self._pss) - live:
            del self._pss[pid]
        return result

    def _pss_of(self, pid: int, start: float) -> int | None:
        now = self.clock()
        cached = self._pss.get(pid)
        if cached is not None and (now - cached[0] < self.pss_interval or now - start > self.budget):
            return cached[1]
        if now - start > self.budget:
            return None
        pss = _pss(pid)
        if pss is not None:
            self._pss[pid] = (now, pss)
        return pss


def worker_memory(pid: int) -> tuple[int, str] | None:
    """A process's memory in bytes and what was measured: its PSS, or its RSS
    where smaps_rollup is missing (Linux before 4.14); None when it is gone."""
    pss = _pss(pid)
    if pss is not None:
        return pss, "PSS"
    rss = _rss(pid)
    return None if rss is None else (rss, "RSS")


def _rss(pid: int) -> int | None:
    try:
        with open(f"/proc/{pid}/statm") as f:
            return int(f.read().split()[1]) * _PAGE
    except (OSError, ValueError, IndexError):
        return None


def _pss(pid: int) -> int | None:
    try:
        with open(f"/proc/{pid}/smaps_rollup") as f:
            for line in f:
                if line.startswith("Pss:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


# --- the endpoint


class MetricsEndpoint(Endpoint):
    """``GET /metrics`` on --metrics-bind, answered from the master's loop."""

    def __init__(self, sock: socket.socket, name: str, log: Logger,
                 render: Callable[[bool], bytes], owned_path: str = "") -> None:
        super().__init__(sock, name, log, owned_path)
        self.render = render

    def answer(self, data: bytes) -> bytes | None:
        try:
            parsed = parse_head(data, SCRAPE_LIMITS)
        except HTTPError as exc:
            return _response(exc.status, exc.reason, b"%s\n" % exc.reason.encode())
        if parsed is None:
            return None
        req = parsed[0]
        if req.method not in ("GET", "HEAD"):
            return _response(405, "Method Not Allowed", b"GET /metrics\n", "Allow: GET, HEAD\r\n")
        if req.path != "/metrics":
            return _response(404, "Not Found", b"Not Found: metrics are at /metrics\n")
        openmetrics = wants_openmetrics(req.header("accept"))
        body = self.render(openmetrics)
        kind = OPENMETRICS_TYPE if openmetrics else TEXT_TYPE
        return _response(200, "OK", body, f"Content-Type: {kind}\r\n", head_only=req.method == "HEAD")

    def too_large(self) -> bytes:
        return _response(431, "Request Header Fields Too Large", b"request too large\n")

    def failed(self) -> bytes:
        return _response(500, "Internal Server Error", b"the metrics could not be collected\n")


def _response(status: int, reason: str, body: bytes, fields: str = "",
              head_only: bool = False) -> bytes:
    if "Content-Type" not in fields:
        fields += "Content-Type: text/plain; charset=utf-8\r\n"
    head = (f"HTTP/1.1 {status} {reason}\r\n{date_line()}{fields}"
            f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n").encode("latin-1")
    return head if head_only else head + body
