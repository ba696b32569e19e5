"""Process supervision: signals, reloads, upgrades, recycling, stops (real processes)."""

import os
import signal
import socket
import threading
import time

import pytest
import requests
from conftest import APPS, alive, raw_request, wait_until

from prefork.testing import child_pids


class ClientLoop:
    """Sends requests one after another until stopped; counts what failed."""

    def __init__(self, url):
        self.url = url
        self.ok = 0
        self.failures = []
        self.bodies = set()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self):
        while not self._stop.is_set():
            try:
                response = requests.get(self.url, timeout=10)
                if response.status_code == 200:
                    self.ok += 1
                    self.bodies.add(response.text)
                else:
                    self.failures.append(response.status_code)
            except requests.RequestException as exc:
                self.failures.append(repr(exc))

    def __enter__(self):
        self._thread.start()
        assert wait_until(lambda: self.ok > 0, 5), self.failures
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join(15)


def write_app(path, body):
    path.write_text(
        "def app(environ, start_response):\n"
        "    start_response('200 OK', [('Content-Type', 'text/plain')])\n"
        f"    return [{body!r}]\n"
    )
    # make sure a new import sees the change even within the same second
    stamp = time.time() + 2
    os.utime(path, (stamp, stamp))


def test_hup_reloads_without_failed_requests(test_app):
    server = test_app("basic:pid", workers=3)
    before = set(server.worker_pids())
    with ClientLoop(server.url) as loop:
        server.send_signal(signal.SIGHUP)
        server.wait_notify("READY=1", timeout=20)
        served_before = loop.ok
        assert wait_until(lambda: loop.ok > served_before + 10, 10)
    assert loop.failures == []
    after = server.wait_workers(3, exclude=before)
    assert not set(after) & before
    assert "RELOADING=1" in "\n".join(server.messages)
    server.wait_for_log(r"Reload complete: 3 worker\(s\) of generation 2")


def test_hup_loads_changed_code(prefork_server, tmp_path):
    app_file = tmp_path / "reloadable.py"
    write_app(app_file, b"version one")
    server = prefork_server("reloadable:app", workers=2, cwd=tmp_path)
    assert requests.get(server.url).text == "version one"
    write_app(app_file, b"version two")
    server.send_signal(signal.SIGHUP)
    server.wait_notify("READY=1", timeout=20)
    assert {requests.get(server.url).text for _ in range(6)} == {"version two"}


def test_hup_with_broken_code_keeps_old_workers(prefork_server, tmp_path):
    app_file = tmp_path / "reloadable.py"
    write_app(app_file, b"still working")
    server = prefork_server("reloadable:app", workers=2, cwd=tmp_path)
    workers = set(server.worker_pids())
    app_file.write_text("import no_such_dependency_anywhere\n")
    stamp = time.time() + 4
    os.utime(app_file, (stamp, stamp))
    with ClientLoop(server.url) as loop:
        server.send_signal(signal.SIGHUP)
        server.wait_for_log(r"Reload failed, keeping the workers of the previous generation")
        served = loop.ok
        assert wait_until(lambda: loop.ok > served + 5, 5)
    assert loop.failures == []
    assert loop.bodies == {"still working"}
    assert "no_such_dependency_anywhere" in server.log_text()
    assert set(server.worker_pids()) == workers
    assert alive(server.master_pid)


def test_ttin_ttou_change_the_worker_count(test_app):
    server = test_app("basic:pid", workers=2)
    server.send_signal(signal.SIGTTIN)
    server.wait_workers(3)
    # signals of one kind do not queue: wait for each to be handled
    server.send_signal(signal.SIGTTOU)
    server.wait_for_log(r"Number of workers: 2 \(was 3\)")
    server.send_signal(signal.SIGTTOU)
    server.wait_for_log(r"Number of workers: 1 \(was 2\)")
    server.wait_workers(1)
    server.send_signal(signal.SIGTTOU)  # never below one
    server.wait_for_log(r"(?s)(Handling signal: ttou.*){3}")
    assert len(server.wait_workers(1)) == 1
    assert requests.get(server.url).ok


def test_winch_stops_workers_and_keeps_master(test_app):
    server = test_app("basic:pid", workers=2)
    server.send_signal(signal.SIGWINCH)
    server.wait_workers(0)
    assert alive(server.master_pid)
    server.send_signal(signal.SIGHUP)
    server.wait_workers(2)
    assert wait_until(lambda: requests.get(server.url).ok, 5)


