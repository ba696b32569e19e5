"""Timeouts the master acts on, and the ones it must not: impossible heartbeats,
boot timeouts at first start and later."""

import mmap
import os
import time

import pytest
import requests


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
