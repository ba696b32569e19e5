"""systemd integration: sd_notify, watchdog, socket activation, PID 1 duties."""

import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time

import pytest
import requests

from prefork.systemd import Notifier


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def collect(server, seconds):
    """Every notify message the server sends during ``seconds``."""
    messages = []
    deadline = time.monotonic() + seconds
    server._notify.settimeout(0.05)
    while time.monotonic() < deadline:
        try:
            messages.append(server._notify.recv(65536).decode())
        except TimeoutError:
            pass
    return messages


def test_notify_abstract_socket():
    name = f"@prefork-test-{os.getpid()}"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind("\0" + name[1:])
        sock.settimeout(5)
        notifier = Notifier({"NOTIFY_SOCKET": name})
        assert notifier.notify("READY=1", "STATUS=ok")
        assert sock.recv(100) == b"READY=1\nSTATUS=ok"
        notifier.close()


def test_notify_never_blocks_when_the_supervisor_does_not_read(tmp_path):
    """A full notify queue drops messages; it must never hang the master's loop."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind(str(tmp_path / "notify"))
        notifier = Notifier({"NOTIFY_SOCKET": str(tmp_path / "notify")})
        results = []
        sender = threading.Thread(
            target=lambda: results.extend(notifier.notify("WATCHDOG=1") for _ in range(5000)), daemon=True)
        sender.start()
        sender.join(5)
        assert not sender.is_alive(), "notify() blocked"
        assert results[0] and not results[-1]
        notifier.close()


def test_notify_without_socket_is_silent():
    assert Notifier({}).notify("READY=1") is False


def test_ready_reloading_stopping_and_status(test_app):
    server = test_app("basic:hello", workers=2)
    ready = server.messages[-1].split("\n")
    assert "READY=1" in ready
    assert any(line.startswith("STATUS=2 workers") for line in ready)
    assert f"MAINPID={server.master_pid}" in ready
    for _ in range(3):
        requests.get(server.url)
    server.send_signal(signal.SIGHUP)
    reloading = server.wait_notify("RELOADING=1", 10).split("\n")
    usec = int(next(line for line in reloading if line.startswith("MONOTONIC_USEC="))[15:])
    assert abs(usec - time.monotonic_ns() // 1000) < 10_000_000  # CLOCK_MONOTONIC, microseconds
    done = server.wait_notify("READY=1", 20).split("\n")
    assert any("requests served" in line for line in done)
    server.send_signal(signal.SIGTERM)
    server.wait_notify("STOPPING=1", 10)
    assert server.proc.wait(10) == 0


def test_watchdog_pings_follow_the_main_loop(test_app):
    env = dict(os.environ, WATCHDOG_USEC="200000")
    server = test_app("basic:hello", env=env)

    def pings(seconds):
        return [m for m in collect(server, seconds) if "WATCHDOG=1" in m.split("\n")]

    # one every 0.1 s; a busy machine may delay some, never add any
    assert 4 <= len(pings(1.0)) <= 12
    os.kill(server.master_pid, signal.SIGSTOP)  # a hung master must stop pinging
    try:
        stalled = pings(0.6)
    finally:
        os.kill(server.master_pid, signal.SIGCONT)
    assert len(stalled) <= 1  # at most one sent just before the stop
    assert len(pings(1.5)) >= 3


def test_watchdog_for_another_pid_is_ignored(test_app):
    env = dict(os.environ, WATCHDOG_USEC="200000", WATCHDOG_PID="1")
    server = test_app("basic:hello", env=env)
    assert not [m for m in collect(server, 0.7) if "WATCHDOG=1" in m.split("\n")]


@pytest.mark.skipif(not shutil.which("systemd-socket-activate"), reason="needs systemd-socket-activate")
def test_socket_activation(test_app, tmp_path):
    port = free_port()
    server = test_app(
        "basic:pid", workers=2, bind=f"127.0.0.1:{port}", wait_ready=False,
        wrapper=["systemd-socket-activate", "-E", "NOTIFY_SOCKET", "-l", f"127.0.0.1:{port}"],
    )
    # systemd-socket-activate execs prefork on the first connection, which is then served
    first = _first_request(server.url)
    assert first.status_code == 200
    server.wait_notify("READY=1", 20)
    log = server.log_text()
    assert f"Listening at: http://127.0.0.1:{port} ({server.master_pid}, socket activation)" in log
    assert "--bind is ignored" in log
    before = set(server.worker_pids())
    server.send_signal(signal.SIGHUP)
    server.wait_notify("READY=1", 20)
    server.wait_workers(2, exclude=before)
    assert requests.get(server.url, timeout=5).status_code == 200  # the same socket survives
    assert server.stop() == 0


@pytest.mark.skipif(not shutil.which("systemd-socket-activate"), reason="needs systemd-socket-activate")
def test_socket_activated_unix_socket_is_not_unlinked(test_app, tmp_path):
    path = tmp_path / "act.sock"
    server = test_app(
        "basic:hello", bind=f"unix:{path}", wait_ready=False,
        wrapper=["systemd-socket-activate", "-E", "NOTIFY_SOCKET", "-l", str(path)],
    )
    deadline = time.monotonic() + 10
    while True:
        s = socket.socket(socket.AF_UNIX)
        try:
            s.connect(str(path))
            break
        except (FileNotFoundError, ConnectionRefusedError):  # not listening yet
            s.close()
            assert time.monotonic() < deadline
            time.sleep(0.01)
    with s:
        s.settimeout(20)
        s.sendall(b"GET / HTTP/1.0\r\n\r\n")
        assert s.recv(100).startswith(b"HTTP/1.1 200")
    server.wait_notify("READY=1", 20)
    assert server.stop() == 0
    assert path.exists()  # systemd owns it


def _first_request(url):
    deadline = time.monotonic() + 10
    while True:
        try:
            return requests.get(url, timeout=20)
        except requests.ConnectionError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.01)  # systemd-socket-activate is still starting


ORPHAN_APP = '''
import os, subprocess, time

def app(environ, start_response):
    # a grandchild that outlives its parent: it is re-parented to PID 1
    subprocess.Popen(["sh", "-c", "(sleep 0.3; exit 5) & exit 0"]).wait()
    start_response("200 OK", [])
    return [b"spawned"]
'''


@pytest.mark.skipif(os.geteuid() != 0 or not shutil.which("unshare"), reason="needs root and unshare")
def test_pid1_reaps_unrelated_children_silently(tmp_path):
    (tmp_path / "orphans.py").write_text(ORPHAN_APP)
    port = free_port()
    log = open(tmp_path / "log", "wb")
    proc = subprocess.Popen(
        ["unshare", "--pid", "--fork", "--mount-proc", sys.executable, "-m", "prefork",
         "-b", f"127.0.0.1:{port}", "orphans:app"],
        cwd=tmp_path, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                assert requests.get(f"http://127.0.0.1:{port}/", timeout=5).text == "spawned"
                break
            except requests.ConnectionError:
                assert time.monotonic() < deadline, (tmp_path / "log").read_text()
                time.sleep(0.05)
        # the orphaned `sleep` exits after 0.3 s; PID 1 (the master) must reap it
        deadline = time.monotonic() + 5
        while _zombies_in_namespace(proc.pid) or _sleepers_in_namespace(proc.pid):
            assert time.monotonic() < deadline, "orphan not reaped"
            time.sleep(0.05)
        assert requests.get(f"http://127.0.0.1:{port}/", timeout=5).ok
        text = (tmp_path / "log").read_text()
        assert "died" not in text and "Worker" not in text.split("Ready")[1]
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(5)
        log.close()


def _namespace_processes(unshare_pid):
    """(pid, state, name) of every process under the unshare'd PID 1."""
    result = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/status") as f:
                status = dict(line.split(":\t", 1) for line in f.read().splitlines() if ":\t" in line)
        except OSError:
            continue
        if unshare_pid in _ancestors(int(entry)):
            result.append((int(entry), status.get("State", ""), status.get("Name", "")))
    return result


