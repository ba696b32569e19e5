"""The foundation: serving, worker supervision, timeouts, stops, boot failures."""

import os
import signal
import socket
import subprocess
import sys
import threading
import time

import pytest
import requests
from conftest import APPS, ROOT, alive, raw_request, term_during_request, wait_until

from prefork.testing import child_pids


def process_gone(pid):
    return not alive(pid)


def test_serves_hello_world(hello):
    server = hello(workers=2)
    response = requests.get(server.url + "/")
    assert response.status_code == 200
    assert response.text == "Hello, World!"
    assert response.headers["Server"].startswith("prefork/")


def test_post_body_is_echoed(hello):
    server = hello()
    payload = os.urandom(300_000)
    response = requests.post(server.url + "/echo", data=payload)
    assert response.status_code == 200
    assert response.content == payload


def test_requests_spread_over_four_workers(hello):
    server = hello(workers=4)
    workers = set(server.worker_pids())
    assert len(workers) == 4
    seen = set()
    barrier = threading.Barrier(8)

    # /pid tells who served; clients holding their connection briefly force
    # every worker to take some.
    def pid_client():
        barrier.wait(5)
        for _ in range(10):
            with socket.create_connection(("127.0.0.1", server.port), timeout=10) as s:
                s.sendall(b"GET /pid HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
                time.sleep(0.03)  # hold the worker briefly so others must accept
                data = b""
                while chunk := s.recv(4096):
                    data += chunk
            seen.add(int(data.rsplit(b"\r\n\r\n", 1)[1]))

    threads = [threading.Thread(target=pid_client) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert seen == workers


def test_killed_worker_is_replaced_within_a_second(hello):
    server = hello(workers=2)
    before = server.worker_pids()
    victim = before[0]
    started = time.monotonic()
    os.kill(victim, signal.SIGKILL)
    after = server.wait_workers(2, timeout=1.0, exclude=[victim])
    assert victim not in after
    # the replacement serves
    assert wait_until(lambda: requests.get(server.url).ok, 1.0)
    assert time.monotonic() - started < 1.5
    server.wait_for_log(rf"Worker {victim} died unexpectedly \(killed by SIGKILL\)")
    assert not process_gone(server.master_pid)


def test_stuck_request_is_killed_after_timeout(test_app):
    server = test_app("basic:sleepy", workers=1, timeout=2)
    worker = server.worker_pids()[0]
    started = time.monotonic()
    # the worker is killed, so the client sees the connection end without a response
    with pytest.raises(requests.ConnectionError):
        requests.get(server.url + "/stuck?30", timeout=15)
    assert 2 <= time.monotonic() - started < 8
    server.wait_for_log(r"WORKER TIMEOUT \(pid:%d\).*'GET /stuck\?30 HTTP/1.1'" % worker)
    new = server.wait_workers(1, timeout=5, exclude=[worker])
    assert new[0] != worker
    assert requests.get(server.url + "/?0", timeout=5).status_code == 200


def test_sigterm_waits_for_request_in_flight(test_app):
    server = test_app("basic:sleepy", workers=2, graceful_timeout=10)
    response = term_during_request(server, 2)
    assert response.status_code == 200
    assert response.text == "slept 2.0"
    assert child_pids(server.master_pid) == []


def test_idle_workers_stop_promptly_on_sigterm(hello):
    server = hello(workers=4)
    workers = server.worker_pids()
    started = time.monotonic()
    assert server.stop(signal.SIGTERM, timeout=10) == 0
    assert time.monotonic() - started < 1.0
    assert all(wait_until(lambda p=p: process_gone(p), 1) for p in workers)


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGQUIT])
def test_quick_stop(hello, sig):
    server = hello(workers=2)
    workers = server.worker_pids()
    assert server.stop(sig, timeout=10) == 0
    assert all(wait_until(lambda p=p: process_gone(p), 1) for p in workers)


