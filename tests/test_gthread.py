"""The gthread worker with real processes and clients: concurrency for
applications that wait, fair accept, the per-request timeout, idle
connections that take no thread, recycling and stopping without a lost
request, and a Gunicorn config that asks for it."""

import http.client
import json
import os
import select
import signal
import socket
import subprocess
import sys
import threading
import time

import pytest
import requests
from conftest import APPS, alive, free_port, unix_get, wait_until
from keepalive_clients import ClientPool

APP = "threaded:app"
GTHREAD = {"worker_class": "gthread"}


def get_json(url, timeout=30, headers=None):
    return requests.get(url, timeout=timeout, headers=headers).json()


def sleep_in_background(url, mark):
    """Start a ``/sleep`` request in a thread; return it once the request is in
    the application (it touches ``mark``), with the dict its answer goes to."""
    answer = {}
    thread = threading.Thread(target=lambda: answer.update(
        get_json(url, headers={"X-Started-Mark": str(mark)})))
    thread.start()
    assert wait_until(mark.exists, 10), "the slow request never reached the application"
    return thread, answer


def concurrently(url, count):
    results, errors = [], []

    def one():
        try:
            results.append(get_json(url))
        except Exception as exc:  # kept for the assertion
            errors.append(exc)

    threads = [threading.Thread(target=one) for _ in range(count)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors, errors
    return results


def max_overlap(results):
    """The most requests that were in the application at the same moment."""
    events = sorted([(r["start"], 1) for r in results] + [(r["end"], -1) for r in results])
    best = now = 0
    for _, step in events:
        now += step
        best = max(best, now)
    return best


def test_one_worker_serves_as_many_waiting_requests_at_once_as_it_has_threads(test_app):
    server = test_app(APP, workers=1, threads=8)  # --threads > 1 alone means gthread
    results = concurrently(server.url + "/sleep?0.5", 8)
    assert len({r["pid"] for r in results}) == 1
    assert max_overlap(results) == 8
    assert all(r["multithread"] for r in results)
    assert "Using worker: gthread" in server.log_text()


def test_a_request_that_waits_lends_its_thread_place_to_the_next_ones(test_app, tmp_path):
    # The thread serving a request keeps the leadership (for CPU-bound apps);
    # one whose request waits must hand it over, or this worker's other
    # thread would sit idle while new requests queue behind the waiting one.
    server = test_app(APP, workers=1, threads=2, **GTHREAD)
    thread, slow = sleep_in_background(server.url + "/sleep?5", tmp_path / "started")
    try:
        started = time.monotonic()
        quick = [get_json(server.url + "/")]
        first = time.monotonic() - started  # the hand-over: about 1 ms, never a beat (1 s)
        quick += [get_json(server.url + "/") for _ in range(19)]
        elapsed = time.monotonic() - started
        assert thread.is_alive(), "the quick requests waited for the slow one"
    finally:
        thread.join(15)
    assert {r["pid"] for r in quick} == {slow["pid"]}
    assert first < 0.5 and elapsed < 3.0, (first, elapsed)


def test_a_stream_of_new_connections_does_not_starve_parked_keep_alive_clients(test_app):
    # Found in review: a leader that went from accept() to accept() while new
    # connections kept coming never looked at the selector, where parked
    # connections are seen to speak: a keep-alive client waited until the
    # stream stopped (3.5 s of 4).
    server = test_app(APP, workers=1, threads=2, keepalive=30, **GTHREAD)
    host, port = "127.0.0.1", server.port
    stop = threading.Event()

    def closing_client():
        while not stop.is_set():
            try:
                with socket.create_connection((host, port), timeout=10) as sock:
                    sock.sendall(b"GET /spin?0.5 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
                    while sock.recv(65536):
                        pass
            except OSError:
                pass

    kept = http.client.HTTPConnection(host, port, timeout=10)
    kept.request("GET", "/")
    kept.getresponse().read()
    load = [threading.Thread(target=closing_client, daemon=True) for _ in range(6)]
    for thread in load:
        thread.start()
    waits = []
    try:
        deadline = time.monotonic() + 3.0
        while time.monotonic() < deadline:
            stop.wait(0.02)  # think time: the connection is parked meanwhile
            started = time.monotonic()
            kept.request("GET", "/")
            response = kept.getresponse()
            response.read()
            assert response.status == 200
            waits.append(time.monotonic() - started)
    finally:
        stop.set()
        for thread in load:
            thread.join(15)
        kept.close()
    assert len(waits) >= 20 and max(waits) < 1.0, (len(waits), max(waits))


def test_an_application_raising_a_base_exception_costs_neither_thread_nor_worker(test_app):
    server = test_app(APP, workers=1, threads=2, **GTHREAD)
    [worker] = server.worker_pids()
    with pytest.raises(requests.RequestException):
        requests.get(server.url + "/cancel", timeout=10)
    results = concurrently(server.url + "/sleep?0.5", 2)  # both threads still serve
    assert max_overlap(results) == 2
    assert [get_json(server.url + "/")["pid"] for _ in range(10)] == [worker] * 10
    assert "CancelledError: the application's own" in server.log_text()


def test_a_worker_with_no_free_thread_does_not_accept(test_app, tmp_path):
    # Gunicorn's gthread worker accepts while busy and queues requests inside
    # itself although another worker is idle; here they stay in the kernel's
    # queue, for the worker that can serve them now.
    server = test_app(APP, workers=2, threads=1, **GTHREAD)
    server.wait_workers(2)
    thread, slow = sleep_in_background(server.url + "/sleep?8", tmp_path / "started")
    try:
        quick = [get_json(server.url + "/") for _ in range(20)]
        assert thread.is_alive()  # all 20 were served while the slow one still ran
    finally:
        thread.join(15)
    assert slow["pid"] not in {r["pid"] for r in quick}


def test_a_stuck_request_is_reported_with_its_stack_and_its_neighbours_finish(test_app):
    server = test_app(APP, workers=1, threads=4, timeout=2, graceful_timeout=10, **GTHREAD)
    [worker] = server.worker_pids()
    outcome = {}

    def stuck():
        try:
            outcome["stuck"] = requests.get(server.url + "/stuck?60", timeout=30).status_code
        except requests.RequestException as exc:
            outcome["stuck"] = exc

    threading.Thread(target=stuck, daemon=True).start()
    assert wait_until(lambda: _in_app(server), 5)
    time.sleep(1.0)  # neighbours start while the stuck one is 1 s old
    neighbours = concurrently(server.url + "/sleep?1.5", 3)
    assert [r["pid"] for r in neighbours] == [worker] * 3  # served, not failed, by the same worker
    log = server.wait_for_log(r"REQUEST TIMEOUT \(pid:%d\) 'GET /stuck\?60 HTTP/1.1' has run for" % worker)
    assert log
    text = server.log_text()
    assert "in stuck_here" in text and "time.sleep(seconds)" in text, text[-2000:]
    assert wait_until(lambda: not alive(worker), 15)
    [new] = server.wait_workers(1, exclude=[worker], timeout=15)
    assert get_json(server.url + "/")["pid"] == new
    assert isinstance(outcome.get("stuck"), Exception) or wait_until(lambda: "stuck" in outcome, 5)


def _in_app(server):
    try:
        with open(f"/proc/{server.worker_pids()[0]}/task/{server.worker_pids()[0]}/wchan"):
            pass
    except OSError:
        return False
    return True


def test_three_hundred_idle_keep_alive_connections_do_not_delay_a_new_client(test_app):
    server = test_app(APP, workers=1, threads=4, keepalive=30, **GTHREAD)
    idle = []
    try:
        for _ in range(300):
            conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
            conn.request("GET", "/")
            conn.getresponse().read()
            idle.append(conn)  # kept open, idle
        started = time.monotonic()
        assert get_json(server.url + "/")["pid"]
        assert time.monotonic() - started < 2
        for conn in idle[:5]:  # and the idle ones are still usable
            conn.request("GET", "/")
            assert conn.getresponse().status == 200
    finally:
        for conn in idle:
            conn.close()


def test_a_connection_past_descriptor_1023_is_kept_alive_like_any_other(test_app):
    # Regression: select.select() refuses descriptors of 1024 and above
    # (FD_SETSIZE), so waiting a moment for such a connection's next request
    # failed, and the connection was closed after a response that had said
    # keep-alive: the client's next request on it was lost.
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = 4096
    if hard != resource.RLIM_INFINITY and hard < wanted:
        pytest.skip(f"needs {wanted} descriptors, the hard limit is {hard}")
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, wanted), hard))
    idle = []
    try:
        server = test_app(APP, workers=1, threads=4, keepalive=60, worker_connections=3000,
                          **GTHREAD)
        for _ in range(1050):  # the worker's next descriptor is past 1023
            conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
            conn.request("GET", "/")
            conn.getresponse().read()
            idle.append(conn)
        high = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
        idle.append(high)
        for _ in range(3):
            high.request("GET", "/")
            response = high.getresponse()
            assert response.status == 200 and not response.will_close
            response.read()
        assert "Traceback" not in server.log_text(), server.log_text()[-3000:]
    finally:
        for conn in idle:
            conn.close()
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


