# The request counters every worker keeps in its scoreboard slot, and what the
# master makes of them. Each worker thread owns one block of ``COUNTER_WORDS``
# unsigned 64-bit words (``HeartbeatSlot.counters(thread)``) and is its only
# writer; the master only reads. Every update is one aligned 8-byte store into
# shared memory, so a reader sees each word before or after it, never torn,
# and the request path takes no lock and makes no system call.
#
# A block, word by word:
#
#   [0, 15)    request durations, one word per histogram bucket (not cumulative;
#              the last is "above 30 s")
#   15         the sum of the durations, in microseconds
#   16         requests the worker itself gave up on for taking too long
#   [17, 32)   reserved
#   [32, 256)  (key, count) pairs: requests by status and method, and errors
#              the server answered by itself, by status. A thread claims the
#              next free pair the first time it meets a key, writing the key
#              before it ever counts; a reader skips pairs whose key is 0. The
#              last two pairs take what no longer fits, as status "other".
#
# Pairs rather than a fixed code × method grid: any status an application
# returns is counted under its own number, in a block that stays small.
# The master sums the blocks of live workers when it is asked, and adds the
# blocks of workers that have exited into its own ``Totals`` when it reaps
# them, so every count only ever grows for the life of the master.
from __future__ import annotations

from bisect import bisect_left
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from .heartbeat import COUNTER_WORDS
from .listen_queue import QueueFigures

# Upper bounds (seconds) of the duration histogram's buckets.
BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
HISTOGRAM = 0
DURATION_SUM_US = len(BUCKETS) + 1
TIMEOUTS = DURATION_SUM_US + 1
PAIRS = 32
PAIR_SLOTS = (COUNTER_WORDS - PAIRS) // 2
_OVERFLOW = PAIRS + 2 * (PAIR_SLOTS - 2)  # the first of the two overflow pairs

# The request methods of RFC 9110 §9 and PATCH (RFC 5789); any other is OTHER.
METHODS = ("GET", "HEAD", "POST", "PUT", "DELETE", "CONNECT", "OPTIONS", "TRACE", "PATCH")
OTHER_METHOD = "OTHER"
_METHOD_INDEX = {name: i for i, name in enumerate(METHODS)}
_OTHER_INDEX = len(METHODS)
_LABELS = (*METHODS, OTHER_METHOD)

# The kind of count a pair holds, in the key's high bits: key = kind | code << 4 | method.
ANSWERED = 1 << 20
REJECTED = 2 << 20
_KIND_MASK = 0xF << 20

# Why a worker was replaced: the ``reason`` label of prefork_worker_restarts_total
# and the word in the log line of its exit. The master's policies name the
# reason when they retire a worker; an exit nobody asked for is a crash (the
# worker failed) or a signal (something outside prefork stopped it).
CRASH = "crash"
TIMEOUT = "timeout"
MAX_REQUESTS = "max_requests"
LIFETIME = "lifetime"
MEMORY = "memory"
RELOAD = "reload"
SIGNAL = "signal"
RESTART_REASONS = (CRASH, TIMEOUT, MAX_REQUESTS, LIFETIME, MEMORY, RELOAD, SIGNAL)
# Exits that are not replacements: fewer workers wanted, the server stopping,
# a new generation abandoned because its application would not load.
SCALE_DOWN = "scale_down"
STOP = "stop"
RELOAD_FAILED = "reload_failed"


def method_label(method: str) -> str:
    """The ``method`` label of a request method: itself if standard, else OTHER."""
    return method if method in _METHOD_INDEX else OTHER_METHOD


class RequestCounters:
    """The worker side: one thread's block, counted into at the end of each request."""

    __slots__ = ("_words", "_index", "_free")

    def __init__(self, words: memoryview) -> None:
        self._words = words
        self._index: dict[int, int] = {}  # key -> position of its count
        self._free = PAIRS
        for at in range(PAIRS, COUNTER_WORDS, 2):  # a block that already holds counts
            key = words[at]
            if key:
                self._index[key] = at + 1
                self._free = max(self._free, min(at + 2, _OVERFLOW))

    def request(self, method: str, code: int, seconds: float) -> None:
        """A request answered with ``code`` after ``seconds``."""
        words = self._words
        key = ANSWERED | (code & 0x3FF) << 4 | _METHOD_INDEX.get(method, _OTHER_INDEX)
        at = self._index.get(key) or self._claim(key)
        words[at] += 1
        words[bisect_left(BUCKETS, seconds)] += 1
        words[DURATION_SUM_US] += int(seconds * 1_000_000)

    def rejected(self, code: int) -> None:
        """An error the server answered by itself (a malformed request, a body too large)."""
        key = REJECTED | (code & 0x3FF) << 4
        at = self._index.get(key) or self._claim(key)
        self._words[at] += 1

    def timed_out(self) -> None:
        self._words[TIMEOUTS] += 1

    def _claim(self, key: int) -> int:
        words = self._words
        if self._free < _OVERFLOW:
            at = self._free
            self._free += 2
        else:  # full: the overflow pair of this kind, code 0 ("other")
            at = _OVERFLOW if key & _KIND_MASK == ANSWERED else _OVERFLOW + 2
            key &= _KIND_MASK
            if key in self._index:
                return self._index[key]
        words[at] = key
        self._index[key] = at + 1
        return at + 1


