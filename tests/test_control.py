"""The control socket (--control-socket) and preforkctl, against real servers."""

import json
import os
import pathlib
import pwd
import shutil
import signal
import socket
import stat
import subprocess
import sys
import tempfile
import threading

import pytest
import requests
from conftest import APPS, a_worker_sleeps, alive, wait_until
from observing import scrape

from prefork.testing import serve

APP = "observed:app"


def ctl(path, *args, stdin=None):
    """Run preforkctl; (exit status, stdout, stderr)."""
    proc = subprocess.run([sys.executable, "-m", "prefork.ctl", "-s", str(path), *args],
                          input=stdin, capture_output=True, text=True, timeout=30)
    return proc.returncode, proc.stdout, proc.stderr


def ctl_json(path, command):
    status, out, err = ctl(path, "-c", command, "-j")
    assert status == 0, err
    return json.loads(out)


@pytest.fixture
def controlled(test_app, tmp_path):
    def start(workers=1, directory=tmp_path, **settings):
        path = directory / "ctl.sock"
        server = test_app(APP, workers, control_socket=str(path), **settings)
        return server, path

    return start


@pytest.fixture
def open_dir():
    """A directory every user may enter (pytest's own are 0700)."""
    path = tempfile.mkdtemp(prefix="prefork-ctl-", dir="/tmp")
    os.chmod(path, 0o755)
    yield pathlib.Path(path)
    shutil.rmtree(path, ignore_errors=True)


def test_socket_mode_is_0600_and_the_socket_goes_with_the_server(tmp_path):
    path = tmp_path / "ctl.sock"
    with serve(APP, 1, cwd=APPS, control_socket=str(path)) as server:
        mode = os.lstat(path).st_mode
        assert stat.S_ISSOCK(mode) and stat.S_IMODE(mode) == 0o600
        assert f"Control socket at {path}" in server.log_text()
        assert server.stop() == 0
    assert not path.exists()


def test_socket_mode_setting(controlled):
    server, path = controlled(control_socket_mode="660")
    assert stat.S_IMODE(os.lstat(path).st_mode) == 0o660


def _connect_as(uid, path):
    """In a child running as ``uid``: connect and send a command; what happened."""
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:
        try:
            os.close(read)
            os.setgroups([])
            os.setgid(uid)
            os.setuid(uid)
            try:
                sock = socket.socket(socket.AF_UNIX)
                sock.settimeout(5)
                sock.connect(str(path))
                sock.sendall(b"show stats\n")
                result = b""
                while chunk := sock.recv(65536):
                    result += chunk
            except OSError as exc:
                result = f"error {exc.errno}".encode()
            os.write(write, result)
        finally:
            os._exit(0)
    os.close(write)
    try:
        data = b""
        while chunk := os.read(read, 65536):
            data += chunk
    finally:
        os.close(read)
        os.waitpid(pid, 0)
    return data.decode()


@pytest.mark.skipif(os.geteuid() != 0, reason="dropping privileges in a child needs root")
def test_another_uid_is_refused(controlled, open_dir):
    nobody = pwd.getpwnam("nobody").pw_uid
    # A socket any user may connect to: the master's uid check refuses the client.
    server, path = controlled(directory=open_dir, control_socket_mode="666")
    reply = json.loads(_connect_as(nobody, path))
    assert reply == {"ok": False, "error": "permission denied: only the server's user "
                                           "or root may use the control socket"}
    server.wait_for_log(rf"Control socket: refused a client running as uid {nobody}")
    assert ctl_json(path, "show stats")["phase"] == "running"  # root still may


@pytest.mark.skipif(os.geteuid() != 0, reason="dropping privileges in a child needs root")
def test_the_default_mode_keeps_other_users_from_connecting(controlled, open_dir):
    nobody = pwd.getpwnam("nobody").pw_uid
    server, path = controlled(directory=open_dir)  # the directory does not stop them: the mode does
    assert _connect_as(nobody, path) == "error 13"  # EACCES


