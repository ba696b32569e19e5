"""Performance options that change behaviour a user can notice: responses
written in several pieces are not held back by Nagle's algorithm, and the
listener options of docs/performance.md are in place."""

import os
import socket
import time

import pytest
from conftest import APPS
from rawhttp import Conn, get, post

from prefork.listener import DEFER_ACCEPT
from prefork.sockets import tune_listener
from prefork.testing import serve


@pytest.fixture(scope="module")
def server():
    with serve("http_apps:router", 1, cwd=APPS) as s:
        yield s


def test_streamed_responses_on_a_kept_connection_are_not_delayed(server):
    # Without TCP_NODELAY every piece after the first waits for the client's
    # delayed ACK (~40 ms): 20 responses would take at least 0.8 s.
    with Conn(server.port) as c:
        c.request(get("/stream?n=3"))  # the connection is set up
        started = time.monotonic()
        for _ in range(20):
            resp = c.request(get("/stream?n=3"))
            assert resp.body == b"piece 0;piece 1;piece 2;"
        elapsed = time.monotonic() - started
    assert elapsed < 0.5, f"20 streamed responses took {elapsed:.2f} s"


@pytest.mark.parametrize("how", ["read_n", "readline", "readline_limit", "readlines", "iter",
                                 "read_none"])
def test_a_request_without_body_reads_as_empty_and_keeps_what_follows(server, how):
    # Bodiless requests share one stateless wsgi.input; bytes pipelined after
    # the head are still the next request.
    with Conn(server.port) as c:
        c.send(get(f"/echo_by?how={how}") + get("/hello", extra="Content-Length: 0\r\n"))
        first = c.read_response()
        assert (first.status, first.body) == (200, b"")
        assert c.read_response().body == b"hello"


@pytest.mark.parametrize("size", [16 * 1024 - 1, 16 * 1024, 1 << 20])
def test_a_large_body_is_sent_whole_behind_its_head(server, size):
    # From 16 KiB on, head and body go out in one vectored write, not joined.
    payload = os.urandom(size)
    with Conn(server.port) as c:
        resp = c.request(post("/echo", payload))
        assert resp.status == 200
        assert resp.header("Content-Length") == str(size)
        assert resp.body == payload
        assert c.request(get("/hello")).body == b"hello"


def test_tcp_listeners_get_nodelay_and_unix_ones_are_left_alone(tmp_path):
    tcp = socket.socket()
    unix = socket.socket(socket.AF_UNIX)
    try:
        tune_listener(tcp)
        tune_listener(unix)
        assert tcp.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY)
        if DEFER_ACCEPT is not None:
            assert tcp.getsockopt(socket.IPPROTO_TCP, DEFER_ACCEPT)
    finally:
        tcp.close()
        unix.close()


@pytest.mark.skipif(DEFER_ACCEPT is None, reason="TCP_DEFER_ACCEPT is Linux's")
def test_a_client_that_connects_and_says_nothing_does_not_hold_the_only_worker():
    # Without TCP_DEFER_ACCEPT the worker would accept the silent connection
    # and wait for its request until the 10 s read deadline.
    with serve("http_apps:router", 1, cwd=APPS, timeout=10) as s:
        with socket.create_connection(("127.0.0.1", s.port), timeout=20):
            started = time.monotonic()
            with Conn(s.port) as c:
                assert c.request(get("/hello")).body == b"hello"
            assert time.monotonic() - started < 5


def _most_at_once(intervals):
    events = sorted([(start, 1) for start, _ in intervals] + [(end, -1) for _, end in intervals])
    most = current = 0
    for _, step in events:
        current += step
        most = max(most, current)
    return most


def test_workers_load_the_application_at_most_one_per_core_at_a_time(tmp_path):
    # Workers importing the application at once share the cores, and the
    # first request waits for the first of them: at most one per core loads.
    cores = len(os.sched_getaffinity(0))
    if cores > 8:
        pytest.skip("too many cores for a quick test")
    log = tmp_path / "boots"
    env = dict(os.environ, PREFORK_TEST_BOOT_SECONDS="0.15", PREFORK_TEST_BOOT_LOG=str(log))
    with serve("bootlog:app", cores + 2, cwd=APPS, env=env):
        lines = log.read_text().split()
    intervals = [(float(lines[i + 1]), float(lines[i + 2])) for i in range(0, len(lines), 3)]
    assert len(intervals) == cores + 2
    assert _most_at_once(intervals) <= cores