def test_max_requests_under_keep_alive_load_loses_no_request(test_app):
    server = test_app(APP, workers=2, threads=4, keepalive=2, max_requests=30, **GTHREAD)
    with ClientPool(server.port, clients=4, per_client=150) as pool:
        assert pool.join(90)
    log = server.log_text()
    assert pool.failures == [], (pool.failures[:5], log[-3000:])
    assert log.count("reached its request limit") >= 3


def test_graceful_stop_closes_parked_connections_and_finishes_requests(test_app):
    server = test_app(APP, workers=1, threads=4, keepalive=30, graceful_timeout=10, **GTHREAD)
    parked = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
    parked.request("GET", "/")
    parked.getresponse().read()
    result = {}
    thread = threading.Thread(target=lambda: result.update(get_json(server.url + "/sleep?1")))
    thread.start()
    assert wait_until(lambda: _in_app(server), 5)
    time.sleep(0.2)  # the request is inside the application
    started = time.monotonic()
    server.send_signal(signal.SIGTERM)
    assert server.proc.wait(10) == 0
    thread.join(5)
    assert result.get("pid")  # the request in flight was finished
    assert time.monotonic() - started < 3  # not the 30 s keep-alive of the parked one
    sock = parked.sock
    sock.settimeout(2)
    assert sock.recv(1) == b""  # the parked connection was closed
    parked.close()


