"""Issue 12 regressions with real processes and real clients: pooled keep-alive
clients that never retry lose nothing (plain load, HUP, TTIN/TTOU,
--max-requests), the application's own errors are answered and logged, and an
application that forks cannot hold a client's connection open."""

import os
import re
import signal
import socket
import time

import pytest
from conftest import WORKER_CLASSES, alive, raw_request, wait_until
from keepalive_clients import ClientPool

from prefork.http.body import ChunkedBody
from prefork.http.request import Limits

APP = "reliability:app"


def assert_nothing_lost(pool, log):
    assert pool.failures == [], (pool.failures[:10], log[-3000:])
    assert pool.ok > 0


def test_pooled_keep_alive_clients_lose_no_request(test_app, worker_settings):
    # Issue 12: 556 of 1,852 requests failed (RemoteDisconnected) with these clients.
    server = test_app(APP, workers=2, keepalive=2, **worker_settings)
    with ClientPool(server.port, clients=3, per_client=120) as pool:
        assert pool.join(60)
    assert_nothing_lost(pool, server.log_text())
    assert pool.total == 360
    assert pool.reconnects < pool.total  # connections were kept, not closed after each request


def test_hup_storm_under_keep_alive_load_loses_no_request(test_app, worker_settings):
    server = test_app(APP, workers=2, keepalive=2, **worker_settings)
    with ClientPool(server.port, clients=3, per_client=10_000) as pool:
        for n in range(1, 11):
            start = len(server.log_text())
            server.send_signal(signal.SIGHUP)
            server.wait_for_log(r"Reload complete", timeout=20, start=start)
            assert len(re.findall("Reload complete", server.log_text())) == n
        pool.stop()
    assert_nothing_lost(pool, server.log_text())


def test_ttin_ttou_under_keep_alive_load_lose_no_request(test_app, worker_settings):
    server = test_app(APP, workers=2, keepalive=2, **worker_settings)
    with ClientPool(server.port, clients=3, per_client=10_000) as pool:
        for _ in range(3):
            server.send_signal(signal.SIGTTIN)
            server.wait_workers(3, timeout=15)
            server.send_signal(signal.SIGTTOU)
            server.wait_workers(2, timeout=15)
        pool.stop()
    assert_nothing_lost(pool, server.log_text())


def test_max_requests_under_keep_alive_load_loses_no_request(test_app, worker_settings):
    server = test_app(APP, workers=2, keepalive=2, max_requests=50, **worker_settings)
    with ClientPool(server.port, clients=3, per_client=150) as pool:
        assert pool.join(90)
    log = server.log_text()
    assert_nothing_lost(pool, log)
    assert log.count("reached its request limit") >= 3


# --- the application's errors are the application's


@pytest.fixture(scope="module", params=sorted(WORKER_CLASSES))
def app_server(request):
    from conftest import APPS

    from prefork.testing import serve

    with serve(APP, 1, cwd=APPS, keepalive=2, **WORKER_CLASSES[request.param]) as server:
        yield server


