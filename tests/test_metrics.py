"""Prometheus metrics from the master (--metrics-bind), against real servers."""

import json
import os
import signal
import socket
import threading
import time

import pytest
import requests
from conftest import APPS, a_worker_sleeps, raw_request, wait_until
from observing import get, metrics_port, scrape, send_request, wait_for_scrape

from prefork.testing import serve

APP = "observed:app"


def start(test_app, workers=1, **settings):
    server = test_app(APP, workers, metrics_bind="127.0.0.1:0", **settings)
    return server, metrics_port(server)


def test_exact_counts_after_requests(test_app):
    server, port = start(test_app, workers=2)
    session = requests.Session()
    for _ in range(5):
        assert session.get(f"{server.url}/a").status_code == 200
    for _ in range(2):
        assert session.get(f"{server.url}/b?status=404").status_code == 404
    for _ in range(3):
        assert session.post(f"{server.url}/c?status=201", data=b"x").status_code == 201
    assert session.delete(f"{server.url}/d").status_code == 200
    assert session.request("PURGE", f"{server.url}/e").status_code == 200
    for _ in range(2):
        assert session.get(f"{server.url}/slow?sleep=0.3").status_code == 200
    assert raw_request(server.port, b"GET / HTTP/1.1\r\nHost: h\r\nBad Field\r\n\r\n").startswith(
        b"HTTP/1.1 400 ")
    got = wait_for_scrape(port, lambda s: s.value("prefork_request_duration_seconds_count") == 14)
    assert got.matching("prefork_requests_total") == {
        frozenset({("code", "200"), ("method", "GET")}): 7,
        frozenset({("code", "404"), ("method", "GET")}): 2,
        frozenset({("code", "201"), ("method", "POST")}): 3,
        frozenset({("code", "200"), ("method", "DELETE")}): 1,
        frozenset({("code", "200"), ("method", "OTHER")}): 1,
    }
    assert got.value("prefork_request_duration_seconds_count") == 14
    assert got.value("prefork_request_duration_seconds_bucket", le="+Inf") == 14
    assert got.value("prefork_request_duration_seconds_bucket", le="30.0") == 14
    # The two that slept 0.3 s are not in the buckets up to 0.25 s.
    assert got.value("prefork_request_duration_seconds_bucket", le="0.25") <= 12
    assert got.value("prefork_request_duration_seconds_bucket", le="0.001") <= \
        got.value("prefork_request_duration_seconds_bucket", le="0.25")
    assert got.value("prefork_request_duration_seconds_sum") >= 0.6
    assert got.matching("prefork_parse_errors_total") == {frozenset({("code", "400")}): 1}
    assert got.matching("prefork_workers") == {
        frozenset({("state", "idle")}): 2, frozenset({("state", "busy")}): 0,
        frozenset({("state", "booting")}): 0}
    assert got.value("prefork_requests_in_progress") == 0
    assert got.value("prefork_busy_threads") == 0
    assert got.value("prefork_request_timeouts_total") == 0
    assert set(got.matching("prefork_worker_restarts_total").values()) == {0}
    assert got.value("prefork_info", version=_version(), worker_class="sync") == 1


def _version():
    from prefork import __version__

    return __version__


def test_openmetrics_when_asked(test_app):
    server, port = start(test_app)
    assert requests.get(server.url).ok
    status, headers, body = get(port, accept="application/openmetrics-text; version=1.0.0")
    assert status == 200
    assert headers["content-type"].startswith("application/openmetrics-text; version=1.0.0")
    assert body.endswith("# EOF\n")
    got = wait_for_scrape(port, lambda s: s.value("prefork_requests_total", code="200", method="GET"))
    assert got.value("prefork_requests_total", code="200", method="GET") == 1
    om = scrape(port, openmetrics=True)  # prometheus_client's strict OpenMetrics parser
    assert om.value("prefork_requests_total", code="200", method="GET") == 1
    assert om.families["prefork_request_duration_seconds"].type == "histogram"
    status, headers, body = get(port)
    assert headers["content-type"] == "text/plain; version=0.0.4; charset=utf-8"


def test_busy_and_in_progress_while_a_request_runs(test_app):
    server, port = start(test_app, workers=2)
    thread = threading.Thread(target=requests.get, args=(f"{server.url}/?sleep=2",))
    thread.start()
    try:
        assert wait_until(lambda: a_worker_sleeps(server), 5)
        got = scrape(port)
        assert got.value("prefork_workers", state="busy") == 1
        assert got.value("prefork_workers", state="idle") == 1
        assert got.value("prefork_requests_in_progress") == 1
        assert got.value("prefork_busy_threads") == 1
    finally:
        thread.join(10)


