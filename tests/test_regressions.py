"""Regression tests for supervision bugs found in review (each failed before its fix)."""

import os
import signal
import socket
import subprocess
import sys
import threading
import time

import pytest
import requests
from conftest import APPS, a_worker_sleeps, alive, raw_request, unix_get, wait_until

from prefork.testing import child_pids

root_only = pytest.mark.skipif(os.geteuid() != 0, reason="needs root (to drop privileges)")


def test_request_in_flight_when_shutdown_delay_ends_completes(test_app):
    server = test_app("basic:sleepy", workers=1, shutdown_delay=0.5, graceful_timeout=10)
    result = {}
    thread = threading.Thread(target=lambda: result.update(r=requests.get(server.url + "/?2", timeout=15)))
    thread.start()
    assert wait_until(lambda: a_worker_sleeps(server), 5)  # the request is being served
    server.send_signal(signal.SIGTERM)
    assert server.proc.wait(15) == 0
    thread.join(15)
    assert result["r"].status_code == 200
    assert "did not stop in time" not in server.log_text()


def test_boot_failure_with_slow_worker_exit_hook_still_stops(tmp_path):
    (tmp_path / "broken.py").write_text("raise ImportError('nope')\n")
    (tmp_path / "conf.py").write_text(
        "import time\n"
        "def worker_exit(server, worker):\n"
        "    time.sleep(1.5)\n"
    )
    proc = subprocess.run(
        [sys.executable, "-m", "prefork", "-w", "2", "-b", "127.0.0.1:0", "-c", "conf.py", "broken:app"],
        cwd=tmp_path, capture_output=True, text=True, timeout=30,
    )
    assert proc.returncode == 1
    assert "Ready" not in proc.stderr
    assert "Shutting down: the application could not be loaded" in proc.stderr


@root_only
def test_usr1_with_user_reopens_and_workers_survive(test_app, shared_dir):
    tmp_path = shared_dir
    log = tmp_path / "access.log"
    server = test_app("basic:hello", workers=2, user="nobody", accesslog=str(log))
    workers = set(server.worker_pids())
    requests.get(server.url + "/before", timeout=5)
    log.rename(tmp_path / "access.log.1")
    server.send_signal(signal.SIGUSR1)
    server.wait_for_log("Handling signal: usr1")
    assert wait_until(log.exists, 5)
    for _ in range(4):
        assert requests.get(server.url + "/after", timeout=5).text == "hello"
    assert wait_until(lambda: log.read_text().count("/after") == 4, 5)
    assert set(server.worker_pids()) == workers
    assert "crashed" not in server.log_text()


@root_only
def test_workers_dropped_to_a_user_still_die_with_the_master(test_app):
    server = test_app("basic:hello", workers=2, user="nobody")
    workers = server.worker_pids()
    os.kill(server.master_pid, signal.SIGKILL)
    server.proc.wait(5)
    assert wait_until(lambda: not any(alive(p) for p in workers), 1.5)


@root_only
def test_unix_socket_belongs_to_the_workers_user(test_app, tmp_path):
    import pwd

    path = tmp_path / "app.sock"
    test_app("basic:hello", user="nobody", bind=f"unix:{path}")
    assert wait_until(path.exists, 5)
    assert path.stat().st_uid == pwd.getpwnam("nobody").pw_uid


def test_hup_with_a_config_that_no_longer_names_the_app(prefork_server, tmp_path):
    conf = tmp_path / "conf.py"
    conf.write_text("wsgi_app = 'basic:hello'\n")
    server = prefork_server("basic:hello", workers=1, cwd=APPS, config=str(conf))
    conf.write_text("workers = 'many'\n")
    server.send_signal(signal.SIGHUP)
    server.wait_for_log("Reload: the config has an error, keeping the current one")
    assert alive(server.master_pid)
    assert requests.get(server.url, timeout=5).text == "hello"


def test_hup_applies_logging_settings(test_app, tmp_path):
    conf = tmp_path / "conf.py"
    conf.write_text("")
    log = tmp_path / "access.log"
    server = test_app("basic:hello", workers=1, config=str(conf))
    conf.write_text(f"accesslog = {str(log)!r}\n")
    server.send_signal(signal.SIGHUP)
    server.wait_notify("READY=1", 20)
    requests.get(server.url + "/logged", timeout=5)
    assert wait_until(lambda: log.exists() and "/logged" in log.read_text(), 5)


