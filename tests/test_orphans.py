"""A worker whose master was SIGKILLed while it was stuck in a request: it
enforces its own deadline, and the port is free once it is gone."""

import os
import signal
import threading
import time

import pytest
import requests
from conftest import a_worker_sleeps, alive, port_is_free, wait_until

# The request in progress sleeps far longer than the deadline under test.
STUCK_SECONDS = 60

# An application stuck where no Python signal handler can run, as in C code
# that retries its system call on EINTR: TERM stays pending for ever.
DEAF_TO_TERM = """
import signal, time

def app(environ, start_response):
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM})
    time.sleep(float(environ["QUERY_STRING"]))
    start_response("200 OK", [])
    return [b"done"]
"""


def stuck_request(server):
    """Start a request that sleeps STUCK_SECONDS, in a thread; wait until a worker is in it."""
    def get():
        try:
            requests.get(f"{server.url}/?{STUCK_SECONDS}", timeout=STUCK_SECONDS + 10)
        except requests.RequestException:
            pass  # the worker is killed under it

    thread = threading.Thread(target=get, daemon=True)
    thread.start()
    assert wait_until(lambda: a_worker_sleeps(server), 10)
    return thread


def kill_master(server):
    os.kill(server.master_pid, signal.SIGKILL)
    server.proc.wait(5)
    return time.monotonic()


@pytest.mark.parametrize("graceful,timeout", [(1, 30), (30, 1)])
def test_orphan_stuck_in_a_request_exits_within_the_shorter_timeout(test_app, graceful, timeout):
    server = test_app("basic:sleepy", workers=2, graceful_timeout=graceful, timeout=timeout)
    workers = server.worker_pids()
    stuck_request(server)
    kill_master(server)
    assert wait_until(lambda: not any(alive(pid) for pid in workers), 1 + 4), \
        [pid for pid in workers if alive(pid)]
    assert port_is_free(server.port)
    log = server.log_text()
    # one line per worker, before it goes
    assert log.count(f"the master (pid {server.master_pid}) is gone") == 2, log
    assert "exiting within 1 s" in log


def test_orphan_stuck_where_no_handler_runs_still_exits(tmp_path, prefork_server):
    (tmp_path / "deaf.py").write_text(DEAF_TO_TERM)
    server = prefork_server("deaf:app", 1, cwd=tmp_path, graceful_timeout=1)
    (worker,) = server.worker_pids()
    stuck_request(server)
    kill_master(server)
    assert wait_until(lambda: not alive(worker), 1 + 4)
    assert port_is_free(server.port)
    assert "is gone; finishing the request in progress, exiting within 1 s" in server.log_text()


def test_a_worker_has_no_deadline_while_its_master_lives(test_app):
    """The orphan timer is armed only when the master is gone: a request
    longer than --graceful-timeout, within --timeout, completes."""
    server = test_app("basic:sleepy", workers=1, graceful_timeout=0.5, timeout=10)
    assert requests.get(f"{server.url}/?1.5", timeout=10).text == "slept 1.5"
    assert "is gone" not in server.log_text()