def test_counters_monotonic_across_a_sigkilled_worker_and_a_hup(test_app):
    server, port = start(test_app, workers=2)
    session = requests.Session()
    for _ in range(10):
        assert session.get(server.url).ok
    session.close()
    got = wait_for_scrape(port, lambda s: s.total("prefork_requests_total") == 10)
    assert got.total("prefork_requests_total") == 10
    victim = server.worker_pids()[0]
    os.kill(victim, signal.SIGKILL)
    server.wait_for_log(rf"Worker {victim} died unexpectedly \(killed by SIGKILL\); reason: signal")
    server.wait_workers(2, exclude=[victim])
    got = scrape(port)
    assert got.total("prefork_requests_total") == 10  # the dead worker's requests are kept
    assert got.value("prefork_request_duration_seconds_count") == 10
    assert got.value("prefork_worker_restarts_total", reason="signal") == 1
    before = server.worker_pids()
    mark = len(server.log_text())
    server.send_signal(signal.SIGHUP)
    server.wait_for_log(r"Reload complete", start=mark)
    server.wait_workers(2, exclude=before)
    got = scrape(port)
    assert got.total("prefork_requests_total") == 10
    assert got.value("prefork_worker_restarts_total", reason="reload") == 2
    assert got.value("prefork_worker_restarts_total", reason="signal") == 1
    for _ in range(5):
        assert requests.get(server.url).ok
    got = wait_for_scrape(port, lambda s: s.total("prefork_requests_total") == 15)
    assert got.total("prefork_requests_total") == 15


def test_scrapes_during_a_reload_all_succeed_and_never_go_back(test_app):
    server, port = start(test_app, workers=2)
    stop = threading.Event()
    seen, failures = [], []

    def scraper():
        while not stop.is_set():
            try:
                seen.append(scrape(port).total("prefork_requests_total"))
            except Exception as exc:  # noqa: BLE001 - recorded, asserted below
                failures.append(repr(exc))

    def client():
        session = requests.Session()
        while not stop.is_set():
            assert session.get(server.url).ok

    threads = [threading.Thread(target=scraper), threading.Thread(target=client)]
    for thread in threads:
        thread.start()
    try:
        assert wait_until(lambda: len(seen) > 5, 10)
        mark = len(server.log_text())
        server.send_signal(signal.SIGHUP)
        server.wait_for_log(r"Reload complete", start=mark, timeout=20)
        count = len(seen)
        assert wait_until(lambda: len(seen) > count + 5, 10)
    finally:
        stop.set()
        for thread in threads:
            thread.join(15)
    assert not failures
    assert seen == sorted(seen) and seen[-1] > seen[0]


def _queue(port, **labels):
    return scrape(port).total("prefork_listen_queue", **labels)


def test_listen_queue_rises_while_the_tcp_worker_is_blocked(test_app):
    server, port = start(test_app, workers=1)
    blocker = threading.Thread(target=requests.get, args=(f"{server.url}/?sleep=3",))
    blocker.start()
    waiting = []
    try:
        assert wait_until(lambda: a_worker_sleeps(server), 5)
        waiting = [send_request(server.port, b"GET / HTTP/1.0\r\n\r\n") for _ in range(3)]
        got = wait_for_scrape(port, lambda s: s.total("prefork_listen_queue") == 3)
        assert got.value("prefork_listen_queue", listener=server.url) == 3
        # The test harness's own socket (fd://), listening with a backlog of 2048.
        assert got.value("prefork_listen_queue_max", listener=server.url) == 2048
        for sock in waiting:  # all served once the worker is free again
            assert sock.recv(65536).startswith(b"HTTP/1.1 200")
        assert wait_until(lambda: _queue(port) == 0, 10)
    finally:
        for sock in waiting:
            sock.close()
        blocker.join(10)


def _unix_request(path, data=b"GET / HTTP/1.0\r\n\r\n"):
    sock = socket.socket(socket.AF_UNIX)
    sock.settimeout(10)
    sock.connect(str(path))
    sock.sendall(data)
    return sock