def test_usr1_reopens_access_log(test_app, tmp_path):
    log = tmp_path / "access.log"
    server = test_app("basic:hello", workers=2, accesslog=str(log))
    requests.get(server.url + "/first")
    assert wait_until(lambda: "/first" in log.read_text(), 5)
    log.rename(tmp_path / "access.log.1")
    server.send_signal(signal.SIGUSR1)
    server.wait_for_log(r"Handling signal: usr1")
    assert wait_until(lambda: log.exists(), 5)
    for _ in range(4):  # every worker must have reopened
        requests.get(server.url + "/second")
    assert wait_until(lambda: log.read_text().count("/second") == 4, 5)
    assert "/second" not in (tmp_path / "access.log.1").read_text()


def test_max_requests_recycles_workers(test_app):
    server = test_app("basic:pid", workers=1, max_requests=5, max_requests_jitter=3)
    first = server.worker_pids()[0]
    served_by_first = 0
    for _ in range(200):
        pid = int(requests.get(server.url).text)
        if pid != first:
            break
        served_by_first += 1
    else:
        pytest.fail("the worker was never replaced")
    assert served_by_first >= 5
    match = server.wait_for_log(r"Worker %d reached its request limit \((\d+) of --max-requests 5" % first)
    assert 5 <= int(match.group(1)) <= 8
    assert wait_until(lambda: not alive(first), 5)


def test_timeout_logs_the_stuck_line_of_code(test_app):
    server = test_app("basic:sleepy", workers=1, timeout=2)
    with pytest.raises(requests.ConnectionError):
        requests.get(server.url + "/slow?30", timeout=15)
    log = server.wait_for_log(r"WORKER TIMEOUT \(pid:\d+\) serving 'GET /slow\?30 HTTP/1.1' for [\d.]+ s; stack")
    text = server.log_text()[log.start():]
    assert 'basic.py", line' in text and "time.sleep(seconds)" in text
    server.wait_for_log(r"running for [\d.]+ s; sending SIGABRT")


def test_sigterm_serves_connections_waiting_in_the_backlog(test_app):
    server = test_app("basic:sleepy", workers=1, graceful_timeout=20)
    slow = socket.create_connection(("127.0.0.1", server.port))
    slow.sendall(b"GET /?1 HTTP/1.1\r\nHost: x\r\n\r\n")
    waiting = []
    for _ in range(20):
        sock = socket.create_connection(("127.0.0.1", server.port))
        sock.sendall(b"GET /?0 HTTP/1.1\r\nHost: x\r\n\r\n")
        waiting.append(sock)
    server.send_signal(signal.SIGTERM)
    replies = []
    for sock in [slow, *waiting]:
        sock.settimeout(20)
        data = b""
        while chunk := sock.recv(4096):
            data += chunk
        replies.append(data)
        sock.close()
    assert all(r.startswith(b"HTTP/1.1 200 OK") for r in replies), replies
    assert server.proc.wait(20) == 0


def test_shutdown_delay_keeps_serving(test_app):
    server = test_app("basic:hello", workers=1, shutdown_delay=1.5)
    server.send_signal(signal.SIGTERM)
    started = time.monotonic()
    server.wait_for_log(r"Shutdown delay")
    assert requests.get(server.url).text == "hello"
    assert server.proc.wait(10) == 0
    assert time.monotonic() - started >= 1.4


def test_slow_boot_within_boot_timeout(test_app):
    env = dict(os.environ, PREFORK_TEST_BOOT_SECONDS="2.5")
    server = test_app("slowboot:app", workers=1, timeout=1, boot_timeout=20, env=env)
    assert requests.get(server.url).text == "booted"
    assert "WORKER TIMEOUT" not in server.log_text()


def test_boot_timeout_kills_a_hung_import(test_app):
    env = dict(os.environ, PREFORK_TEST_BOOT_SECONDS="60")
    server = test_app("slowboot:app", workers=1, boot_timeout=1, env=env, wait_ready=False)
    server.wait_for_log(r"WORKER TIMEOUT \(pid:\d+\) .*while loading the application", timeout=10)