def test_a_gunicorn_config_with_gthread_works_unchanged(tmp_path):
    conf = tmp_path / "gunicorn.conf.py"
    conf.write_text('worker_class = "gthread"\nthreads = 8\nworker_connections = 500\n')
    env = {**os.environ, "PYTHONPATH": APPS}
    out = subprocess.run([sys.executable, "-m", "prefork", "-c", str(conf), "--print-config", APP],
                         capture_output=True, text=True, timeout=30, env=env, cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    lines = {line.split(" = ")[0]: line for line in out.stdout.splitlines() if " = " in line}
    assert lines["worker_class"].startswith("worker_class = 'gthread'"), lines["worker_class"]
    assert lines["threads"].startswith("threads = 8")
    assert lines["worker_connections"].startswith("worker_connections = 500")
    assert "unsupported" not in out.stderr.lower() and "warning" not in out.stderr.lower(), out.stderr


def test_sync_with_threads_is_gthread_as_in_gunicorn(tmp_path):
    out = subprocess.run([sys.executable, "-m", "prefork", "-k", "sync", "--threads", "4",
                          "--print-config", APP], capture_output=True, text=True, timeout=30,
                         env={**os.environ, "PYTHONPATH": APPS}, cwd=tmp_path)
    assert "worker_class = 'gthread'" in out.stdout
    assert "is 'sync' with threads = 4: using gthread, as Gunicorn does" in out.stderr


def test_gthread_over_a_unix_socket_and_hup(test_app, tmp_path):
    path = tmp_path / "s.sock"
    server = test_app(APP, workers=1, threads=2, bind=f"unix:{path}", **GTHREAD)
    for _ in range(2):
        data = unix_get(path)
        assert b"200 OK" in data and json.loads(data.split(b"\r\n\r\n", 1)[1])["multithread"]
        start = len(server.log_text())
        server.send_signal(signal.SIGHUP)
        server.wait_for_log("Reload complete", start=start, timeout=15)


# --- the rest of the server under gthread


def test_access_log_and_hooks_run_in_the_requests_thread(test_app, tmp_path):
    access = tmp_path / "access.log"
    marks = tmp_path / "hooks.log"
    conf = tmp_path / "hooks.conf.py"
    conf.write_text(
        "import threading\n"
        f"MARKS = {str(marks)!r}\n"
        "def pre_request(worker, req):\n"
        "    open(MARKS, 'a').write(f'pre {threading.get_ident()}\\n')\n"
        "def post_request(worker, req, environ, resp):\n"
        "    open(MARKS, 'a').write(f'post {threading.get_ident()}\\n')\n")
    server = test_app(APP, workers=1, threads=4, config=str(conf), accesslog=str(access),
                      access_log_format="%(r)s %(s)s", **GTHREAD)
    results = concurrently(server.url + "/sleep?0.3", 4)
    assert wait_until(lambda: access.exists() and access.read_text().count("\n") == 4, 5)
    assert access.read_text().splitlines() == ["GET /sleep?0.3 HTTP/1.1 200"] * 4
    assert wait_until(lambda: marks.read_text().count("post") == 4, 5)
    pre = {line.split()[1] for line in marks.read_text().splitlines() if line.startswith("pre")}
    post = {line.split()[1] for line in marks.read_text().splitlines() if line.startswith("post")}
    app_threads = {str(r["thread"]) for r in results}
    assert pre == post == app_threads and len(app_threads) == 4  # each in its request's thread


def test_reuse_port_and_preload_under_gthread(test_app):
    port = free_port()
    server = test_app(APP, workers=2, threads=2, reuse_port=True, preload_app=True,
                      bind=f"127.0.0.1:{port}", **GTHREAD)
    pids = {get_json(f"http://127.0.0.1:{port}/")["pid"] for _ in range(40)}
    assert pids <= set(server.worker_pids()) and pids
    assert "a socket per worker" in server.log_text()


def test_usr2_and_winch_under_gthread(test_app):
    server = test_app(APP, workers=1, threads=2, **GTHREAD)
    old_workers = server.worker_pids()
    with ClientPool(server.port, clients=2, per_client=10_000) as pool:
        server.send_signal(signal.SIGUSR2)
        match = server.wait_for_log(r"Upgrade: this master \((\d+)\) replaces %d" % server.master_pid,
                                    timeout=20)
        new_master = int(match.group(1))
        try:
            server.send_signal(signal.SIGWINCH)  # the old master retires its workers
            server.wait_for_log("Stopping all workers", timeout=10)
            assert wait_until(lambda: not any(alive(pid) for pid in old_workers), 15)
            ok = pool.ok
            assert wait_until(lambda: pool.ok > ok + 20, 10)  # the new master's workers serve
            pool.stop()
            assert pool.failures == [], pool.failures[:5]
        finally:
            os.kill(new_master, signal.SIGTERM)
            assert wait_until(lambda: not alive(new_master), 15)


def test_busy_threads_are_in_the_metrics(test_app):
    port = free_port()
    server = test_app(APP, workers=1, threads=4, metrics_bind=f"127.0.0.1:{port}", **GTHREAD)
    done = []
    threads = [threading.Thread(target=lambda: done.append(get_json(server.url + "/sleep?2")))
               for _ in range(3)]
    for t in threads:
        t.start()
    try:
        def busy():
            text = requests.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text
            for line in text.splitlines():
                if line.startswith("prefork_busy_threads "):
                    return float(line.split()[1])
            return None
        assert wait_until(lambda: busy() == 3, 5)
        assert 'prefork_info{version=' in requests.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text
    finally:
        for t in threads:
            t.join(10)
    assert len(done) == 3


@pytest.mark.parametrize("poller_class", ["OneShotPoller", "EpollPoller"])
def test_a_parked_descriptor_is_reported_once_per_arming(poller_class):
    # The leader/followers core rests on this: a parked connection that
    # speaks is reported to one leader, once, until it is parked again.
    from prefork.workers import gthread
    if poller_class == "EpollPoller" and not hasattr(select, "EPOLLONESHOT"):
        pytest.skip("epoll only on Linux")
    poller = getattr(gthread, poller_class)()
    parked, client = socket.socketpair()
    watched_r, watched_w = socket.socketpair()
    try:
        poller.watch(watched_r.fileno())
        poller.arm(parked.fileno())
        poller.arm(parked.fileno())  # arming twice is harmless
        assert poller.wait(0) == []
        client.send(b"GET / HTTP/1.1\r\n\r\n")
        watched_w.send(b"x")
        assert sorted(poller.wait(1)) == sorted([parked.fileno(), watched_r.fileno()])
        assert poller.wait(0) == [watched_r.fileno()]  # still readable, reported no more
        poller.arm(parked.fileno())
        assert sorted(poller.wait(0)) == sorted([parked.fileno(), watched_r.fileno()])
        poller.disarm(parked.fileno())
        poller.arm(parked.fileno())
        poller.disarm(parked.fileno())
        poller.unwatch(watched_r.fileno())
        assert poller.wait(0) == []
    finally:
        for sock in (parked, client, watched_r, watched_w):
            sock.close()
