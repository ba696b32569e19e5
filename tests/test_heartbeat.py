"""The scoreboard slot: its API, and reads that are never torn while another
process writes as fast as it can (real processes sharing the real mapping);
end to end, a server under load whose master is flooded with SIGCHLD."""

import http.client
import os
import re
import signal
import subprocess
import sys
import threading
import time

import pytest
from conftest import wait_until

from prefork.heartbeat import (
    BOOTING,
    BUSY,
    COUNTER_WORDS,
    IDLE,
    LINE_MAX,
    STOPPING,
    HeartbeatSlot,
    RequestInProgress,
    slot_size,
)

WRITE_SECONDS = 2.0
LINE = re.compile(r"GET /(\d+)/(\d+)/([ab]*) HTTP/1\.1")


def request_line(thread, i):
    """A line that says which write it belongs to: its length and filler
    depend on ``i``, so a line mixed from two writes, or cut at another
    write's length, does not check out."""
    return f"GET /{thread}/{i}/{'ab'[i % 2] * (i % 700)} HTTP/1.1"


def check_line(record):
    match = LINE.fullmatch(record.line)
    assert match, f"torn request line: {record!r}"
    thread, i, filler = int(match[1]), int(match[2]), match[3]
    assert thread == record.thread, record
    assert filler == "ab"[i % 2] * (i % 700), f"line mixed from two writes: {record!r}"
    return i


@pytest.fixture
def slot():
    slot = HeartbeatSlot(None)
    yield slot
    slot.close()


@pytest.fixture
def writer():
    """Fork a process running ``write(slot)`` until a deadline; kill it at teardown."""
    pids = []

    def start(slot, write):
        pid = os.fork()
        if pid == 0:
            code = 1
            try:
                write(slot, time.monotonic() + WRITE_SECONDS)
                code = 0
            finally:
                os._exit(code)
        pids.append(pid)
        return pid

    yield start
    for pid in pids:
        try:
            if os.waitpid(pid, os.WNOHANG)[0] == 0:  # still running: never reaped, so still ours
                os.kill(pid, signal.SIGKILL)
                os.waitpid(pid, 0)
        except ChildProcessError:
            pass  # the test reaped it


def exited_ok(pid):
    reaped, status = os.waitpid(pid, os.WNOHANG)
    return reaped == pid and os.waitstatus_to_exitcode(status) == 0


def write_requests(slot, deadline, thread=0):
    """Beat and start/end requests as fast as possible, checking the clock
    only every 256 requests."""
    i = 0
    while True:
        i += 1
        slot.start_request(request_line(thread, i), i, thread)
        slot.counters(thread)[0] += 1
        slot.beat()
        slot.end_request(i, thread)
        if i % 256 == 0 and time.monotonic() > deadline:
            return


