"""Workers that cannot be started: fork() refused by a process limit, a
--worker-tmp-dir that is full. Before the server was ever healthy that stops
it; afterwards the master backs off and says why."""

import ctypes
import os
import re
import resource
import shutil
import signal
import subprocess
import sys
import tempfile

import pytest
import requests
from conftest import APPS, wait_until

root_only = pytest.mark.skipif(os.geteuid() != 0, reason="needs root (to set a process limit it cannot lift)")

PR_CAPBSET_DROP = 24
CAP_SYS_ADMIN, CAP_SYS_RESOURCE = 21, 24


def limited_processes(limit):
    """A preexec function: run the server with at most ``limit`` processes.

    RLIMIT_NPROC counts the processes of the real uid, and root or a process
    with CAP_SYS_RESOURCE/CAP_SYS_ADMIN is exempt. So the server keeps
    euid 0 (to read this interpreter and the tests' files) but gets a real uid
    no other process has, and loses those two capabilities for good."""
    uid = 60000 + os.getpid() % 20000
    libc = ctypes.CDLL(None, use_errno=True)

    def preexec():
        for cap in (CAP_SYS_ADMIN, CAP_SYS_RESOURCE):
            if libc.prctl(PR_CAPBSET_DROP, cap, 0, 0, 0) != 0:
                os._exit(99)
        os.setresuid(uid, 0, 0)
        resource.setrlimit(resource.RLIMIT_NPROC, (limit, limit))

    return preexec


def start(args, log_path, preexec=None):
    log = open(log_path, "wb")
    try:
        return subprocess.Popen(
            [sys.executable, "-m", "prefork", "-b", "127.0.0.1:0", *args],
            cwd=APPS, stdout=log, stderr=subprocess.STDOUT, preexec_fn=preexec,
            start_new_session=True, env=dict(os.environ, PYTHONUNBUFFERED="1"))
    finally:
        log.close()


@pytest.fixture
def server_proc(tmp_path):
    """Start a prefork master (``start`` arguments); killed, with its group, at teardown."""
    procs = []

    def run(args, preexec=None):
        proc = start(args, tmp_path / "server.log", preexec)
        procs.append(proc)
        return proc

    yield run
    for proc in procs:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(5)


def wait_for_log(path, pattern, timeout=15):
    regex = re.compile(pattern)
    assert wait_until(lambda: regex.search(path.read_text(errors="replace")), timeout), path.read_text()
    return regex.search(path.read_text())


@root_only
def test_fork_refused_at_first_start_stops_the_server(tmp_path, server_proc):
    proc = server_proc(["-w", "2", "basic:hello"], limited_processes(1))
    assert proc.wait(20) == 1
    log = (tmp_path / "server.log").read_text()
    assert log.count("Cannot start a worker: fork() failed: Resource temporarily unavailable") == 4
    assert "Shutting down: 4 attempts in a row failed before the server was ready" in log
    # backing off between the attempts, not spinning
    assert "trying again in 0.25 s" in log and "trying again in 1.00 s" in log


@root_only
def test_fork_refused_after_a_healthy_start_backs_off(tmp_path, server_proc):
    log = tmp_path / "server.log"
    # the master and one worker, with its thread (RLIMIT_NPROC counts threads)
    proc = server_proc(["-w", "1", "basic:hello"], limited_processes(3))
    url = "http://" + wait_for_log(log, r"Listening at: http://(\S+)")[1]
    wait_for_log(log, r"Ready: 1 worker")
    proc.send_signal(signal.SIGTTIN)  # a second worker is over the limit
    wait_for_log(log, r"Cannot start a worker: fork\(\) failed: Resource temporarily unavailable; "
                      r"trying again in 1\.00 s")
    assert proc.poll() is None
    assert requests.get(url, timeout=5).text == "hello"
    text = log.read_text()
    assert "trying again in 0.25 s" in text and "trying again in 0.50 s" in text
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(15) == 0


@pytest.fixture
def small_tmpfs():
    """A tmpfs with room for one heartbeat file (20 KiB) and not two."""
    path = tempfile.mkdtemp(prefix="prefork-tmpfs-")
    try:
        subprocess.run(["mount", "-t", "tmpfs", "-o", "size=24k,mode=0700", "tmpfs", path],
                       check=True, capture_output=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        os.rmdir(path)
        pytest.skip("cannot mount a tmpfs here")
    yield path
    subprocess.run(["umount", "-l", path], capture_output=True, timeout=10)
    shutil.rmtree(path, ignore_errors=True)


def test_full_worker_tmp_dir_after_a_healthy_start_backs_off(tmp_path, server_proc, small_tmpfs):
    log = tmp_path / "server.log"
    proc = server_proc(["-w", "1", "--worker-tmp-dir", small_tmpfs, "basic:hello"])
    url = "http://" + wait_for_log(log, r"Listening at: http://(\S+)")[1]
    wait_for_log(log, r"Ready: 1 worker")
    proc.send_signal(signal.SIGTTIN)
    wait_for_log(log, rf"Cannot start a worker: cannot create its heartbeat file in {small_tmpfs}: "
                      r"No space left on device; trying again in 0\.50 s")
    assert requests.get(url, timeout=5).text == "hello"
    proc.send_signal(signal.SIGTTOU)  # back to one worker: nothing more to start
    wait_for_log(log, r"Number of workers: 1 \(was 2\)")
    assert proc.poll() is None
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(15) == 0


@root_only
def test_a_worker_without_room_for_its_watcher_thread_still_serves(tmp_path, server_proc):
    log = tmp_path / "server.log"
    proc = server_proc(["-w", "1", "basic:hello"], limited_processes(2))  # no room for a thread
    url = "http://" + wait_for_log(log, r"Listening at: http://(\S+)")[1]
    wait_for_log(log, r"Ready: 1 worker")
    assert requests.get(url, timeout=5).text == "hello"
    assert "can't start new thread to watch the master" in log.read_text()
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(15) == 0