@pytest.mark.parametrize("kind,name", [
    ("notfound", "FileNotFoundError"), ("refused", "ConnectionRefusedError"),
    ("timeout", "TimeoutError"), ("permission", "PermissionError"),
])
def test_an_oserror_from_the_app_is_answered_500_and_logged(app_server, kind, name):
    start = len(app_server.log_text())
    answer = raw_request(app_server.port, f"GET /oserror?{kind} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
    assert answer.startswith(b"HTTP/1.1 500 "), answer
    log = app_server.wait_for_log(name, start=start)
    text = app_server.log_text()[start:]
    assert "Traceback" in text and "error handling request 'GET /oserror" in text, text
    assert log


def test_an_oserror_in_a_streamed_body_cuts_the_response_and_is_logged(app_server):
    start = len(app_server.log_text())
    answer = raw_request(app_server.port, b"GET /stream_oserror HTTP/1.1\r\nHost: x\r\n\r\n")
    assert answer.startswith(b"HTTP/1.1 200 OK")
    body = ChunkedBody(Limits())
    payload = body.feed(answer.split(b"\r\n\r\n", 1)[1])
    assert payload == b"first piece\n" and not body.done  # cut, never passed off as complete
    app_server.wait_for_log("ConnectionRefusedError", start=start)
    assert "Traceback" in app_server.log_text()[start:]


def test_a_status_without_reason_phrase_is_a_valid_status_line(app_server):
    answer = raw_request(app_server.port, b"GET /noreason HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    assert answer.startswith(b"HTTP/1.1 200 \r\n"), answer
    assert answer.endswith(b"\r\n\r\nok")


def test_sys_exit_in_a_request_is_a_500_and_a_replaced_worker_not_a_boot_failure(test_app, worker_settings):
    server = test_app(APP, workers=1, **worker_settings)
    [worker] = server.worker_pids()
    answer = raw_request(server.port, b"GET /exit HTTP/1.1\r\nHost: x\r\n\r\n")
    assert answer.startswith(b"HTTP/1.1 500 "), answer
    assert wait_until(lambda: not alive(worker), 10)
    [new] = server.wait_workers(1, exclude=[worker])
    assert new != worker
    assert raw_request(server.port, b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").endswith(
        str(new).encode())
    log = server.log_text()
    assert "called sys.exit(3)" in log
    assert "failed to boot" not in log and "could not be loaded" not in log
    assert server.proc.poll() is None


# --- an application that forks


@pytest.fixture
def fork_server(test_app, tmp_path, worker_settings):
    server = test_app(APP, workers=1, keepalive=5, env={**os.environ, "FORK_PIDS_DIR": str(tmp_path)},
                      **worker_settings)
    yield server
    for pidfile in tmp_path.glob("*.pid"):  # the app's children, by their pids
        try:
            os.kill(int(pidfile.read_text()), signal.SIGKILL)
        except (ProcessLookupError, ValueError):
            pass


def test_a_close_delimited_response_ends_although_a_forked_child_holds_the_connection(fork_server):
    started = time.monotonic()
    with socket.create_connection(("127.0.0.1", fork_server.port), timeout=5) as sock:
        sock.sendall(b"GET /fork?5 HTTP/1.0\r\n\r\n")  # HTTP/1.0, no length: ends with the connection
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    assert data.startswith(b"HTTP/1.1 200 OK") and b"forked " in data
    assert time.monotonic() - started < 3  # not when the child exits, 5 s later


def test_keep_alive_goes_on_after_a_request_that_forked(fork_server):
    import http.client

    conn = http.client.HTTPConnection("127.0.0.1", fork_server.port, timeout=5)
    try:
        conn.request("GET", "/fork?5")
        assert conn.getresponse().read().startswith(b"forked ")
        conn.request("GET", "/")
        assert conn.getresponse().read().isdigit()
    finally:
        conn.close()


# --- slow clients: their own deadline, and visible in the log


def test_a_stalled_head_has_its_own_short_deadline_and_is_reported(test_app, worker_settings):
    server = test_app(APP, workers=1, timeout=30, header_timeout=1, **worker_settings)
    started = time.monotonic()
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
        sock.sendall(b"GET / HTTP/1.1\r\nHo")  # and nothing more
        answer = sock.recv(65536)
    assert answer.startswith(b"HTTP/1.1 408 "), answer
    assert time.monotonic() - started < 4  # the head's 1 s, not --timeout's 30 s
    line = server.wait_for_log(r"\[WARNING\] 1 slow client dropped in the last \d+ s "
                               r"\(1 request head timeouts \(408\)\)")
    assert line


def test_clients_that_leave_idle_connections_open_make_nobody_wait(test_app, worker_settings):
    # requests.get() without a session can leave its connection open, idle, until
    # it is garbage-collected; a worker that waited out each one's --keep-alive
    # window would serve one such request every 5 s here.
    import requests

    server = test_app(APP, workers=1, keepalive=5, **worker_settings)
    held = []
    started = time.monotonic()
    for _ in range(10):
        conn = socket.create_connection(("127.0.0.1", server.port), timeout=5)
        conn.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        assert conn.recv(65536).startswith(b"HTTP/1.1 200 ")
        held.append(conn)  # kept open and idle, like a pooled connection
    assert requests.get(server.url + "/", timeout=5).status_code == 200
    assert time.monotonic() - started < 4
    for conn in held:
        conn.close()


def test_an_error_answer_does_not_hold_the_worker_for_a_client_that_stays_connected(
        test_app, worker_settings):
    # A chaos finding: every error response lingered a full second, so 20 clients
    # that kept their sockets open after a 500 held 2 sync workers for 9 s.
    server = test_app(APP, workers=1, **worker_settings)
    held = []
    started = time.monotonic()
    try:
        for _ in range(5):
            sock = socket.create_connection(("127.0.0.1", server.port), timeout=5)
            sock.sendall(b"GET /oserror?notfound HTTP/1.1\r\nHost: x\r\n\r\n")
            assert sock.recv(65536).startswith(b"HTTP/1.1 500 ")
            held.append(sock)  # still open: the server must not wait for it
        assert time.monotonic() - started < 2  # not 5 x 1 s
    finally:
        for sock in held:
            sock.close()


def test_a_zombie_does_not_count_as_a_running_master():
    from prefork.pidfile import alive

    child = os.fork()
    if child == 0:
        os._exit(0)
    try:
        assert wait_until(lambda: not alive(child), 5)  # exited, not yet reaped
        assert os.waitpid(child, os.WNOHANG)[0] == child  # it was a zombie until now
    finally:
        try:
            os.waitpid(child, 0)
        except ChildProcessError:
            pass
