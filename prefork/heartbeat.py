# A worker's heartbeat slot: one small file per worker, created by the master
# before the fork in ``worker_tmp_dir`` and unlinked at once, then mapped
# shared by both processes. The worker writes (a timestamp, its state, the
# requests in progress, its counters), the master only reads. Writing is a
# store into shared memory, not a system call, so beating on every request
# costs well under a microsecond. This one file is how timeouts are found and
# how a stuck worker's request is reported, without any other IPC.
#
# The master reads while the worker writes, so nothing it reads may ever be
# seen half-written (``struct.pack_into`` zeroes its target before filling it:
# a reader could see a beat of 0.0 and take a healthy worker for a stuck one).
# Strategy:
#
# * every field is an aligned 8-byte word, written by element assignment
#   through ``memoryview(map).cast("Q")`` or ``.cast("d")``: CPython copies the
#   one element with a fixed-size 8-byte memcpy, a single store, which an
#   aligned load on the other side sees whole (old or new, never a mix);
# * a request record (start time, line length, line bytes) is more than one
#   word, so each thread's record is double-buffered: the writer fills the
#   copy that is not published, under that copy's sequence counter (a
#   seqlock: odd while it writes, even when the copy is consistent), then
#   publishes it by storing the new version number, one word. A reader keeps
#   what it read of the published copy only if that copy's counter was even
#   and unchanged around the read; it retries a bounded number of times. A
#   writer that is descheduled, or killed, in the middle of a record is busy
#   with the other copy, so it never holds a reader up. The ordering this
#   relies on (stores, and loads, seen in program order) is that of x86-64;
#   on weakly ordered CPUs a record may rarely read mixed, which only affects
#   what is reported: the master never decides a timeout on a record (beats
#   and state are single words, and it re-reads a stale beat before acting);
# * each thread of a worker has its own request record and its own block of
#   counters, so no word has two writers.
#
# Layout, in 8-byte words: a header (beat, state, retire request, error
# length), then one request record per thread, one counter block per thread,
# and the error area; the whole rounded up to pages.
from __future__ import annotations

import errno
import mmap
import os
import tempfile
import time
from typing import Any, NamedTuple

BOOTING, IDLE, BUSY, STOPPING = 0, 1, 2, 3

COUNTER_WORDS = 256  # per thread; what each index counts is the metrics' business

_WORD = 8
# Header words.
_BEAT = 0  # float: last beat, time.monotonic()
_STATE = 1  # BOOTING / IDLE / STOPPING (BUSY is derived from the records)
_RETIRE = 2  # the request count at which the worker asked to be replaced
_ERROR_LEN = 3
_HEADER_WORDS = 8
# A thread's request record: its words from the record's first word, then
# two copies of the request, at the word offsets in _COPIES.
_VERSION = 0  # how many requests were published; the current copy is version % 2
_SERVED = 1  # requests this worker had served when this thread last started or ended one
_COPIES = (8, 8 + 124)
RECORD_BYTES = 2048
# A copy's words, from its first word.
_SEQ = 0  # odd while the copy is being written
_STARTED = 1  # float: start of the request in progress; 0.0 when none
_LINE_LEN = 2
_LINE_WORD = 3  # the request line's bytes start here
LINE_MAX = (_COPIES[1] - _COPIES[0] - _LINE_WORD) * _WORD
ERROR_MAX = 15 * 1024
# A reader lapped this many times in a row by a writer (two records written
# during one read) reports the request without its line.
READ_ATTEMPTS = 100


class RequestInProgress(NamedTuple):
    thread: int
    line: str
    started: float  # time.monotonic()


def beat_interval(timeout: float) -> float:
    """How often an idle worker beats: often enough for any ``--timeout``."""
    return min(1.0, timeout / 4) if timeout else 1.0


def default_tmp_dir() -> str:
    """Memory-backed when possible, so beats never touch a disk."""
    if os.path.isdir("/dev/shm") and os.access("/dev/shm", os.W_OK):
        return "/dev/shm"
    return tempfile.gettempdir()