def test_crash_loop_backs_off(tmp_path, prefork_server):
    (tmp_path / "crashy.py").write_text(
        "import os\n"
        "def app(environ, start_response):\n"
        "    os._exit(3 if environ['PATH_INFO'] == '/boot' else 9)\n"
    )
    server = prefork_server("crashy:app", workers=1, cwd=tmp_path)
    for _ in range(4):
        try:
            requests.get(server.url + "/crash", timeout=5)
        except requests.ConnectionError:
            pass
        server.wait_workers(1, timeout=10)
    server.wait_for_log(r"Workers keep dying right after they start \(\d+ in a row\); waiting")
    assert alive(server.master_pid)


def test_sigkill_of_master_leaves_no_worker(test_app):
    server = test_app("basic:hello", workers=3)
    workers = server.worker_pids()
    os.kill(server.master_pid, signal.SIGKILL)
    server.proc.wait(5)
    assert wait_until(lambda: not any(alive(p) for p in workers), 1.0)


def test_master_has_one_thread(test_app):
    server = test_app("basic:hello", workers=2)
    requests.get(server.url)
    with open(f"/proc/{server.master_pid}/status") as f:
        assert "Threads:\t1\n" in f.read()


def test_preload_imports_in_master(test_app):
    server = test_app("preloaded:app", workers=2, preload_app=True, raw_env=["GREETING=hi"])
    imported_by, worker, greeting = requests.get(server.url).text.split()
    assert int(imported_by) == server.master_pid
    assert int(worker) in server.worker_pids()
    assert greeting == "hi"


def test_env_setting(test_app):
    server = test_app("preloaded:app", raw_env=["GREETING=hello-env"])
    assert requests.get(server.url).text.endswith("hello-env")


def test_pidfile_written_and_removed(test_app, tmp_path):
    pidfile = tmp_path / "prefork.pid"
    pidfile.write_text("999999\n")  # stale: no such process
    server = test_app("basic:hello", pidfile=str(pidfile))
    assert pidfile.read_text().strip() == str(server.master_pid)
    assert server.stop() == 0
    assert not pidfile.exists()


def test_pidfile_of_running_master_is_refused(test_app, tmp_path):
    pidfile = tmp_path / "prefork.pid"
    first = test_app("basic:hello", pidfile=str(pidfile))
    from test_server import run_prefork

    code, out = run_prefork(["-b", "127.0.0.1:0", "--pid", str(pidfile), "basic:hello"], cwd=APPS)
    assert code == 1
    assert f"names a running prefork master ({first.master_pid})" in out
    assert pidfile.read_text().strip() == str(first.master_pid)


def test_umask_applies_to_unix_socket(test_app, tmp_path):
    path = tmp_path / "app.sock"
    test_app("basic:hello", bind=f"unix:{path}", umask="077")
    assert wait_until(path.exists, 5)
    assert path.stat().st_mode & 0o777 == 0o700


@pytest.mark.skipif(os.geteuid() != 0, reason="dropping privileges needs root")
def test_workers_run_as_user(test_app):
    import pwd

    nobody = pwd.getpwnam("nobody")
    server = test_app("basic:hello", workers=2, user="nobody")
    for pid in server.worker_pids():
        with open(f"/proc/{pid}/status") as f:
            uid_line = next(line for line in f if line.startswith("Uid:"))
        assert uid_line.split()[1:] == [str(nobody.pw_uid)] * 4
    assert os.stat(f"/proc/{server.master_pid}").st_uid == 0
    assert requests.get(server.url).text == "hello"


@pytest.mark.skipif(os.geteuid() != 0, reason="changing groups needs root")
def test_workers_run_with_group(test_app):
    import grp

    nogroup = grp.getgrnam("nogroup")
    server = test_app("basic:hello", workers=1, group="nogroup")
    with open(f"/proc/{server.worker_pids()[0]}/status") as f:
        gid_line = next(line for line in f if line.startswith("Gid:"))
    assert gid_line.split()[1:] == [str(nogroup.gr_gid)] * 4
    assert requests.get(server.url).text == "hello"


def test_proc_name_flag(test_app):
    server = test_app("basic:hello", args=["--proc-name", "billing"])
    with open(f"/proc/{server.master_pid}/cmdline", "rb") as f:
        assert f.read().rstrip(b"\0") == b"prefork: master [billing]"