def run_prefork(args, cwd=ROOT, timeout=20, env=None):
    """Run prefork to completion (for servers that must fail to start)."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "prefork", *args], cwd=cwd, env=env,
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True,
    )
    try:
        out, _ = proc.communicate(timeout=timeout)
    finally:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        proc.wait(5)
    return proc.returncode, out.decode()


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


BROKEN_APPS = {
    "import_error": ("import this_module_does_not_exist_anywhere\n", "this_module_does_not_exist_anywhere"),
    "syntax_error": ("def app(environ, start_response)\n    return []\n", "SyntaxError"),
    "raises": ("raise RuntimeError('the application refuses to start')\n", "refuses to start"),
}


@pytest.mark.parametrize("kind", sorted(BROKEN_APPS))
def test_broken_app_stops_the_server_fast(tmp_path, kind):
    source, expected = BROKEN_APPS[kind]
    (tmp_path / "brokenapp.py").write_text(source)
    started = time.monotonic()
    code, out = run_prefork(["-w", "4", "-b", f"127.0.0.1:{_free_port()}", "brokenapp:app"], cwd=tmp_path)
    assert time.monotonic() - started < 5
    assert code == 1
    assert expected in out
    assert out.count("Traceback (most recent call last)") == 1  # logged once, not per worker
    assert "Shutting down: the application could not be loaded" in out


@pytest.mark.parametrize("app, message", [
    ("no_such_module:app", "no module named 'no_such_module'"),
    ("basic:missing", "'basic' has no attribute 'missing'"),
    ("basic:not_callable", "'basic.not_callable' is not callable"),
])
def test_app_typo_is_a_one_line_error(app, message):
    code, out = run_prefork(["-b", f"127.0.0.1:{_free_port()}", app], cwd=APPS)
    assert code == 1
    assert message in out
    assert "Traceback" not in out


@pytest.mark.parametrize("args, message", [
    (["-w", "-1", "basic:hello"], "--workers: must be at least 1, got -1"),
    (["-w", "many", "basic:hello"], "--workers: expected an integer, got 'many'"),
    (["-b", "127.0.0.1:http", "basic:hello"], "invalid port 'http'"),
    (["-b", "::1:80", "basic:hello"], "put IPv6 addresses in brackets"),
    (["--timeout", "soon", "basic:hello"], "--timeout: expected a number of seconds"),
    (["--no-such-flag", "basic:hello"], "--no-such-flag"),
    ([], "missing APP_MODULE"),
])
def test_bad_command_line_is_a_one_line_error(args, message):
    code, out = run_prefork(args, cwd=APPS)
    assert code == 2
    lines = out.strip().splitlines()
    assert len(lines) == 1, out
    assert lines[0].startswith("prefork: error: ")
    assert message in lines[0]


def test_bind_in_use_is_a_one_line_error():
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        code, out = run_prefork(["-b", f"127.0.0.1:{port}", "basic:hello"], cwd=APPS)
    assert code == 1
    assert f"cannot listen on 127.0.0.1:{port}: Address already in use" in out


def test_version():
    code, out = run_prefork(["--version"])
    assert code == 0
    assert out.startswith("prefork ")


def test_process_titles(hello):
    server = hello(workers=2)

    def title(pid):
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return f.read().replace(b"\0", b" ").decode().strip()

    assert title(server.master_pid) == "prefork: master [examples.hello_flask:app]"
    for pid in server.worker_pids():
        assert title(pid) == "prefork: worker [examples.hello_flask:app]"


def test_name_setting_changes_titles(hello):
    server = hello(proc_name="shop")
    with open(f"/proc/{server.master_pid}/cmdline", "rb") as f:
        assert f.read().rstrip(b"\0") == b"prefork: master [shop]"


def test_app_exception_is_a_500_and_worker_survives(test_app):
    server = test_app("basic:crash", workers=1)
    worker = server.worker_pids()
    response = requests.get(server.url)
    assert response.status_code == 500
    assert "boom" not in response.text  # never a traceback to the client
    server.wait_for_log(r"RuntimeError: boom")
    assert server.worker_pids() == worker


def test_malformed_request_is_a_400_and_worker_survives(test_app):
    server = test_app("basic:hello", workers=1)
    worker = server.worker_pids()
    reply = raw_request(server.port, b"GET / HTTP/1.1\r\nHost: x\r\nBad Header: y\r\n\r\n")
    assert reply.startswith(b"HTTP/1.1 400 ")
    assert b"Connection: close" in reply
    assert requests.get(server.url).text == "hello"
    assert server.worker_pids() == worker


def test_worker_exits_when_master_is_killed(hello):
    server = hello(workers=3)
    workers = server.worker_pids()
    os.kill(server.master_pid, signal.SIGKILL)
    server.proc.wait(5)
    assert all(wait_until(lambda p=p: process_gone(p), 1.0) for p in workers)


def test_no_zombies_after_worker_deaths(test_app):
    server = test_app("basic:exits", workers=2)
    for _ in range(3):
        try:
            requests.get(server.url, timeout=5)
        except requests.ConnectionError:
            pass
    server.wait_for_log(r"(?s)(died unexpectedly \(exit code 7\).*){3}")
    server.wait_workers(2, timeout=5)
    assert wait_until(lambda: not zombie_children(server.master_pid), 2), zombie_children(server.master_pid)


def zombie_children(parent):
    """Children of ``parent`` that have exited but not been reaped."""
    zombies = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    fields = f.read().rsplit(") ", 1)[1].split()
            except OSError:
                continue
            if fields[0] == "Z" and int(fields[1]) == parent:
                zombies.append(int(entry))
    return zombies


def test_unix_socket_bind(test_app, tmp_path):
    path = tmp_path / "app.sock"
    server = test_app("basic:environ_app", bind=f"unix:{path}")
    with socket.socket(socket.AF_UNIX) as s:
        s.connect(str(path))
        s.sendall(b"GET /x HTTP/1.0\r\n\r\n")
        data = b""
        while chunk := s.recv(4096):
            data += chunk
    assert data.startswith(b"HTTP/1.1 200 OK")
    assert b"PATH_INFO=/x" in data
    server.stop()
    assert not path.exists()


def test_chdir_and_pythonpath(prefork_server, tmp_path):
    (tmp_path / "site").mkdir()
    (tmp_path / "lib").mkdir()
    (tmp_path / "site" / "siteapp.py").write_text(
        "import helperlib\n"
        "def app(environ, start_response):\n"
        "    start_response('200 OK', [])\n"
        "    return [helperlib.WORD.encode()]\n"
    )
    (tmp_path / "lib" / "helperlib.py").write_text("WORD = 'from-lib'\n")
    server = prefork_server("siteapp:app", chdir=str(tmp_path / "site"),
                            pythonpath=str(tmp_path / "lib"), cwd=ROOT)
    assert requests.get(server.url).text == "from-lib"


def test_heartbeat_files_leave_nothing_behind(hello, tmp_path):
    server = hello(workers=2, worker_tmp_dir=str(tmp_path))
    assert requests.get(server.url).ok
    # the slots are open in the processes but already unlinked
    assert list(tmp_path.iterdir()) == []
    maps = open(f"/proc/{server.worker_pids()[0]}/maps").read()
    assert f"{tmp_path}/prefork-" in maps and "(deleted)" in maps


def test_worker_tmp_dir_must_exist():
    code, out = run_prefork(["--worker-tmp-dir", "/no/such/dir", "basic:hello"], cwd=APPS)
    assert code == 2
    assert "--worker-tmp-dir: no such directory: /no/such/dir" in out
