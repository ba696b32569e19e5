"""Log files are opened safely: never through a symbolic link, never a hard
link to another file when root, chowned through the open descriptor, and
never inherited by programs the application or a hook runs (real servers,
real files, real signals; the attacks are made as the workers' user)."""

import os
import pwd
import signal
import stat
import subprocess
import sys

import pytest
from conftest import APPS, wait_until

root_only = pytest.mark.skipif(os.geteuid() != 0, reason="needs root (to drop privileges)")


def _nobody():
    try:
        entry = pwd.getpwnam("nobody")
        return entry.pw_uid, entry.pw_gid
    except KeyError:
        return 65534, 65534


def as_workers_user(script, cwd):
    """Run a shell script as the unprivileged user the workers run as."""
    uid, gid = _nobody()
    subprocess.run(["sh", "-c", script], cwd=cwd, user=uid, group=gid, extra_groups=[],
                   check=True, timeout=10)


def read(path):
    try:
        return path.read_text(errors="replace")
    except FileNotFoundError:
        return ""


def snapshot(path):
    st = path.stat()
    return path.read_bytes(), st.st_uid, st.st_gid, stat.S_IMODE(st.st_mode), st.st_mtime_ns


@pytest.fixture
def secret(tmp_path):
    """A file only root may write, outside the log directory."""
    path = tmp_path / "secret"
    path.write_text("root's own data\n")
    os.chmod(path, 0o600)
    return path


@root_only
def test_usr1_does_not_follow_a_symlink_planted_by_the_workers_user(test_app, shared_dir, secret):
    log = shared_dir / "error.log"
    rotated = shared_dir / "error.log.1"
    server = test_app("basic:hello", workers=2, user="nobody", errorlog=str(log))
    assert log.stat().st_uid == _nobody()[0]  # given to the workers' user at start
    before = snapshot(secret)
    as_workers_user(f"mv error.log error.log.1 && ln -s {secret} error.log", shared_dir)

    server.send_signal(signal.SIGUSR1)
    refusal = f"[{server.master_pid}] [ERROR] cannot reopen log file {log}: it is a symbolic link"
    assert wait_until(lambda: refusal in read(rotated), 10), read(rotated)
    assert snapshot(secret) == before
    assert log.is_symlink()
    # The master keeps logging to the file it had open.
    server.send_signal(signal.SIGTTIN)
    assert wait_until(lambda: "Handling signal: ttin" in read(rotated), 10)
    assert snapshot(secret) == before

    # Once the link is gone, USR1 creates a new file and gives it to the workers' user.
    as_workers_user("rm error.log", shared_dir)
    server.send_signal(signal.SIGUSR1)
    assert wait_until(lambda: log.exists() and not log.is_symlink(), 10)
    assert log.stat().st_uid == _nobody()[0]
    server.send_signal(signal.SIGTTOU)
    assert wait_until(lambda: "Handling signal: ttou" in read(log), 10)
    assert snapshot(secret) == before


@root_only
def test_usr1_refuses_a_hard_link_to_another_file(test_app, shared_dir, tmp_path):
    # protected_hardlinks usually stops the workers' user from making this link;
    # root makes it here, as on a system where that protection is off.
    other = shared_dir / "other"
    other.write_text("not a log\n")
    os.chmod(other, 0o600)
    log = shared_dir / "access.log"
    server = test_app("basic:hello", user="nobody", accesslog=str(log),
                      errorlog=str(tmp_path / "error.log"))
    before = snapshot(other)
    log.rename(shared_dir / "access.log.1")
    os.link(other, log)
    server.send_signal(signal.SIGUSR1)
    error_log = tmp_path / "error.log"
    assert wait_until(lambda: f"cannot reopen log file {log}: it has 2 hard links"
                      in read(error_log), 10), read(error_log)
    assert snapshot(other) == before


def test_a_symlinked_log_file_is_refused_at_start(tmp_path, secret):
    log = tmp_path / "error.log"
    log.symlink_to(secret)
    before = snapshot(secret)
    proc = subprocess.run([sys.executable, "-m", "prefork", "-b", "127.0.0.1:0",
                           "--error-logfile", str(log), "basic:hello"],
                          cwd=APPS, capture_output=True, text=True, timeout=30)
    assert proc.returncode == 1
    assert proc.stderr.strip() == (f"prefork: error: cannot open log file: {log}: it is a "
                                   "symbolic link, and log files are never opened through one")
    assert snapshot(secret) == before


@pytest.mark.parametrize("target", ["/dev/stdout", "/dev/stderr"])
def test_standard_streams_by_name(test_app, target):
    server = test_app("basic:hello", errorlog=target)  # the test server's output is its log
    server.send_signal(signal.SIGUSR1)
    server.wait_for_log("Handling signal: usr1")
    server.send_signal(signal.SIGTTIN)
    server.wait_for_log("Handling signal: ttin")
    assert "cannot" not in server.log_text()


def test_a_device_is_written_and_not_reopened(test_app, tmp_path):
    error_log = tmp_path / "error.log"
    server = test_app("basic:hello", errorlog=str(error_log), accesslog="/dev/null")
    server.send_signal(signal.SIGUSR1)
    server.send_signal(signal.SIGTTIN)
    assert wait_until(lambda: "Handling signal: ttin" in read(error_log), 10)
    assert "cannot" not in read(error_log)


FD_LISTER = """
import os


def listing(out):
    # What a program started by the application (or a hook) inherits.
    os.system(f"ls -l /proc/self/fd/ > {out}")


def when_ready(server):
    listing(os.environ["FDS_OF_MASTER_CHILD"])


def app(environ, start_response):
    listing(os.environ["FDS_OF_WORKER_CHILD"])
    start_response("200 OK", [("Content-Length", "2")])
    return [b"ok"]
"""


def test_programs_started_by_the_server_inherit_no_log_or_heartbeat_file(prefork_server, tmp_path):
    import requests

    (tmp_path / "fdapp.py").write_text(FD_LISTER)
    slots = tmp_path / "slots"
    slots.mkdir()
    master_out, worker_out = tmp_path / "master.txt", tmp_path / "worker.txt"
    env = {**os.environ, "FDS_OF_MASTER_CHILD": str(master_out),
           "FDS_OF_WORKER_CHILD": str(worker_out)}
    server = prefork_server("fdapp:app", 1, cwd=str(tmp_path), env=env, args=["-c", "fdapp.py"],
                            errorlog=str(tmp_path / "error.log"),
                            accesslog=str(tmp_path / "access.log"), worker_tmp_dir=str(slots))
    assert requests.get(server.url, timeout=10).text == "ok"
    for out in (master_out, worker_out):
        assert wait_until(lambda out=out: read(out).strip(), 10)
        listing = read(out)
        assert " 1 -> " in listing  # ls ran and listed its descriptors
        for name in ("error.log", "access.log", f"{slots}/prefork-"):
            assert name not in listing, listing
