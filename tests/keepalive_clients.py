"""Clients as production traffic has them: pooled keep-alive connections
(http.client, which never retries) with think time between requests. Every
failed request is recorded with its exception; a lost request is a bug."""

import http.client
import random
import threading
import time


class ClientPool:
    """``clients`` threads, each with one persistent connection, sending GETs
    to ``path`` with ``think`` (min, max) seconds between them until stopped or
    ``per_client`` requests are done."""

    def __init__(self, port, clients=3, per_client=200, think=(0.015, 0.03), path="/", seed=1):
        self.port = port
        self.per_client = per_client
        self.think = think
        self.path = path
        self.ok = 0
        self.failures = []  # (exception repr, seconds since start)
        self.reconnects = 0
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._started = time.monotonic()
        self._threads = [threading.Thread(target=self._run, args=(random.Random(seed + i),))
                         for i in range(clients)]

    def __enter__(self):
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *exc):
        self.stop()

    def stop(self, timeout=30):
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout)

    def join(self, timeout=60):
        deadline = time.monotonic() + timeout
        for thread in self._threads:
            thread.join(max(0.0, deadline - time.monotonic()))
        return not any(t.is_alive() for t in self._threads)

    @property
    def total(self):
        return self.ok + len(self.failures)

    def _run(self, rng):
        conn = None
        for _ in range(self.per_client):
            if self._stop.is_set():
                break
            if conn is None:
                conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
            try:
                conn.request("GET", self.path)
                resp = conn.getresponse()
                resp.read()
                if resp.status != 200:
                    raise AssertionError(f"status {resp.status}")
                with self._lock:
                    self.ok += 1
                if resp.will_close:
                    conn.close()
                    conn = None
                    with self._lock:
                        self.reconnects += 1
            except Exception as exc:  # what the server did wrong, kept for the assertion
                with self._lock:
                    self.failures.append((repr(exc), round(time.monotonic() - self._started, 3)))
                conn.close()
                conn = None
            time.sleep(rng.uniform(*self.think))  # think time, not synchronisation
        if conn is not None:
            conn.close()
