"""The pieces behind the metrics, on their own: the counter blocks in a real
scoreboard slot, the exposition formats, the kernel's listen-queue figures."""

import os
import socket
import sys
import time

import pytest
from observing import Scrape

from prefork import listen_queue
from prefork.heartbeat import HeartbeatSlot
from prefork.metrics import Exposition, collect, format_value
from prefork.stats import (
    BUCKETS,
    PAIR_SLOTS,
    RESTART_REASONS,
    RequestCounters,
    ServerView,
    Totals,
)

LINUX = sys.platform.startswith("linux")


@pytest.fixture
def slot():
    s = HeartbeatSlot(None, threads=2)
    yield s
    s.close()


def totals_of(slot):
    totals = Totals()
    totals.add_blocks(slot.counters(t).tolist() for t in range(slot.threads))
    return totals


def test_counts_by_code_and_method_summed_over_threads(slot):
    first, second = RequestCounters(slot.counters(0)), RequestCounters(slot.counters(1))
    first.request("GET", 200, 0.0004)
    first.request("GET", 200, 0.003)
    second.request("GET", 200, 0.2)
    second.request("POST", 201, 1.5)
    first.request("BREW", 418, 40.0)
    second.rejected(400)
    second.rejected(400)
    first.rejected(431)
    first.timed_out()
    totals = totals_of(slot)
    assert totals.requests() == {("200", "GET"): 3, ("201", "POST"): 1, ("418", "OTHER"): 1}
    assert totals.rejected() == {"400": 2, "431": 1}
    assert totals.answered == 5 and totals.timeouts == 1
    assert totals.duration_sum == pytest.approx(0.0004 + 0.003 + 0.2 + 1.5 + 40.0, abs=1e-5)
    buckets = dict(totals.cumulative_buckets())
    assert [buckets[b] for b in (0.001, 0.005, 0.25, 2.5, 30.0, float("inf"))] == [1, 2, 3, 4, 4, 5]
    assert len(buckets) == len(BUCKETS) + 1


def test_bucket_bounds_are_inclusive(slot):
    counters = RequestCounters(slot.counters(0))
    for bound in BUCKETS:
        counters.request("GET", 200, bound)
    buckets = totals_of(slot).cumulative_buckets()
    assert [count for _, count in buckets] == [*range(1, len(BUCKETS) + 1), len(BUCKETS)]


def test_a_full_block_counts_the_rest_as_other(slot):
    counters = RequestCounters(slot.counters(0))
    codes = range(200, 200 + PAIR_SLOTS + 20)
    for code in codes:
        counters.request("GET", code, 0.01)
        counters.rejected(400)
    totals = totals_of(slot)
    by_code = totals.requests()
    assert sum(by_code.values()) == len(codes)  # nothing lost
    assert by_code[("other", "OTHER")] == len(codes) - (PAIR_SLOTS - 3)
    assert totals.rejected() == {"400": len(codes)}


def test_a_block_written_before_is_continued(slot):
    RequestCounters(slot.counters(0)).request("GET", 200, 0.01)
    again = RequestCounters(slot.counters(0))  # e.g. a worker thread that starts over
    again.request("GET", 200, 0.01)
    again.request("PUT", 204, 0.01)
    assert totals_of(slot).requests() == {("200", "GET"): 2, ("204", "PUT"): 1}


def test_totals_add_up_exited_and_live_workers():
    kept = Totals()
    for _ in range(3):
        s = HeartbeatSlot(None)
        RequestCounters(s.counters(0)).request("GET", 200, 0.01)
        kept.add_blocks([s.counters(0).tolist()])
        s.close()
    scrape = kept.copy()
    scrape.add(kept)
    assert kept.requests() == {("200", "GET"): 3}
    assert scrape.requests() == {("200", "GET"): 6}


def view(**kw):
    fields = dict(workers=[], listeners=[], totals=Totals(), restarts={}, timeouts=0,
                  wanted_workers=1, generation=1, phase="running", version="9.9",
                  worker_class="sync")
    fields.update(kw)
    return ServerView(**fields)