def test_show_workers_with_a_request_in_progress(controlled):
    server, path = controlled(workers=2)
    thread = threading.Thread(target=requests.get, args=(f"{server.url}/busy/path?sleep=2",))
    thread.start()
    try:
        assert wait_until(lambda: a_worker_sleeps(server), 5)
        data = ctl_json(path, "show workers")
        assert data["wanted"] == 2
        assert sorted(w["pid"] for w in data["workers"]) == server.worker_pids()
        busy = [w for w in data["workers"] if w["state"] == "busy"]
        assert len(busy) == 1
        (request,) = busy[0]["in_progress"]
        assert (request["method"], request["path"], request["thread"]) == ("GET", "/busy/path", 0)
        assert 0 <= request["age"] < 5
        assert all(w["rss"] > 1 << 20 and w["age"] >= 0 for w in data["workers"])
        status, text, _ = ctl(path, "-c", "show workers")
        assert status == 0
        assert text.splitlines()[0].split() == ["PID", "STATE", "AGE", "REQUESTS", "RSS", "PSS", "GEN"]
        assert f"{busy[0]['pid']} thread 0: GET /busy/path" in text
    finally:
        thread.join(10)


def test_show_stats_and_listeners(controlled):
    server, path = controlled()
    session = requests.Session()
    for status in (200, 200, 404):
        assert session.get(f"{server.url}/?status={status}").status_code == status
    session.close()
    stats = ctl_json(path, "show stats")
    assert stats["requests"] == 3
    assert stats["requests_by_code"] == {"200": 2, "404": 1}
    assert stats["workers"] == {"booting": 0, "idle": 1, "busy": 0, "total": 1, "wanted": 1}
    assert stats["restarts"]["crash"] == 0 and stats["request_timeouts"] == 0
    assert stats["phase"] == "running" and stats["generation"] == 1
    listeners = ctl_json(path, "show listeners")["listeners"]
    assert listeners == [{"listener": server.url, "pid": None, "queue": 0, "max": 2048}]
    status, text, _ = ctl(path, "-c", "show listeners")
    assert status == 0 and server.url in text and "2048" in text


def test_show_config_gives_each_source(controlled):
    server, path = controlled(timeout=17)
    rows = {row["name"]: row for row in ctl_json(path, "show config")["settings"]}
    assert rows["timeout"] == {"name": "timeout", "value": 17.0, "source": "command line"}
    assert rows["keepalive"]["source"] == "default"
    status, text, _ = ctl(path, "-c", "show config")
    assert status == 0 and any(line.split()[:3] == ["timeout", "17.0", "command"]
                               for line in text.splitlines())


def test_worker_add_remove_and_kill(controlled):
    server, path = controlled(workers=1)
    assert ctl_json(path, "worker add 2") == {"added": 2, "previous": 1, "total": 3}
    server.wait_workers(3)
    assert ctl_json(path, "worker remove") == {"removed": 1, "previous": 3, "total": 2}
    server.wait_workers(2)
    victim = server.worker_pids()[0]
    assert ctl_json(path, f"worker kill {victim}") == {"killed": victim}
    server.wait_workers(2, exclude=[victim])
    server.wait_for_log(rf"Worker {victim} exited \(exit code 0\); reason: signal")
    status, _, err = ctl(path, "-c", "worker kill 1")
    assert status == 1 and err == "preforkctl: no worker with pid 1\n"


def test_reload_reopen_and_shutdown(controlled):
    server, path = controlled(workers=1)
    before = server.worker_pids()
    assert ctl_json(path, "reload") == {"reloading": True}
    server.wait_for_log(r"Reload complete")
    server.wait_workers(1, exclude=before)
    assert ctl_json(path, "reopen") == {"reopened": True}
    server.wait_for_log(r"Control socket: reopen")
    status, out, _ = ctl(path, "-c", "shutdown graceful")
    assert status == 0 and "stopping: graceful" in out
    assert server.proc.wait(20) == 0
    assert not path.exists()


def test_quick_shutdown(controlled):
    server, path = controlled(workers=1)
    assert ctl_json(path, "shutdown quick") == {"stopping": "quick"}
    assert server.proc.wait(20) == 0