class Totals:
    """The master side: counts summed over blocks (live workers, exited ones)."""

    __slots__ = ("fixed", "pairs")

    def __init__(self) -> None:
        self.fixed = [0] * PAIRS
        self.pairs: dict[int, int] = {}

    def copy(self) -> Totals:
        other = Totals()
        other.fixed = list(self.fixed)
        other.pairs = dict(self.pairs)
        return other

    def add_block(self, words: Sequence[int]) -> None:
        """Add one thread's block (a copy of its words: ``memoryview.tolist()``)."""
        fixed = self.fixed
        for i in range(PAIRS):
            fixed[i] += words[i]
        pairs = self.pairs
        for key, count in zip(words[PAIRS::2], words[PAIRS + 1::2], strict=True):
            if key:
                pairs[key] = pairs.get(key, 0) + count

    def add_blocks(self, blocks: Iterable[Sequence[int]]) -> None:
        for words in blocks:
            self.add_block(words)

    def add(self, other: Totals) -> None:
        for i, value in enumerate(other.fixed):
            self.fixed[i] += value
        for key, count in other.pairs.items():
            self.pairs[key] = self.pairs.get(key, 0) + count

    # --- what the counts mean

    def requests(self) -> dict[tuple[str, str], int]:
        """Answered requests by (status, method label); status "other" for overflow."""
        result: dict[tuple[str, str], int] = {}
        for key, count in self.pairs.items():
            if key & _KIND_MASK == ANSWERED:
                code = _code_label(key)
                method = _LABELS[min(key & 0xF, _OTHER_INDEX)] if code != "other" else OTHER_METHOD
                label = (code, method)
                result[label] = result.get(label, 0) + count
        return result

    def rejected(self) -> dict[str, int]:
        """Errors the server answered by itself, by status."""
        result: dict[str, int] = {}
        for key, count in self.pairs.items():
            if key & _KIND_MASK == REJECTED:
                label = _code_label(key)
                result[label] = result.get(label, 0) + count
        return result

    @property
    def answered(self) -> int:
        return sum(self.fixed[HISTOGRAM:HISTOGRAM + len(BUCKETS) + 1])

    @property
    def duration_sum(self) -> float:
        """Seconds, summed over every answered request."""
        return self.fixed[DURATION_SUM_US] / 1_000_000

    @property
    def timeouts(self) -> int:
        return self.fixed[TIMEOUTS]

    def cumulative_buckets(self) -> list[tuple[float, int]]:
        """(upper bound, requests at most that long), ending with (inf, all)."""
        result = []
        running = 0
        counts = self.fixed[HISTOGRAM:HISTOGRAM + len(BUCKETS) + 1]
        for bound, count in zip((*BUCKETS, float("inf")), counts, strict=True):
            running += count
            result.append((bound, running))
        return result


def _code_label(key: int) -> str:
    code = (key >> 4) & 0x3FF
    return str(code) if code else "other"


# --- what the master reads from the scoreboard, for metrics and the control socket


@dataclass(frozen=True)
class InFlight:
    """A request in progress in one of a worker's threads."""

    thread: int
    line: str
    age: float  # seconds since its head was parsed

    @property
    def method(self) -> str:
        return self.line.partition(" ")[0]

    @property
    def path(self) -> str:
        target = self.line.split(" ")[1] if self.line.count(" ") >= 1 else ""
        return target.partition("?")[0]


@dataclass(frozen=True)
class WorkerView:
    pid: int
    state: str  # "booting", "idle" or "busy"
    age: float  # seconds since the fork
    requests: int  # served so far
    generation: int
    threads: int
    busy_threads: int
    in_flight: tuple[InFlight, ...]


@dataclass(frozen=True)
class ListenerView:
    name: str  # the listener's URL
    pid: int  # the worker whose own socket this is (--reuse-port), else 0
    queue: QueueFigures | None


@dataclass
class ServerView:
    """One consistent reading of everything the master reports."""

    workers: list[WorkerView]
    listeners: list[ListenerView]
    totals: Totals  # live and exited workers
    restarts: dict[str, int]  # by reason
    timeouts: int  # requests killed with their worker, plus those workers gave up on
    wanted_workers: int
    generation: int
    phase: str
    version: str
    worker_class: str
    memory: dict[int, tuple[int, int | None]] = field(default_factory=dict)  # pid -> rss, pss