def test_daemon_detaches(tmp_path):
    import subprocess
    import sys

    pidfile = tmp_path / "d.pid"
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.run(
        [sys.executable, "-m", "prefork", "--daemon", "--pid", str(pidfile), "-b", f"127.0.0.1:{port}",
         "--error-logfile", str(tmp_path / "error.log"), "basic:hello"],
        cwd=APPS, timeout=20, capture_output=True,
    )
    assert proc.returncode == 0  # the launcher returned once the server was ready
    pid = int(pidfile.read_text())
    workers = []
    try:
        assert raw_request(port, b"GET / HTTP/1.0\r\n\r\n").endswith(b"hello")
        assert os.getsid(pid) != os.getsid(0)  # detached into a session of its own
        with open(f"/proc/{pid}/stat") as f:
            assert int(f.read().rsplit(") ", 1)[1].split()[1]) != os.getpid()  # not our child
        workers = child_pids(pid)
        assert len(workers) == 1
    finally:
        os.kill(pid, signal.SIGTERM)
        if not wait_until(lambda: not alive(pid), 10):
            os.kill(pid, signal.SIGKILL)
    assert wait_until(lambda: not alive(pid), 10)
    assert not any(alive(w) for w in workers)
    assert "Shutting down: master" in (tmp_path / "error.log").read_text()


def _upgrade(server):
    """USR2 the master; return the new master's pid once it is ready."""
    server.send_signal(signal.SIGUSR2)
    match = server.wait_for_log(r"Upgrade: this master \((\d+)\) replaces %d" % server.master_pid, timeout=20)
    return int(match.group(1))


def test_usr2_then_term_old_master(test_app, tmp_path):
    pidfile = tmp_path / "app.pid"
    server = test_app("basic:pid", workers=2, pidfile=str(pidfile))
    old_workers = set(server.worker_pids())
    with ClientLoop(server.url) as loop:
        new_master = _upgrade(server)
        assert new_master != server.master_pid
        assert pidfile.read_text().strip() == str(new_master)
        assert (tmp_path / "app.pid.oldbin").read_text().strip() == str(server.master_pid)
        server.send_signal(signal.SIGTERM)
        assert server.proc.wait(20) == 0
        served = loop.ok
        assert wait_until(lambda: loop.ok > served + 10, 10)
    try:
        assert loop.failures == []
        pids = {int(requests.get(server.url).text) for _ in range(10)}
        assert pids and not pids & old_workers
        assert set(child_pids(new_master)) >= pids
        assert not (tmp_path / "app.pid.oldbin").exists()
        # systemd learns the new main pid from the new master's READY=1
        assert "READY=1" in server.wait_notify(f"MAINPID={new_master}", 5).split("\n")
    finally:
        os.kill(new_master, signal.SIGTERM)
        assert wait_until(lambda: not alive(new_master), 10)


def test_usr2_upgrade_auto_stops_old_master(test_app):
    server = test_app("basic:pid", workers=1, upgrade_auto=True)
    with ClientLoop(server.url) as loop:
        new_master = _upgrade(server)
        assert server.proc.wait(20) == 0  # the old master stopped by itself
        served = loop.ok
        assert wait_until(lambda: loop.ok > served + 5, 10)
    try:
        assert loop.failures == []
        assert alive(new_master)
    finally:
        os.kill(new_master, signal.SIGTERM)
        assert wait_until(lambda: not alive(new_master), 10)


def test_signals_are_handled_in_the_main_loop_not_in_the_handler(test_app, tmp_path):
    """Invariant 1: a signal arriving while the master is busy (here, in a hook)
    is only recorded; the work happens once the main loop gets to it, in order."""
    conf = tmp_path / "slow_hook.conf.py"
    conf.write_text(
        "import time\n"
        "def nworkers_changed(server, new_value, old_value):\n"
        "    if old_value is not None:\n"
        "        server.log.info('hook start')\n"
        "        time.sleep(1)\n"
        "        server.log.info('hook end')\n"
    )
    server = test_app("basic:hello", workers=1, config=str(conf))
    server.send_signal(signal.SIGTTIN)
    server.wait_for_log("hook start")
    server.send_signal(signal.SIGUSR1)
    server.send_signal(signal.SIGTTOU)
    server.wait_for_log(r"(?s)hook end.*Handling signal: usr1.*Handling signal: ttou")
    log = server.log_text()
    assert log.index("hook end") < log.index("Handling signal: usr1")