def test_unknown_command_and_unreachable_socket_fail_in_one_line(controlled, tmp_path):
    server, path = controlled()
    status, out, err = ctl(path, "-c", "make coffee")
    assert (status, out) == (1, "")
    assert err == "preforkctl: unknown command 'make coffee' (try: help)\n"
    status, out, err = ctl(path, "-c", "worker add many")
    assert status == 1 and err == "preforkctl: expected a positive number of workers\n"
    status, _, err = ctl(tmp_path / "nothing.sock", "-c", "show stats")
    assert status == 1 and err.startswith("preforkctl: cannot connect to ") and err.count("\n") == 1
    proc = subprocess.run([sys.executable, "-m", "prefork.ctl", "-c", "show stats"],
                          capture_output=True, text=True, timeout=30,
                          env={k: v for k, v in os.environ.items() if k != "PREFORK_CONTROL_SOCKET"})
    assert proc.returncode == 2 and "no control socket" in proc.stderr


def test_interactive_mode_reads_commands_from_stdin(controlled):
    server, path = controlled()
    status, out, err = ctl(path, stdin="help\nshow stats\nbogus\nquit\nshow stats\n")
    lines = out.splitlines()
    assert any(line.startswith("show workers ") for line in lines)
    assert lines.count("requests: 0") == 1  # one show stats: nothing runs after quit
    assert err == "preforkctl: unknown command 'bogus' (try: help)\n"
    assert status == 1  # the last command before quit failed


def test_a_file_that_is_not_a_socket_is_never_replaced(tmp_path):
    path = tmp_path / "ctl.sock"
    path.write_text("precious")
    with serve(APP, 1, cwd=APPS, wait_ready=False, control_socket=str(path)) as server:
        assert server.proc.wait(20) == 1
        assert f"--control-socket: cannot create {path}: a file that is not a socket is there" \
            in server.log_text()
    assert path.read_text() == "precious"
    link = tmp_path / "link.sock"
    link.symlink_to(tmp_path / "target")
    with serve(APP, 1, cwd=APPS, wait_ready=False, control_socket=str(link)) as server:
        assert server.proc.wait(20) == 1
    assert link.is_symlink() and not (tmp_path / "target").exists()


def test_a_stale_socket_is_replaced_and_a_live_one_is_not(tmp_path):
    path = tmp_path / "ctl.sock"
    stale = socket.socket(socket.AF_UNIX)
    stale.bind(str(path))
    stale.close()  # left behind: nobody listens
    with serve(APP, 1, cwd=APPS, control_socket=str(path)) as server:
        assert ctl_json(path, "show stats")["phase"] == "running"
        with serve(APP, 1, cwd=APPS, wait_ready=False, control_socket=str(path)) as second:
            assert second.proc.wait(20) == 1
            assert "another server is listening there" in second.log_text()
        assert ctl_json(path, "show stats")["phase"] == "running"  # still the first's
        server.send_signal(signal.SIGTERM)
        assert server.proc.wait(20) == 0


def test_a_usr2_upgrade_hands_the_endpoints_to_the_new_master(test_app, tmp_path):
    probe = socket.socket()
    probe.bind(("127.0.0.1", 0))
    metrics = probe.getsockname()[1]
    probe.close()
    path = tmp_path / "ctl.sock"
    server = test_app(APP, 1, control_socket=str(path), metrics_bind=f"127.0.0.1:{metrics}",
                      upgrade_auto=True)
    assert ctl_json(path, "show stats")["master"] == server.master_pid
    assert requests.get(server.url).ok
    server.send_signal(signal.SIGUSR2)
    match = server.wait_for_log(r"Upgrade: this master \((\d+)\) replaces", timeout=20)
    new_master = int(match.group(1))
    try:
        assert server.proc.wait(20) == 0  # --upgrade-auto stopped the old master
        assert wait_until(lambda: path.exists() and _master_of(path) == new_master, 10)
        assert "in use by the master this one replaces" in server.log_text()
        assert wait_until(lambda: _scrapes(metrics), 10)
        assert scrape(metrics).value("prefork_workers", state="idle") == 1
    finally:
        os.kill(new_master, signal.SIGTERM)
        assert wait_until(lambda: not alive(new_master), 10)
    assert not path.exists()


def _master_of(path):
    try:
        return ctl_json(path, "show stats")["master"]
    except AssertionError:
        return None


def _scrapes(port):
    try:
        return requests.get(f"http://127.0.0.1:{port}/metrics", timeout=2).ok
    except requests.exceptions.ConnectionError:
        return False


def test_no_control_socket_wins_over_a_path(controlled):
    server, path = controlled(control_socket_disable=True)
    assert not path.exists() and "Control socket" not in server.log_text()