def test_listen_queue_of_a_unix_listener_and_the_full_warning(tmp_path):
    path = tmp_path / "app.sock"
    with serve(APP, 1, cwd=APPS, bind=f"unix:{path}", backlog=2, metrics_bind="127.0.0.1:0") as server:
        port = metrics_port(server)
        name = f"unix:{path}"
        blocker = _unix_request(path, b"GET /?sleep=3 HTTP/1.0\r\n\r\n")
        waiting = []
        try:
            assert wait_until(lambda: a_worker_sleeps(server), 5)
            waiting = [_unix_request(path) for _ in range(3)]  # the kernel queues limit + 1
            got = wait_for_scrape(port, lambda s: s.value("prefork_listen_queue", listener=name) == 3)
            assert got.value("prefork_listen_queue", listener=name) == 3
            assert got.value("prefork_listen_queue_max", listener=name) == 2
            server.wait_for_log(rf"Listen queue full on {name}: 3 connections wait, the limit is 2")
            assert blocker.recv(65536).startswith(b"HTTP/1.1 200")
            for sock in waiting:
                assert sock.recv(65536).startswith(b"HTTP/1.1 200")
            assert wait_until(lambda: _queue(port, listener=name) == 0, 10)
        finally:
            for sock in [blocker, *waiting]:
                sock.close()
        assert server.log_text().count("Listen queue full") == 1  # at most one line per 10 s


@pytest.mark.skipif(not hasattr(socket, "SO_REUSEPORT"), reason="needs SO_REUSEPORT")
def test_listen_queue_of_each_worker_with_reuse_port(test_app):
    probe = socket.socket()
    probe.bind(("127.0.0.1", 0))
    app_port = probe.getsockname()[1]
    probe.close()
    server = test_app(APP, 2, bind=f"127.0.0.1:{app_port}", reuse_port=True,
                      metrics_bind="127.0.0.1:0", backlog=32)
    port = metrics_port(server)
    url = f"http://127.0.0.1:{app_port}"
    got = wait_for_scrape(port, lambda s: len(s.matching("prefork_listen_queue")) == 2)
    queues = got.matching("prefork_listen_queue", listener=url)
    assert {dict(labels)["pid"] for labels in queues} == {str(p) for p in server.worker_pids()}
    assert set(queues.values()) == {0}
    assert set(got.matching("prefork_listen_queue_max", listener=url).values()) == {32}


def test_timeouts_counted_and_logged_with_504(test_app, tmp_path):
    access = tmp_path / "access.log"
    server, port = start(test_app, timeout=1, accesslog=str(access), log_format="json")
    assert requests.get(f"{server.url}/quick").ok
    with pytest.raises(requests.exceptions.ConnectionError):
        requests.get(f"{server.url}/stuck?sleep=30", timeout=15)
    server.wait_for_log(r"exited after its timeout \(exit code 1\); reason: timeout")
    got = wait_for_scrape(port, lambda s: s.value("prefork_request_timeouts_total") == 1)
    assert got.value("prefork_request_timeouts_total") == 1
    assert got.value("prefork_worker_restarts_total", reason="timeout") == 1
    records = [json.loads(line) for line in access.read_text().splitlines()]
    assert [(r["path"], r["status"], r.get("timed_out")) for r in records] == [
        ("/quick", 200, None), ("/stuck", 504, True)]
    assert records[1]["duration_us"] >= 1_000_000
    assert records[1]["request_id"]


def test_timed_out_request_in_the_text_access_log(test_app, tmp_path):
    access = tmp_path / "access.log"
    server = test_app(APP, 1, timeout=1, accesslog=str(access))
    with pytest.raises(requests.exceptions.ConnectionError):
        requests.get(f"{server.url}/stuck?sleep=30", timeout=15)
    server.wait_for_log(r"exited after its timeout")
    assert wait_until(lambda: access.exists() and access.read_text(), 5)
    (line,) = access.read_text().splitlines()
    assert '"GET /stuck?sleep=30 HTTP/1.1" 504 0' in line


def test_restart_reasons_max_requests_and_crash(test_app):
    server, port = start(test_app, workers=1, max_requests=3)
    session = requests.Session()
    for _ in range(3):
        assert session.get(server.url).ok
    session.close()
    got = wait_for_scrape(port, lambda s: s.value("prefork_worker_restarts_total", reason="max_requests"))
    assert got.value("prefork_worker_restarts_total", reason="max_requests") == 1
    server.wait_workers(1)
    with pytest.raises(requests.exceptions.ConnectionError):
        requests.get(f"{server.url}/?exit=7")
    got = wait_for_scrape(port, lambda s: s.value("prefork_worker_restarts_total", reason="crash"))
    assert got.value("prefork_worker_restarts_total", reason="crash") == 1
    assert got.total("prefork_requests_total") == 3  # the crashed request was never answered