def test_timed_out_worker_is_not_reported_as_a_crash(test_app):
    server = test_app("basic:sleepy", workers=1, timeout=1)
    with pytest.raises(requests.ConnectionError):
        requests.get(server.url + "/?30", timeout=15)
    server.wait_for_log(r"Worker \d+ exited after its timeout")
    assert "died unexpectedly" not in server.log_text()


def test_daemon_reports_a_failed_start(tmp_path):
    (tmp_path / "broken.py").write_text("raise RuntimeError('no')\n")
    proc = subprocess.run(
        [sys.executable, "-m", "prefork", "--daemon", "--preload", "-b", "127.0.0.1:0",
         "--error-logfile", str(tmp_path / "err.log"), "broken:app"],
        cwd=tmp_path, capture_output=True, timeout=30,
    )
    assert proc.returncode == 1
    assert "RuntimeError: no" in (tmp_path / "err.log").read_text()


def test_upgrade_rollback_keeps_the_old_master_serving(test_app, tmp_path):
    path = tmp_path / "app.sock"
    server = test_app("basic:pid", workers=1, bind=f"unix:{path}")
    server.send_signal(signal.SIGUSR2)
    match = server.wait_for_log(r"Upgrade: this master \((\d+)\) replaces", timeout=20)
    new_master = int(match.group(1))
    os.kill(new_master, signal.SIGTERM)  # roll back: stop the new master
    server.wait_for_log("Upgrade failed", timeout=20)
    assert path.exists()
    old_workers = [p for p in child_pids(server.master_pid) if p != new_master]
    data = unix_get(path)
    assert data.startswith(b"HTTP/1.1 200")
    assert int(data.rsplit(b"\r\n\r\n", 1)[1]) in old_workers
    # the old workers are not spinning on a socket someone made non-blocking
    before = {pid: _cpu_ticks(pid) for pid in old_workers}
    time.sleep(1.0)  # a measuring window, not synchronisation
    for pid in old_workers:
        assert _cpu_ticks(pid) - before[pid] < 30  # 1/100 s ticks: well under a third of a core


def _cpu_ticks(pid):
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])  # utime + stime


def test_graceful_stop_under_sustained_load_finishes_in_time(test_app):
    server = test_app("basic:hello", workers=2, graceful_timeout=6)
    stop = threading.Event()
    served = []

    def client():
        while not stop.is_set():
            if _get_ok(server.url):
                served.append(1)

    threads = [threading.Thread(target=client, daemon=True) for _ in range(8)]
    for t in threads:
        t.start()
    try:
        assert wait_until(lambda: len(served) > 50, 10)  # under load
        started = time.monotonic()
        server.send_signal(signal.SIGTERM)
        assert server.proc.wait(15) == 0
        assert time.monotonic() - started < 5  # drained within half the graceful timeout
    finally:
        stop.set()
        for t in threads:
            t.join(10)
    assert "did not stop in time" not in server.log_text()


def test_retired_workers_exit_under_load_with_two_listeners(test_app, tmp_path):
    path = tmp_path / "second.sock"
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = test_app("basic:pid", workers=2, bind=[f"127.0.0.1:{port}", f"unix:{path}"])
    url = f"http://127.0.0.1:{port}"
    assert wait_until(lambda: _get_ok(url), 10)
    before = set(server.worker_pids())
    stop = threading.Event()

    def client():
        while not stop.is_set():
            _get_ok(url)

    threads = [threading.Thread(target=client, daemon=True) for _ in range(4)]
    for t in threads:
        t.start()
    try:
        server.send_signal(signal.SIGHUP)
        server.wait_for_log("Reload complete", timeout=8)
        assert not set(server.worker_pids()) & before
    finally:
        stop.set()
        for t in threads:
            t.join(10)


def _get_ok(url):
    try:
        return requests.get(url, timeout=5).ok
    except requests.RequestException:
        return False


def test_client_that_stops_reading_is_dropped_not_timed_out(test_app):
    server = test_app("basic:big", workers=1, timeout=2)
    worker = server.worker_pids()
    stalled = socket.create_connection(("127.0.0.1", server.port), timeout=10)
    stalled.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    stalled.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")  # and never read the 16 MiB
    try:
        response = requests.get(server.url, timeout=15)  # served once the worker gives up
        assert response.status_code == 200 and len(response.content) == 16 << 20
    finally:
        stalled.close()
    assert "WORKER TIMEOUT" not in server.log_text()
    assert server.worker_pids() == worker