def _ancestors(pid):
    seen = []
    while pid > 1 and len(seen) < 50:
        try:
            with open(f"/proc/{pid}/stat") as f:
                pid = int(f.read().rsplit(")", 1)[1].split()[1])
        except OSError:
            break
        seen.append(pid)
    return seen


def _zombies_in_namespace(unshare_pid):
    return [p for p in _namespace_processes(unshare_pid) if p[1].startswith("Z")]


def _sleepers_in_namespace(unshare_pid):
    return [p for p in _namespace_processes(unshare_pid) if p[2] in ("sleep", "sh")]


def test_watchdog_follows_a_usr2_upgrade(test_app):
    """systemd names the watched pid in WATCHDOG_PID; after a USR2 upgrade the new
    master must keep pinging, or systemd kills the service once the old one exits."""
    env = dict(os.environ, WATCHDOG_USEC="200000")
    server = test_app("basic:hello", env=env, upgrade_auto=True,
                      wrapper=["sh", "-c", 'WATCHDOG_PID=$$ exec "$@"', "sh"])
    assert [m for m in collect(server, 0.5) if "WATCHDOG=1" in m.split("\n")]
    server.send_signal(signal.SIGUSR2)
    match = server.wait_for_log(r"Upgrade: this master \((\d+)\) replaces", timeout=20)
    new_master = int(match.group(1))
    try:
        assert server.proc.wait(20) == 0  # the old master is gone
        _drain(server)  # what it sent while alive
        pings = [m for m in collect(server, 1.0) if "WATCHDOG=1" in m.split("\n")]
        assert len(pings) >= 5
    finally:
        os.kill(new_master, signal.SIGTERM)
        deadline = time.monotonic() + 10
        while _alive(new_master):
            assert time.monotonic() < deadline
            time.sleep(0.02)


def _drain(server):
    server._notify.setblocking(False)
    try:
        while server._notify.recv(65536):
            pass
    except BlockingIOError:
        pass
    finally:
        server._notify.setblocking(True)


def _alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    with open(f"/proc/{pid}/stat") as f:
        return f.read().rsplit(")", 1)[1].split()[0] != "Z"
