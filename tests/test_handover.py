"""Handovers happen when the workers report, not at the master's next periodic
check (about a second apart): a successor that becomes ready gets the old
worker retired at once, and an idle worker told to retire leaves at once.
Measured before and after in docs/performance.md (bench/handover.py)."""

import http.client
import signal
import time

from conftest import wait_until

# The master's periodic check is min(1 s, timeout / 4) apart: make it 1 s.
SETTINGS = {"timeout": 120}


def get_pid(port):
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request("GET", "/", headers={"Connection": "close"})
        return int(conn.getresponse().read())
    finally:
        conn.close()


def test_the_old_worker_is_retired_as_soon_as_its_successor_is_ready(test_app):
    # One worker, replaced every 30 requests. Once the successor is ready
    # both accept, so the old one answers only until the master retires it:
    # a few requests when the master acts on the readiness report, about
    # half of those sent in the next second when it waits for its next check.
    server = test_app("basic:pid", workers=1, max_requests=30, max_requests_jitter=0, **SETTINGS)
    answers = []
    deadline = time.monotonic() + 60
    while len(dict.fromkeys(answers)) < 4 and time.monotonic() < deadline:
        answers.append(get_pid(server.port))
    workers = list(dict.fromkeys(answers))
    assert len(workers) >= 4, (len(answers), server.log_text()[-2000:])
    late = 0  # answers by a worker after its successor's first answer
    for old, new in zip(workers, workers[1:], strict=False):
        first_new = answers.index(new)
        late += answers[first_new:].count(old)
    assert late <= 30, (late, [answers.count(w) for w in workers])  # 64 before the fix


def test_a_reload_of_an_idle_server_ends_within_milliseconds(test_app):
    # The old idle workers are blocked waiting for a connection; told to
    # retire, they leave now rather than when that wait next times out (a
    # beat, 1 s here). Five reloads took 10 s that way; now about 0.5 s.
    server = test_app("basic:hello", workers=2, **SETTINGS)
    started = time.monotonic()
    for _ in range(5):
        before = set(server.worker_pids())
        server.send_signal(signal.SIGHUP)
        server.wait_notify("READY=1", timeout=30)
        assert wait_until(lambda b=before: not set(server.worker_pids()) & b, 10)
    elapsed = time.monotonic() - started
    assert elapsed < 3.0, (elapsed, server.log_text()[-2000:])
    assert server.log_text().count("Reload complete") == 5
