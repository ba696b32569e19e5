"""Timeouts the master acts on, and the ones it must not: impossible heartbeats,
boot timeouts at first start and later."""

import mmap
import os
import time

import pytest
import requests
from conftest import wait_until


def map_worker_slot(pid):
    """The worker's heartbeat slot, mapped into this process through
    /proc/PID/map_files (the file itself is unlinked); a 'd' view of it."""
    with open(f"/proc/{pid}/maps") as f:
        ranges = [line.split()[0] for line in f if "/prefork-" in line]
    assert len(ranges) == 1, ranges
    try:
        fd = os.open(f"/proc/{pid}/map_files/{ranges[0]}", os.O_RDWR)
    except PermissionError:
        pytest.skip("mapping another process's file needs CAP_SYS_ADMIN")
    try:
        return mmap.mmap(fd, 0)
    finally:
        os.close(fd)


def test_impossible_heartbeats_are_torn_reads_not_timeouts(test_app):
    """A beat of 0.0, one from the future and one older than the slot are
    what a torn read looks like: never a reason to abort a worker."""
    server = test_app("basic:hello", workers=1, timeout=1, loglevel="debug")
    (worker,) = server.worker_pids()
    slot = map_worker_slot(worker)
    beat = memoryview(slot).cast("d")
    try:
        for impossible in (lambda: 0.0, lambda: time.monotonic() + 1000, lambda: time.monotonic() - 100):
            # For longer than --timeout, the master sees this value at almost every look.
            end = time.monotonic() + 1.5
            while time.monotonic() < end:
                beat[0] = impossible()
                time.sleep(0.001)
    finally:
        beat.release()
        slot.close()
    log = server.log_text()
    assert "WORKER TIMEOUT" not in log
    assert server.worker_pids() == [worker]
    assert "impossible heartbeat 0.0 (a torn read)" in log
    assert log.count("impossible heartbeat") >= 6
    assert requests.get(server.url).text == "hello"


def test_boot_timeout_at_first_start_stops_the_server(test_app):
    """Like an import error: exit 1, one line that says why, no respawn loop."""
    env = dict(os.environ, PREFORK_TEST_BOOT_SECONDS="60")
    server = test_app("slowboot:app", workers=2, boot_timeout=1, env=env, wait_ready=False)
    assert server.proc.wait(15) == 1
    log = server.log_text()
    assert log.count("the application did not finish loading within --boot-timeout 1 s") == 1
    assert "Shutting down: the application could not be loaded" in log
    # A worker aborted says where it was stuck (the stop that follows leaves it
    # its grace to do so), and none is started again. Both workers usually
    # reach the timeout in the same look; one whose boot began a little later
    # may be stopped with the server before its own (on a loaded machine).
    aborted = log.count("[CRITICAL] WORKER TIMEOUT")
    assert 1 <= aborted <= 2
    assert log.count("while loading the application; stack of the stuck worker") == aborted
    assert "slowboot.py" in log
    assert len(log.splitlines()) < 150


SLOW_WHEN_FLAGGED = """
import os, time
if os.path.exists(os.environ["SLOW_FLAG"]):
    time.sleep(60)

def app(environ, start_response):
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [str(os.getpid()).encode()]
"""


def test_boot_timeouts_after_a_healthy_start_back_off(tmp_path, prefork_server):
    (tmp_path / "flagged.py").write_text(SLOW_WHEN_FLAGGED)
    flag = tmp_path / "slow"
    env = dict(os.environ, SLOW_FLAG=str(flag))
    server = prefork_server("flagged:app", 1, cwd=tmp_path, env=env, boot_timeout=1)
    (first,) = server.worker_pids()
    flag.touch()
    os.kill(first, 9)  # its replacement's import now hangs
    server.wait_for_log(r"failed to boot: the application did not finish loading within --boot-timeout 1 s")
    server.wait_for_log(r"Workers keep dying right after they start \(2 in a row\); waiting 0\.25 s",
                        timeout=15)
    assert server.proc.poll() is None
    flag.unlink()
    assert wait_until(lambda: _get(server.url), 15)
    assert "Shutting down" not in server.log_text()


def _get(url):
    try:
        return requests.get(url, timeout=2).ok
    except requests.RequestException:
        return False


def test_boot_timeout_of_an_import_deaf_to_sigabrt_stops_the_server(tmp_path, prefork_server):
    """Stuck where SIGABRT cannot reach it (as in C code): killed, and still fatal."""
    (tmp_path / "deaf.py").write_text(
        "import signal, time\n"
        "signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGABRT})\n"
        "time.sleep(60)\n"
        "app = None\n"
    )
    server = prefork_server("deaf:app", 1, cwd=tmp_path, boot_timeout=1, wait_ready=False)
    assert server.proc.wait(15) == 1
    log = server.log_text()
    assert "the application did not finish loading within --boot-timeout 1 s" in log
    assert log.count("[CRITICAL] WORKER TIMEOUT") == 1