def test_exposition_parses_in_both_formats(slot):
    counters = RequestCounters(slot.counters(0))
    counters.request("GET", 200, 0.01)
    counters.rejected(414)
    process = {"process_cpu_seconds": 1.25, "process_open_fds": 12}
    out = collect(view(totals=totals_of(slot), restarts={"crash": 2, "memory": 1}), process)
    for openmetrics in (False, True):
        got = Scrape(out.render(openmetrics).decode(), openmetrics)
        assert got.value("prefork_requests_total", code="200", method="GET") == 1
        assert got.value("prefork_parse_errors_total", code="414") == 1
        assert got.value("prefork_request_duration_seconds_count") == 1
        assert got.value("prefork_request_duration_seconds_bucket", le="+Inf") == 1
        assert got.value("prefork_worker_restarts_total", reason="crash") == 2
        assert got.value("prefork_worker_restarts_total", reason="memory") == 1  # reasons plug in
        assert {dict(k)["reason"] for k in got.matching("prefork_worker_restarts_total")} >= \
            set(RESTART_REASONS)
        assert got.value("process_cpu_seconds_total") == 1.25
        assert got.value("prefork_info", version="9.9", worker_class="sync") == 1


def test_label_values_and_help_are_escaped():
    out = Exposition()
    out.gauge("x", 'help with \\ and\nnewline', [((("l", 'a"b\\c\nd'),), 1.5)])
    text = out.render().decode()
    assert '# HELP x help with \\\\ and\\nnewline' in text
    assert 'x{l="a\\"b\\\\c\\nd"} 1.5' in text
    assert Scrape(text).value("x", l='a"b\\c\nd') == 1.5
    assert [format_value(v) for v in (3, 0.5, float("inf"), float("nan"))] == ["3", "0.5", "+Inf", "NaN"]


@pytest.mark.skipif(not LINUX, reason="the kernel's figures are read on Linux only")
def test_tcp_queue_figures():
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(7)
    clients = [socket.create_connection(server.getsockname()) for _ in range(3)]
    try:
        deadline = time.monotonic() + 5
        while listen_queue.tcp_queue(server).length < 3 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert listen_queue.tcp_queue(server) == listen_queue.QueueFigures(3, 7)
        inode = listen_queue.socket_inode(server)
        port = server.getsockname()[1]
        assert listen_queue.tcp_queues_by_inode([inode]) == {
            inode: (port, listen_queue.QueueFigures(3, 7))}
        server.accept()[0].close()
        assert listen_queue.tcp_queue(server).length == 2
    finally:
        for c in clients:
            c.close()
        server.close()


@pytest.mark.skipif(not LINUX, reason="the kernel's figures are read on Linux only")
def test_unix_queue_figures_from_netlink_and_from_proc(tmp_path):
    path = str(tmp_path / "q.sock")
    server = socket.socket(socket.AF_UNIX)
    server.bind(path)
    server.listen(5)
    clients = []
    try:
        for _ in range(2):
            c = socket.socket(socket.AF_UNIX)
            c.connect(path)
            clients.append(c)
        inode = listen_queue.socket_inode(server)
        assert listen_queue.unix_queues([inode]) == {inode: listen_queue.QueueFigures(2, 5)}
        # The fallback counts the same connections; it cannot know the limit.
        assert listen_queue._proc_net_unix({inode: path}) == {inode: listen_queue.QueueFigures(2, None)}
        server.accept()[0].close()
        assert listen_queue.unix_queues([inode])[inode].length == 1
    finally:
        for c in clients:
            c.close()
        server.close()


def test_a_socket_that_does_not_listen_has_no_figures():
    sock = socket.socket()
    try:
        assert listen_queue.tcp_queue(sock) is None
    finally:
        sock.close()


@pytest.mark.skipif(not LINUX, reason="reads /proc")
def test_the_inodes_of_a_process_s_sockets():
    sock = socket.socket()
    try:
        assert listen_queue.socket_inode(sock) in listen_queue.process_socket_inodes(os.getpid())
    finally:
        sock.close()