def write_from_threads(slot, deadline):
    threads = [threading.Thread(target=write_requests, args=(slot, deadline, t))
               for t in range(slot.threads)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()


class Checker:
    """Reads the slot the way the master does and fails on any value that
    could not have been written."""

    def __init__(self, slot):
        self.slot = slot
        self.reads = 0
        self.last = {}  # thread -> (i, started) of the last request seen
        self.seen = set()
        self.served = 0
        self.counted = 0

    def read(self):
        slot = self.slot
        created = slot.created
        # The beat is what decides a timeout: read it most.
        beats = [slot.last_beat() for _ in range(16)]
        state = slot.state()
        records = slot.requests_in_progress()
        served = slot.requests()
        now = time.monotonic()
        for beat in beats:
            assert created <= beat <= now, f"torn beat {beat!r} (created {created}, now {now})"
        assert state in (IDLE, BUSY), f"impossible state {state!r}"
        assert served >= self.served, f"request count went back from {self.served} to {served}"
        self.served = served
        if self.reads % 64 == 0:
            counted = slot.counter_totals()[0]
            assert counted >= self.counted, f"counter went back from {self.counted} to {counted}"
            self.counted = counted
        for record in records:
            assert slot.created <= record.started <= now, f"torn start time: {record!r}"
            i = check_line(record)
            last_i, last_started = self.last.get(record.thread, (0, 0.0))
            if i == last_i:
                assert record.started == last_started, f"one request, two start times: {record!r}"
            else:
                assert i > last_i and record.started >= last_started, record
            self.last[record.thread] = (i, record.started)
            self.seen.add((record.thread, i))
        self.reads += len(beats) + 2

    def run_until_exit(self, pid):
        """Read until the writer exits (it stops at its own deadline); its exit status."""
        while True:
            for _ in range(1000):
                self.read()
            reaped, status = os.waitpid(pid, os.WNOHANG)
            if reaped == pid:
                return os.waitstatus_to_exitcode(status)


def test_reads_are_never_torn_while_a_process_writes(slot, writer):
    slot.set_state(IDLE)
    pid = writer(slot, write_requests)
    checker = Checker(slot)
    assert checker.run_until_exit(pid) == 0
    checker.read()
    # The reads overlapped many writes, or the test proved nothing.
    assert len(checker.seen) > 20, (checker.reads, len(checker.seen))
    assert slot.requests() >= 256 and slot.counter_totals()[0] == slot.requests()


def test_per_thread_records_are_never_torn(writer):
    slot = HeartbeatSlot(None, threads=4)
    try:
        slot.set_state(IDLE)
        pid = writer(slot, write_from_threads)
        checker = Checker(slot)
        assert checker.run_until_exit(pid) == 0
        checker.read()
        assert {thread for thread, _ in checker.seen} == {0, 1, 2, 3}
        assert len(checker.seen) > 20
        # every thread counted its own requests; the totals add them up
        assert slot.counter_totals()[0] == sum(slot.counters(t)[0] for t in range(4))
        assert slot.counter_totals()[0] >= 4 * 256
    finally:
        slot.close()


def test_a_writer_cut_short_holds_no_reader_up(slot):
    """A writer stopped in the middle of a record (descheduled, killed, or in a
    signal handler that reads its own slot) is busy with the copy that is not
    published: readers still see the last request whole."""
    slot.start_request("GET /first HTTP/1.1", 1)
    q = memoryview(slot._map).cast("Q")
    version_word, copies = 8, (16, 140)  # the first thread's record
    try:
        unpublished = copies[(q[version_word] + 1) % 2]
        q[unpublished] += 1  # its sequence: odd, as in the middle of a write
        assert slot.current_request()[0] == "GET /first HTTP/1.1"
        slot.start_request("GET /next HTTP/1.1", 2)  # the next write repairs it
        assert slot.current_request()[0] == "GET /next HTTP/1.1"
        assert q[unpublished] % 2 == 0
        # A published copy that never reads consistent (a reader lapped again
        # and again) is reported after bounded retries, without its line.
        q[copies[q[version_word] % 2]] += 1
        (record,) = slot.requests_in_progress()
        assert record.line == "" and record.started > 0
    finally:
        q.release()


# --- the API


def test_a_new_slot(slot):
    assert slot.threads == 1
    assert slot.state() == BOOTING
    assert slot.requests() == 0
    assert slot.current_request() is None
    assert slot.requests_in_progress() == []
    assert slot.busy_threads() == 0
    assert slot.retire_requested() == 0
    assert slot.error() == ""
    assert slot.counter_totals() == [0] * COUNTER_WORDS
    assert slot.created <= slot.last_beat() <= time.monotonic()


def test_a_request_in_progress(slot):
    slot.set_state(IDLE)
    before = time.monotonic()
    slot.start_request("GET /x HTTP/1.1", 1)
    assert slot.state() == BUSY
    assert slot.busy_threads() == 1
    line, started = slot.current_request()
    assert line == "GET /x HTTP/1.1" and before <= started <= time.monotonic()
    assert slot.last_beat() == started
    slot.end_request(1)
    assert slot.state() == IDLE
    assert slot.current_request() is None
    assert slot.requests() == 1


def test_long_and_non_latin1_lines(slot):
    slot.start_request("GET /" + "x" * 5000 + " HTTP/1.1", 1)
    assert len(slot.current_request()[0]) == LINE_MAX
    slot.start_request("GET /caf\u00e9/\u20ac HTTP/1.1", 2)
    assert slot.current_request()[0] == "GET /caf\u00e9/? HTTP/1.1"


def test_threads_have_their_own_records():
    slot = HeartbeatSlot(None, threads=4)
    try:
        slot.set_state(IDLE)
        slot.start_request("GET /two HTTP/1.1", 1, thread=2)
        time.sleep(0.001)  # distinct start times, so "oldest" means something
        slot.start_request("GET /zero HTTP/1.1", 2, thread=0)
        assert slot.state() == BUSY
        assert slot.busy_threads() == 2
        in_progress = slot.requests_in_progress()
        assert [(r.thread, r.line) for r in in_progress] == [(0, "GET /zero HTTP/1.1"),
                                                               (2, "GET /two HTTP/1.1")]
        assert all(isinstance(r, RequestInProgress) for r in in_progress)
        assert slot.current_request()[0] == "GET /two HTTP/1.1"  # the oldest
        slot.end_request(2, thread=2)
        assert slot.current_request()[0] == "GET /zero HTTP/1.1"
        assert slot.state() == BUSY  # thread 0 still works
        slot.end_request(2, thread=0)
        assert slot.state() == IDLE
        assert slot.requests() == 2
    finally:
        slot.close()


def test_counters_per_thread_and_totals():
    slot = HeartbeatSlot(None, threads=4)
    try:
        blocks = [slot.counters(t) for t in range(4)]
        assert all(b.format == "Q" and len(b) == COUNTER_WORDS for b in blocks)
        assert all(b.tolist() == [0] * COUNTER_WORDS for b in blocks)
        for t, block in enumerate(blocks):
            block[0] += t + 1
            block[COUNTER_WORDS - 1] = 10**12
        blocks[3][7] = 5
        totals = slot.counter_totals()
        assert totals[0] == 1 + 2 + 3 + 4
        assert totals[7] == 5
        assert totals[COUNTER_WORDS - 1] == 4 * 10**12
        assert sum(totals) == 10 + 5 + 4 * 10**12  # no block overlaps another
    finally:
        slot.close()


def test_counters_do_not_overlap_records_or_errors():
    slot = HeartbeatSlot(None, threads=2)
    try:
        for t in range(2):
            block = slot.counters(t)
            for index in range(COUNTER_WORDS):
                block[index] = 2**64 - 1
        slot.start_request("GET /a HTTP/1.1", 1, thread=1)
        slot.write_error("boom")
        assert slot.current_request()[0] == "GET /a HTTP/1.1"
        assert slot.error() == "boom"
        assert slot.retire_requested() == 0
        assert slot.state() == BOOTING
        assert slot.counter_totals() == [2 * (2**64 - 1)] * COUNTER_WORDS
    finally:
        slot.close()


def test_states_retire_and_error(slot):
    slot.set_state(STOPPING)
    assert slot.state() == STOPPING
    slot.ask_to_retire(42)
    assert slot.retire_requested() == 42
    slot.write_error("caf\u00e9 " + "x" * 50000)
    assert slot.error().startswith("caf\u00e9 x")
    assert len(slot.error().encode()) <= slot.size


def test_slot_size_grows_with_threads_in_pages():
    page = os.sysconf("SC_PAGE_SIZE")
    sizes = [slot_size(n) for n in (1, 4, 64)]
    assert all(size % page == 0 for size in sizes)
    assert sizes[0] < sizes[1] < sizes[2]
    assert slot_size(64) >= 64 * (COUNTER_WORDS * 8 + 1024)
    with pytest.raises(ValueError):
        HeartbeatSlot(None, threads=0)


def test_the_worker_sees_what_it_wrote_and_the_master_too(slot, writer):
    """One mapping, shared across the fork."""
    def write(slot, deadline):
        slot.set_state(IDLE)
        slot.start_request("GET /from-child HTTP/1.1", 7)

    pid = writer(slot, write)
    assert wait_until(lambda: exited_ok(pid), 5)
    assert slot.state() == BUSY
    assert slot.current_request()[0] == "GET /from-child HTTP/1.1"
    assert slot.requests() == 7


def test_close_with_a_counter_view_still_held(slot):
    block = slot.counters()
    slot.close()
    with pytest.raises(ValueError):
        block[0] += 1  # released: no write into an unmapped slot


# --- end to end

FLOOD = """
import os, sys, time
pid, seconds = int(sys.argv[1]), float(sys.argv[2])
deadline, sent = time.monotonic() + seconds, 0
while time.monotonic() < deadline:
    for _ in range(100):
        os.kill(pid, {sig})
    sent += 100
print(sent)
"""


def get_until(url_port, stop, results):
    """One request per connection (no keep-alive here), until ``stop`` is set."""
    while not stop.is_set():
        conn = http.client.HTTPConnection("127.0.0.1", url_port, timeout=10)
        try:
            conn.request("GET", "/", headers={"Connection": "close"})
            response = conn.getresponse()
            results.append(response.status if response.read() == b"hello" else response.status + 1000)
        except (OSError, http.client.HTTPException) as exc:
            results.append(repr(exc))
        finally:
            conn.close()


def test_sigchld_flood_under_load_kills_no_healthy_worker(test_app):
    """Woken thousands of times a second, the master reads every worker's beat
    as often: not one read may look like a timeout."""
    server = test_app("basic:hello", workers=2, timeout=10)
    workers = server.worker_pids()
    stop, results = threading.Event(), []
    clients = [threading.Thread(target=get_until, args=(server.port, stop, results)) for _ in range(3)]
    for client in clients:
        client.start()
    flood = subprocess.Popen(
        [sys.executable, "-c", FLOOD.format(sig=int(signal.SIGCHLD)), str(server.master_pid), "4"],
        stdout=subprocess.PIPE, text=True)
    try:
        sent = int(flood.communicate(timeout=30)[0])
    finally:
        flood.kill()
        flood.wait(5)
        stop.set()
        for client in clients:
            client.join(15)
    log = server.log_text()
    assert sent > 1000
    assert "WORKER TIMEOUT" not in log
    assert server.worker_pids() == workers, log
    assert "exited" not in log and "died" not in log, log
    assert len(results) > 10 and set(results) == {200}, sorted(set(map(str, results)))
