"""Real clients for the chaos scenarios.

``ClientPool`` is what production traffic looks like to a sync server: a few
``http.client`` connections kept alive between requests, a think time
between requests, and no retry ever (http.client never retries; a failed
request is recorded and the next request opens a new connection). Every
request is recorded with its connection (the client's local port, which is
how a test finds the server process that held it), when it was sent and
when it ended, and the exception if it failed.

``burst`` opens many connections at once and reads every answer with one
selector; ``send_raw`` sends exact bytes on a fresh connection and reads
until the server closes it.
"""

from __future__ import annotations

import dataclasses
import http.client
import random
import re
import selectors
import socket
import threading
import time


@dataclasses.dataclass(eq=False)
class Conn:
    """One TCP connection of one client."""

    client: int
    seq: int
    port: int  # the client's local port
    opened: float  # time.monotonic() when connected


@dataclasses.dataclass(eq=False)
class Outcome:
    """One request, as the client saw it."""

    conn: Conn | None  # None when the connection could not even be opened
    path: str
    sent: float
    ended: float
    status: int = 0
    body: bytes = b""
    error: str = ""  # "ExceptionType: message" when the request failed

    @property
    def served_by(self) -> int:
        """The worker pid the answer names ("pid=N"), or 0."""
        match = re.match(rb"pid=(\d+)", self.body)
        return int(match.group(1)) if match else 0


class _Client(threading.Thread):
    def __init__(self, pool: ClientPool, number: int) -> None:
        super().__init__(name=f"chaos-client-{number}", daemon=True)
        self.pool = pool
        self.number = number
        self.rng = random.Random(pool.seed * 1000 + number)
        self.http = http.client.HTTPConnection("127.0.0.1", pool.port, timeout=pool.timeout)
        self.conn: Conn | None = None
        self.seq = 0

    def run(self) -> None:
        pool = self.pool
        try:
            while not pool.stopping.is_set():
                self.one_request(pool.next_path(self.rng))
                low, high = pool.think
                pool.stopping.wait(self.rng.uniform(low, high))
        finally:
            self.http.close()

    def _connect(self) -> Conn:
        self.http.connect()
        self.seq += 1
        self.conn = Conn(self.number, self.seq, self.http.sock.getsockname()[1], time.monotonic())
        return self.conn

    def one_request(self, path: str) -> None:
        sent = time.monotonic()
        conn = self.conn
        try:
            if self.http.sock is None:
                conn = self._connect()
                sent = time.monotonic()
            self.http.request("GET", path, headers=self.pool.headers)
            response = self.http.getresponse()
            body = response.read()
        except Exception as exc:  # every failure is recorded, none is retried
            self.http.close()
            self.conn = None
            self.pool.record(Outcome(conn, path, sent, time.monotonic(),
                                     error=f"{type(exc).__name__}: {exc}"))
            return
        if self.http.sock is None:  # the response said "close": http.client closed it
            self.conn = None
        self.pool.record(Outcome(conn, path, sent, time.monotonic(), response.status, body))


class ClientPool:
    """``clients`` keep-alive clients, each sending ``GET path`` with a think
    time drawn from ``think`` between requests, until stopped.

    ``path`` is a string, or a callable taking a ``random.Random`` that
    returns one. A request fails if it raises or if its status is not in
    ``expect``. Use as a context manager: entering waits until every client
    has been answered once; leaving stops and joins them (with a deadline).
    """

    def __init__(self, port: int, clients: int = 3, path="/pid", think=(0.015, 0.03),
                 seed: int = 0, timeout: float = 10.0, expect=(200,), headers=None) -> None:
        self.port = port
        self.path = path
        self.think = think
        self.seed = seed
        self.timeout = timeout
        self.expect = frozenset(expect)
        self.headers = dict(headers or {})
        self.outcomes: list[Outcome] = []
        self.events: list[tuple[float, str]] = []
        self.stopping = threading.Event()
        self._lock = threading.Lock()
        self.t0 = time.monotonic()
        self.clients = [_Client(self, n) for n in range(clients)]

    def next_path(self, rng: random.Random) -> str:
        return self.path(rng) if callable(self.path) else self.path

    def record(self, outcome: Outcome) -> None:
        with self._lock:
            self.outcomes.append(outcome)

    def mark(self, what: str) -> float:
        """Note an event (a signal sent, a worker killed) for the failure report."""
        now = time.monotonic()
        with self._lock:
            self.events.append((now, what))
        return now

    def failed(self, outcome: Outcome) -> bool:
        return bool(outcome.error) or outcome.status not in self.expect

    @property
    def failures(self) -> list[Outcome]:
        with self._lock:
            return [o for o in self.outcomes if self.failed(o)]

    @property
    def count(self) -> int:
        with self._lock:
            return len(self.outcomes)

    def answered(self) -> set[int]:
        with self._lock:
            return {o.conn.client for o in self.outcomes if o.conn is not None and not self.failed(o)}

    def wait_requests(self, more: int, timeout: float = 20.0) -> None:
        """Wait until ``more`` further requests have ended."""
        target = self.count + more
        deadline = time.monotonic() + timeout
        while self.count < target:
            if time.monotonic() > deadline:
                raise AssertionError(f"only {self.count} of {target} requests ended within "
                                     f"{timeout} s\n{self.report()}")
            time.sleep(0.01)

    def __enter__(self) -> ClientPool:
        for client in self.clients:
            client.start()
        deadline = time.monotonic() + 15
        while len(self.answered()) < len(self.clients):
            if time.monotonic() > deadline:
                self.stop()
                raise AssertionError(f"not every client was answered within 15 s\n{self.report()}")
            time.sleep(0.01)
        return self

    def __exit__(self, *exc_info) -> None:
        self.stop()

    def stop(self, timeout: float | None = None) -> None:
        self.stopping.set()
        deadline = time.monotonic() + (timeout or self.timeout + 5)
        for client in self.clients:
            client.join(max(0.0, deadline - time.monotonic()))
        stuck = [c.name for c in self.clients if c.is_alive()]
        assert not stuck, f"clients still running after the stop: {stuck}"

    def describe(self, outcome: Outcome) -> str:
        conn = outcome.conn
        where = (f"client {conn.client} conn #{conn.seq} (port {conn.port}, opened "
                 f"{conn.opened - self.t0:+.3f})" if conn else "no connection")
        what = outcome.error or f"status {outcome.status} {outcome.body[:80]!r}"
        before = [e for e in self.events if e[0] <= outcome.ended]
        last = f"; last event {before[-1][1]!r} at {before[-1][0] - self.t0:+.3f}" if before else ""
        return (f"{outcome.path} on {where}: sent {outcome.sent - self.t0:+.3f}, ended "
                f"{outcome.ended - self.t0:+.3f}: {what}{last}")

    def report(self, failures: list[Outcome] | None = None, limit: int = 25) -> str:
        """Every failure (up to ``limit``) with its connection, timing and exception."""
        failures = self.failures if failures is None else failures
        lines = [f"{self.count} requests, {len(failures)} failed"]
        lines += [self.describe(o) for o in failures[:limit]]
        if len(failures) > limit:
            lines.append(f"... and {len(failures) - limit} more")
        return "\n".join(lines)