def slot_size(threads: int) -> int:
    """Bytes of a slot with ``threads`` request records, rounded up to pages."""
    used = _HEADER_WORDS * _WORD + threads * (RECORD_BYTES + COUNTER_WORDS * _WORD) + ERROR_MAX
    page = mmap.PAGESIZE
    return -(-used // page) * page


class HeartbeatSlot:
    """The shared scoreboard slot of one worker with ``threads`` threads."""

    def __init__(self, tmp_dir: str | None, threads: int = 1) -> None:
        if threads < 1:
            raise ValueError(f"a slot needs at least one thread, not {threads}")
        self.threads = threads
        self.size = slot_size(threads)
        # Python opens the file close-on-exec, and it is closed as soon as it
        # is mapped: an exec'd child never holds it.
        fd, path = tempfile.mkstemp(prefix="prefork-", dir=tmp_dir or default_tmp_dir())
        try:
            os.unlink(path)
            _allocate(fd, self.size)
            self._map = mmap.mmap(fd, self.size, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE)
        finally:
            os.close(fd)
        self._bytes = memoryview(self._map)
        self._q = self._bytes.cast("Q")
        self._d = self._bytes.cast("d")
        self._records = [_HEADER_WORDS + t * (RECORD_BYTES // _WORD) for t in range(threads)]
        counters_at = _HEADER_WORDS + threads * (RECORD_BYTES // _WORD)
        self._counters = [self._q[counters_at + t * COUNTER_WORDS:counters_at + (t + 1) * COUNTER_WORDS]
                          for t in range(threads)]
        self._error_at = (counters_at + threads * COUNTER_WORDS) * _WORD
        self.created = time.monotonic()  # no genuine beat is older
        self._d[_BEAT] = self.created

    # --- written by the worker

    def beat(self) -> None:
        self._d[_BEAT] = time.monotonic()

    def set_state(self, state: int) -> None:
        self._q[_STATE] = state
        self.beat()

    def start_request(self, line: str, requests: int, thread: int = 0) -> None:
        now = time.monotonic()
        data = line.encode("latin-1", "replace")[:LINE_MAX]
        q = self._q
        at = self._records[thread]
        version = q[at + _VERSION] + 1
        copy = at + _COPIES[version % 2]
        odd = q[copy + _SEQ] + 1 | 1  # odd, even after a write that was cut short
        q[copy + _SEQ] = odd
        self._d[copy + _STARTED] = now
        q[copy + _LINE_LEN] = len(data)
        start = (copy + _LINE_WORD) * _WORD
        self._bytes[start:start + len(data)] = data
        q[copy + _SEQ] = odd + 1
        q[at + _VERSION] = version
        q[at + _SERVED] = requests
        self._d[_BEAT] = now

    def end_request(self, requests: int, thread: int = 0) -> None:
        # One word of the published copy changes: a reader sees the whole
        # request that ended, or no request.
        at = self._records[thread]
        self._d[at + _COPIES[self._q[at + _VERSION] % 2] + _STARTED] = 0.0
        self._q[at + _SERVED] = requests
        self._d[_BEAT] = time.monotonic()

    def counters(self, thread: int = 0) -> memoryview:
        """Thread ``thread``'s COUNTER_WORDS counters (format 'Q'), zeroed at
        creation; only that thread may write them."""
        return self._counters[thread]

    def ask_to_retire(self, requests: int) -> None:
        """The worker reached its request quota: replace it (it keeps serving until then)."""
        self._q[_RETIRE] = requests

    def write_error(self, text: str) -> None:
        """Leave an error message for the master (e.g. why the app failed to load)."""
        data = text.encode("utf-8", "replace")[:ERROR_MAX]
        self._bytes[self._error_at:self._error_at + len(data)] = data
        self._q[_ERROR_LEN] = len(data)

    # --- read by the master

    def last_beat(self) -> float:
        return float(self._d[_BEAT])

    def state(self) -> int:
        """BOOTING, IDLE, BUSY (some thread is in a request) or STOPPING."""
        state = int(self._q[_STATE])
        if state == IDLE and self.busy_threads():
            return BUSY
        return state

    def requests(self) -> int:
        """Requests served (the highest count any thread has published)."""
        q = self._q
        return max(int(q[at + _SERVED]) for at in self._records)

    def busy_threads(self) -> int:
        """How many threads are in a request now."""
        q, d = self._q, self._d
        return sum(1 for at in self._records
                   if d[at + _COPIES[q[at + _VERSION] % 2] + _STARTED] != 0.0)

    def requests_in_progress(self) -> list[RequestInProgress]:
        """Every request in progress, by thread."""
        found = (self._read_record(thread) for thread in range(self.threads))
        return [record for record in found if record is not None]

    def current_request(self) -> tuple[str, float] | None:
        """The oldest request in progress: its line and when it started."""
        records = self.requests_in_progress()
        if not records:
            return None
        oldest = min(records, key=lambda record: record.started)
        return oldest.line, oldest.started

    def counter_totals(self) -> list[int]:
        """Each counter summed over the threads."""
        totals = self._counters[0].tolist()
        for block in self._counters[1:]:
            totals = [a + b for a, b in zip(totals, block.tolist(), strict=True)]
        return totals

    def retire_requested(self) -> int:
        """Non-zero (the request count) once the worker has asked to be replaced."""
        return int(self._q[_RETIRE])

    def error(self) -> str:
        length = min(int(self._q[_ERROR_LEN]), ERROR_MAX)
        return bytes(self._bytes[self._error_at:self._error_at + length]).decode("utf-8", "replace")

    def close(self) -> None:
        views: list[memoryview[Any]] = [*self._counters, self._q, self._d, self._bytes]
        for view in views:
            view.release()
        try:
            self._map.close()
        except BufferError:
            pass  # a caller still holds a view: the mapping goes with the last one

    def _read_record(self, thread: int) -> RequestInProgress | None:
        q, d = self._q, self._d
        at = self._records[thread]
        for _ in range(READ_ATTEMPTS):
            copy = at + _COPIES[q[at + _VERSION] % 2]
            seq = q[copy + _SEQ]
            started = d[copy + _STARTED]
            length = min(int(q[copy + _LINE_LEN]), LINE_MAX)
            start = (copy + _LINE_WORD) * _WORD
            line = bytes(self._bytes[start:start + length])
            if not seq & 1 and q[copy + _SEQ] == seq:
                if started == 0.0:
                    return None
                return RequestInProgress(thread, line.decode("latin-1"), float(started))
        started = d[copy + _STARTED]  # one word: whole, though the line may not be
        return RequestInProgress(thread, "", float(started)) if started else None


def _allocate(fd: int, size: int) -> None:
    """Reserve the file's blocks now: on a full tmpfs a sparse file would make
    the first write through the mapping a SIGBUS instead of an OSError here."""
    try:
        os.posix_fallocate(fd, 0, size)
    except (AttributeError, OSError) as exc:
        if isinstance(exc, OSError) and exc.errno not in (errno.EOPNOTSUPP, errno.EINVAL):
            raise
        os.ftruncate(fd, size)
