"""Descriptors a program run by the application must not inherit: the
listening sockets and the heartbeat file."""

import os
import signal

import pytest
import requests
from conftest import alive, port_is_free, wait_until

# Runs a background program the way applications do, and says its pid.
BACKGROUND = """
import os

def app(environ, start_response):
    pid_file = environ["QUERY_STRING"]
    os.system(f"sleep 5 & echo $! > {pid_file}")
    start_response("200 OK", [])
    return [b"started"]
"""


def descriptors(pid):
    """What each open descriptor of ``pid`` points to."""
    fd_dir = f"/proc/{pid}/fd"
    targets = []
    for fd in os.listdir(fd_dir):
        try:
            targets.append(os.readlink(f"{fd_dir}/{fd}"))
        except OSError:
            pass
    return targets


@pytest.fixture
def background_pids():
    """Pids the app's background programs wrote; each is killed at teardown."""
    pids = []
    yield pids
    for pid in pids:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def test_a_background_program_holds_no_server_descriptor(tmp_path, prefork_server, background_pids):
    (tmp_path / "background.py").write_text(BACKGROUND)
    pid_file = tmp_path / "sleep.pid"
    server = prefork_server("background:app", 1, cwd=tmp_path)
    assert requests.get(f"{server.url}/?{pid_file}", timeout=10).text == "started"
    assert wait_until(lambda: pid_file.exists() and pid_file.read_text().strip(), 5)
    background = int(pid_file.read_text())
    background_pids.append(background)
    assert alive(background)
    held = descriptors(background)
    assert not [t for t in held if t.startswith("socket:")], held
    assert not [t for t in held if os.path.basename(t).startswith("prefork-")], held  # heartbeat
    assert server.stop() == 0
    assert alive(background)  # still running, and yet:
    assert port_is_free(server.port)


def listening_sockets_cloexec(pid):
    """For each listening-socket descriptor of ``pid``: whether it is close-on-exec."""
    result = {}
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
            with open(f"/proc/{pid}/fdinfo/{fd}") as f:
                flags = int(next(line for line in f if line.startswith("flags:")).split()[1], 8)
        except (OSError, StopIteration):
            continue
        if target.startswith("socket:") and int(fd) > 2:
            result[int(fd)] = bool(flags & 0o2000000)  # O_CLOEXEC
    return result


def test_listeners_are_close_on_exec_before_and_after_a_usr2_upgrade(test_app):
    server = test_app("basic:hello", workers=1)
    before = listening_sockets_cloexec(server.master_pid)
    assert before and all(before.values()), before
    server.send_signal(signal.SIGUSR2)  # the new master gets them across its execve...
    match = server.wait_for_log(r"Upgrade: this master \((\d+)\) replaces %d" % server.master_pid,
                                timeout=20)
    new_master = int(match.group(1))
    try:
        assert requests.get(server.url, timeout=5).text == "hello"
        after = listening_sockets_cloexec(new_master)  # ...and makes them close-on-exec again
        assert after and all(after.values()), after
        assert all(listening_sockets_cloexec(server.master_pid).values())
    finally:
        os.kill(new_master, signal.SIGTERM)
        assert wait_until(lambda: not alive(new_master), 10)
