# A worker's heartbeat slot: one small file per worker, created by the master
# before the fork in ``worker_tmp_dir`` and unlinked at once, then mapped
# shared by both processes. The worker writes (a timestamp, its state, its
# request count, the request in progress), the master only reads. Writing is a
# store into shared memory, not a system call, so beating on every request
# costs well under a microsecond. This one file is how timeouts are found and
# how a stuck worker's request is reported, without any other IPC.
from __future__ import annotations

import errno
import mmap
import os
import struct
import tempfile
import time

BOOTING, IDLE, BUSY, STOPPING = 0, 1, 2, 3

_BEAT = struct.Struct("=d")  # offset 0: last beat, time.monotonic()
_STATE = struct.Struct("=B")  # offset 8
_COUNT = struct.Struct("=Q")  # offset 16: requests served
_STARTED = struct.Struct("=d")  # offset 24: start of the request in progress
_IDLE = struct.Struct("=dBxxxxxxxQd")  # offsets 0..31 written together
_BUSY = struct.Struct("=dBxxxxxxxQdH")  # the same, and the line's length at 32
_LINE_LEN = struct.Struct("=H")  # offset 32
_RETIRE = struct.Struct("=Q")  # offset 1016: request count at which the worker asked to go
LINE_OFFSET = 34
LINE_MAX = 1016 - LINE_OFFSET
ERROR_LEN_OFFSET = 1024
ERROR_OFFSET = 1028
SIZE = 16384


def beat_interval(timeout: float) -> float:
    """How often an idle worker beats: often enough for any ``--timeout``."""
    return min(1.0, timeout / 4) if timeout else 1.0


def default_tmp_dir() -> str:
    """Memory-backed when possible, so beats never touch a disk."""
    if os.path.isdir("/dev/shm") and os.access("/dev/shm", os.W_OK):
        return "/dev/shm"
    return tempfile.gettempdir()


class HeartbeatSlot:
    """The shared scoreboard slot of one worker."""

    def __init__(self, tmp_dir: str | None) -> None:
        fd, path = tempfile.mkstemp(prefix="prefork-", dir=tmp_dir or default_tmp_dir())
        try:
            os.unlink(path)
            _allocate(fd, SIZE)
            self._map = mmap.mmap(fd, SIZE, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE)
        finally:
            os.close(fd)
        self.beat()

    # --- written by the worker

    def beat(self) -> None:
        _BEAT.pack_into(self._map, 0, time.monotonic())

    def set_state(self, state: int) -> None:
        _STATE.pack_into(self._map, 8, state)
        self.beat()

    def start_request(self, line: str, requests: int) -> None:
        now = time.monotonic()
        data = line.encode("latin-1", "replace")[:LINE_MAX]
        mm = self._map
        mm[LINE_OFFSET:LINE_OFFSET + len(data)] = data
        _BUSY.pack_into(mm, 0, now, BUSY, requests, now, len(data))

    def end_request(self, requests: int) -> None:
        _IDLE.pack_into(self._map, 0, time.monotonic(), IDLE, requests, 0.0)

    def ask_to_retire(self, requests: int) -> None:
        """The worker reached its request quota: replace it (it keeps serving until then)."""
        _RETIRE.pack_into(self._map, 1016, requests)

    def write_error(self, text: str) -> None:
        """Leave an error message for the master (e.g. why the app failed to load)."""
        data = text.encode("utf-8", "replace")[: SIZE - ERROR_OFFSET]
        self._map[ERROR_OFFSET:ERROR_OFFSET + len(data)] = data
        struct.pack_into("=I", self._map, ERROR_LEN_OFFSET, len(data))

    # --- read by the master

    def last_beat(self) -> float:
        return float(_BEAT.unpack_from(self._map, 0)[0])

    def state(self) -> int:
        return int(_STATE.unpack_from(self._map, 8)[0])

    def requests(self) -> int:
        return int(_COUNT.unpack_from(self._map, 16)[0])

    def current_request(self) -> tuple[str, float] | None:
        """The request line in progress and when it started, if busy."""
        if self.state() != BUSY:
            return None
        started = float(_STARTED.unpack_from(self._map, 24)[0])
        length = min(int(_LINE_LEN.unpack_from(self._map, 32)[0]), LINE_MAX)
        line = bytes(self._map[LINE_OFFSET:LINE_OFFSET + length]).decode("latin-1")
        return line, started

    def retire_requested(self) -> int:
        """Non-zero (the request count) once the worker has asked to be replaced."""
        return int(_RETIRE.unpack_from(self._map, 1016)[0])

    def error(self) -> str:
        length = struct.unpack_from("=I", self._map, ERROR_LEN_OFFSET)[0]
        length = min(length, SIZE - ERROR_OFFSET)
        return bytes(self._map[ERROR_OFFSET:ERROR_OFFSET + length]).decode("utf-8", "replace")

    def close(self) -> None:
        self._map.close()


def _allocate(fd: int, size: int) -> None:
    """Reserve the file's blocks now: on a full tmpfs a sparse file would make
    the first write through the mapping a SIGBUS instead of an OSError here."""
    try:
        os.posix_fallocate(fd, 0, size)
    except (AttributeError, OSError) as exc:
        if isinstance(exc, OSError) and exc.errno not in (errno.EOPNOTSUPP, errno.EINVAL):
            raise
        os.ftruncate(fd, size)