def test_errors_the_server_answers_itself_are_counted_with_their_status(test_app, tmp_path):
    access = tmp_path / "access.log"
    server, port = start(test_app, limit_request_body=10, accesslog=str(access),
                         access_log_format="%(r)s %(s)s")
    reply = raw_request(server.port, b"POST /?read=1 HTTP/1.1\r\nHost: h\r\n"
                                     b"Transfer-Encoding: chunked\r\n\r\n64\r\n" + b"x" * 100)
    assert reply.startswith(b"HTTP/1.1 413 ")
    # The request is counted when it ends, after the lingering close: wait for both.
    got = wait_for_scrape(port, lambda s: s.total("prefork_parse_errors_total")
                          and s.total("prefork_requests_total"))
    assert got.matching("prefork_parse_errors_total") == {frozenset({("code", "413")}): 1}
    assert got.matching("prefork_requests_total") == {
        frozenset({("code", "413"), ("method", "POST")}): 1}
    # The status the client got, not the application's nor a blanket 500 (a regression).
    assert wait_until(lambda: access.exists() and access.read_text(), 5)
    assert access.read_text() == "POST /?read=1 HTTP/1.1 413\n"


def test_the_master_logs_a_timed_out_request_whose_worker_it_had_to_sigkill(test_app, tmp_path):
    access = tmp_path / "access.log"
    server = test_app(APP, 1, timeout=1, accesslog=str(access), log_format="json")
    (worker,) = server.worker_pids()
    thread = threading.Thread(target=lambda: pytest.raises(
        requests.exceptions.ConnectionError, requests.get, f"{server.url}/stuck?sleep=30", timeout=20))
    thread.start()
    try:
        assert wait_until(lambda: a_worker_sleeps(server), 5)
        os.kill(worker, signal.SIGSTOP)  # stuck where no Python code runs: SIGABRT waits
        server.wait_for_log(rf"Worker {worker} exited after its timeout \(killed by SIGKILL\)",
                            timeout=15)
    finally:
        thread.join(20)
    assert wait_until(lambda: access.exists() and access.read_text(), 5)
    (record,) = [json.loads(line) for line in access.read_text().splitlines()]
    assert (record["method"], record["path"], record["status"], record["timed_out"]) == (
        "GET", "/stuck", 504, True)
    assert record["duration_us"] >= 1_000_000


def test_endpoint_answers_only_metrics_and_a_silent_client_blocks_nothing(test_app):
    server, port = start(test_app)
    silent = socket.create_connection(("127.0.0.1", port))  # connects, never sends
    try:
        assert get(port, "/")[0] == 404
        assert get(port, "/metrics", method="POST")[0] == 405
        assert get(port, "/metrics", method="HEAD")[0] == 200
        assert requests.get(server.url).ok  # the master keeps serving everyone
        assert scrape(port).value("prefork_workers", state="idle") == 1
    finally:
        silent.close()
    # The application's own port does not serve metrics: /metrics is the app's.
    assert requests.get(f"{server.url}/metrics").text.endswith(str(server.worker_pids()[0]))


def test_master_process_metrics_and_worker_memory(test_app):
    server, port = start(test_app, workers=2)
    got = scrape(port)
    assert abs(got.value("process_start_time_seconds") - time.time()) < 120
    assert got.value("process_open_fds") > 3
    assert got.value("process_resident_memory_bytes") > 1 << 20
    assert got.value("process_cpu_seconds_total") > 0
    memory = got.matching("prefork_worker_memory_bytes", kind="rss")
    assert {dict(labels)["pid"] for labels in memory} == {str(p) for p in server.worker_pids()}
    assert all(value > 1 << 20 for value in memory.values())


def test_metrics_are_off_by_default(test_app):
    server = test_app(APP, 1)
    assert "Metrics at" not in server.log_text()


def test_a_metrics_address_in_use_is_a_one_line_error(tmp_path):
    taken = socket.socket()
    taken.bind(("127.0.0.1", 0))
    taken.listen()
    try:
        with serve(APP, 1, cwd=APPS, wait_ready=False,
                   metrics_bind=f"127.0.0.1:{taken.getsockname()[1]}") as server:
            assert server.proc.wait(20) == 1
            assert "--metrics-bind: cannot listen on 127.0.0.1:" in server.log_text()
    finally:
        taken.close()


@pytest.mark.parametrize("value, message", [
    ("127.0.0.1", "has no port"),
    ("fd://3", "give HOST:PORT or unix:PATH"),
    ("[::1", "put IPv6 addresses in brackets"),
])
def test_a_bad_metrics_address_exits_2_with_one_line(tmp_path, value, message):
    import subprocess
    import sys

    proc = subprocess.run([sys.executable, "-m", "prefork", "--metrics-bind", value, "x:app"],
                          capture_output=True, text=True, timeout=30, cwd=tmp_path)
    assert proc.returncode == 2
    assert "--metrics-bind" in proc.stderr and message in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1