def test_empty_line_after_a_body_does_not_hold_the_worker(test_app):
    server = test_app("basic:echo", workers=1, timeout=30, keepalive=2)
    kept = socket.create_connection(("127.0.0.1", server.port), timeout=10)
    try:
        kept.sendall(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\nhi\r\n")
        assert kept.recv(65536).endswith(b"hi")
        started = time.monotonic()
        assert requests.get(server.url, timeout=15).ok  # another client is not kept waiting
        assert time.monotonic() - started < 5
    finally:
        kept.close()


def _lowest_free_fd(pid):
    used = {int(name) for name in os.listdir(f"/proc/{pid}/fd")}
    return next(fd for fd in range(len(used) + 1) if fd not in used)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="prlimit on another process")
def test_worker_out_of_descriptors_survives_and_serves_later(test_app):
    import resource

    server = test_app("basic:pid", workers=1)
    [worker] = server.worker_pids()
    idle_fds = set(os.listdir(f"/proc/{worker}/fd"))
    assert raw_request(server.port, b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    # The client sees EOF at the server's shutdown(), a moment before its close():
    # wait until the worker holds no connection any more.
    assert wait_until(lambda: set(os.listdir(f"/proc/{worker}/fd")) == idle_fds, 5)
    original = resource.prlimit(worker, resource.RLIMIT_NOFILE)
    # The next descriptor the worker opens would be past its limit: accept() fails with EMFILE.
    limit = _lowest_free_fd(worker)
    resource.prlimit(worker, resource.RLIMIT_NOFILE, (limit, original[1]))
    answer = {}

    def client():
        try:
            answer["response"] = requests.get(server.url, timeout=20)
        except requests.RequestException as exc:
            answer["error"] = exc

    thread = threading.Thread(target=client)
    thread.start()
    try:
        assert wait_until(lambda: "accept() failed" in server.log_text(), 10), server.log_text()
        assert alive(worker) and server.worker_pids() == [worker]
    finally:
        if alive(worker):
            resource.prlimit(worker, resource.RLIMIT_NOFILE, original)
        thread.join(25)
    # Once descriptors are available again, the same worker serves the waiting client.
    assert answer["response"].status_code == 200
    assert answer["response"].text == str(worker)
    assert server.worker_pids() == [worker]


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="--reuse-port, prlimit: Linux")
def test_worker_out_of_descriptors_does_not_spin_while_draining_its_own_queue(test_app):
    import resource

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = test_app("basic:pid", workers=2, bind=f"127.0.0.1:{port}", reuse_port=True,
                      graceful_timeout=4)
    stuck, _ = server.wait_workers(2)
    idle_fds = set(os.listdir(f"/proc/{stuck}/fd"))
    assert raw_request(port, b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    # Whichever worker served it closes the connection a moment after the
    # client's EOF: wait until the stuck one holds no connection.
    assert wait_until(lambda: set(os.listdir(f"/proc/{stuck}/fd")) == idle_fds, 5)
    limit = _lowest_free_fd(stuck)  # its next accept() fails with EMFILE
    resource.prlimit(stuck, resource.RLIMIT_NOFILE, (limit, resource.prlimit(stuck, resource.RLIMIT_NOFILE)[1]))
    clients = []
    try:
        for _ in range(20):  # the kernel's hash puts some in the stuck worker's own queue
            c = socket.create_connection(("127.0.0.1", port), timeout=10)
            c.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
            clients.append(c)
        assert wait_until(lambda: "accept() failed" in server.log_text(), 10)
        server.send_signal(signal.SIGTERM)
        before = _cpu_ticks(stuck)
        last = before
        deadline = time.monotonic() + 15
        while alive(stuck) and time.monotonic() < deadline:  # it drains for up to 2 s
            try:
                last = _cpu_ticks(stuck)
            except OSError:
                break
            time.sleep(0.05)
        assert server.proc.wait(15) == 0
    finally:
        for c in clients:
            c.close()
    assert last - before < 50  # 1/100 s ticks; spinning for 2 s would be about 200