# --- one-shot connections


@dataclasses.dataclass
class RawResult:
    data: bytes = b""
    error: str = ""  # how the connection ended, if not by a clean close
    seconds: float = 0.0

    @property
    def statuses(self) -> list[int]:
        """The status of every response in the bytes received."""
        return [int(m) for m in re.findall(rb"(?:^|\r\n)HTTP/1\.[01] (\d{3})[ \r]", self.data)]


def send_raw(port: int, data: bytes, deadline: float = 10.0, half_close: bool = True) -> RawResult:
    """Send ``data`` on a new connection, then (``half_close``) shut down our
    side and read until the server closes, for at most ``deadline`` seconds."""
    start = time.monotonic()
    result = RawResult()
    chunks = []
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=deadline) as sock:
            try:
                sock.sendall(data)
                if half_close:
                    sock.shutdown(socket.SHUT_WR)
            except OSError as exc:  # the server may answer and close before all is sent
                result.error = f"send: {type(exc).__name__}"
            while True:
                sock.settimeout(max(0.01, deadline - (time.monotonic() - start)))
                try:
                    chunk = sock.recv(65536)
                except TimeoutError:
                    result.error = "hang"
                    break
                except OSError as exc:
                    result.error = result.error or f"recv: {type(exc).__name__}"
                    break
                if not chunk:
                    break
                chunks.append(chunk)
    except OSError as exc:
        result.error = f"connect: {type(exc).__name__}: {exc}"
    result.data = b"".join(chunks)
    result.seconds = time.monotonic() - start
    return result


def burst(port: int, requests: list[bytes], deadline: float) -> list[RawResult]:
    """Open one connection per request, all at once, send each its bytes, and
    read every answer until the server closes the connection; connections
    still open at ``deadline`` seconds are "hang"."""
    sel = selectors.DefaultSelector()
    results = [RawResult() for _ in requests]
    buffers: list[list[bytes]] = [[] for _ in requests]
    start = time.monotonic()
    socks = []
    try:
        for i, data in enumerate(requests):
            sock = socket.socket()
            socks.append(sock)
            sock.setblocking(False)
            try:
                sock.connect(("127.0.0.1", port))
            except BlockingIOError:
                pass
            sel.register(sock, selectors.EVENT_WRITE, (i, data))
        while sel.get_map() and time.monotonic() - start < deadline:
            for key, events in sel.select(timeout=0.2):
                i, pending = key.data
                sock = key.fileobj
                if events & selectors.EVENT_WRITE:
                    try:
                        sent = sock.send(pending)
                    except OSError as exc:
                        results[i].error = f"send: {type(exc).__name__}"
                        sel.unregister(sock)
                        sock.close()
                        continue
                    pending = pending[sent:]
                    sel.modify(sock, selectors.EVENT_WRITE if pending else selectors.EVENT_READ,
                               (i, pending))
                    continue
                try:
                    chunk = sock.recv(65536)
                except OSError as exc:
                    results[i].error = f"recv: {type(exc).__name__}"
                    chunk = b""
                if chunk:
                    buffers[i].append(chunk)
                else:  # the server closed: so do we, as a real client does
                    results[i].seconds = time.monotonic() - start
                    sel.unregister(sock)
                    sock.close()
        for key in list(sel.get_map().values()):
            results[key.data[0]].error = "hang"
    finally:
        sel.close()
        for sock in socks:
            sock.close()
    for result, chunks in zip(results, buffers, strict=True):
        result.data = b"".join(chunks)
    return results
