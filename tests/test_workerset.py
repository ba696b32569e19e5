"""The supervision decisions of prefork/workerset.py, without processes: fake
worker records, a fake clock, and properties over random histories of
readiness, recycling requests, reloads, exits and crashes. Covered: what to
spawn and retire, the boot staggering, the crash and spawn-failure back-off."""

from types import SimpleNamespace

from hypothesis import given, settings
from hypothesis import strategies as st

from prefork.heartbeat import BOOTING, IDLE
from prefork.recycling import KILL
from prefork.stats import LIFETIME, MAX_REQUESTS, RELOAD, SCALE_DOWN
from prefork.workerset import (
    ABORT,
    ABORT_GRACE,
    BACKOFF_CAP,
    BACKOFF_FIRST,
    BOOT_STAGGER_MAX,
    CRASH_WINDOW,
    SPAWN_ATTEMPTS,
    TORN,
    Phase,
    WorkerSet,
)


class FakeSlot:
    def __init__(self, booting=False):
        self.retire = False
        self.booting = booting

    def retire_requested(self):
        return self.retire

    def state(self):
        return BOOTING if self.booting else IDLE


class Pool:
    """Fake records, numbered in order of birth (``age``), and the plan applied to them."""

    def __init__(self, size, ready=True):
        self.size = size
        self.generation = 1
        self.records = []
        self.born = 0
        for _ in range(size):
            self.spawn().ready = ready

    def spawn(self, started=0.0, booting=False):
        self.born += 1
        record = SimpleNamespace(pid=self.born, age=self.born, generation=self.generation,
                                 ready=False, retiring=False, killed=False, aborted_at=0.0,
                                 replace="", slot=FakeSlot(booting), started=started)
        self.records.append(record)
        return record

    def serving(self):
        return sum(1 for r in self.records if r.ready and not r.retiring)

    def step(self, now=10.0, spawn_after=0.0, slots=99):
        workerset = WorkerSet(cores=slots)
        workerset.spawn_after = spawn_after
        plan = workerset.plan(self.records, self.size, self.generation, now)
        for _ in range(plan.spawn):
            self.spawn()
        for record, _ in plan.retire:
            record.retiring = True
        return plan


def test_a_worker_asking_for_replacement_waits_for_a_ready_successor():
    pool = Pool(2)
    pool.records[0].slot.retire = True
    plan = pool.step()
    assert plan.spawn == 1 and plan.retire == []
    assert pool.step().spawn == 0  # its successor is booting: no second one
    pool.records[2].ready = True
    assert pool.step().retire == [(pool.records[0], MAX_REQUESTS)]


def test_the_replace_reason_is_kept():
    pool = Pool(1)
    pool.records[0].replace = LIFETIME
    pool.step()
    pool.records[1].ready = True
    assert pool.step().retire == [(pool.records[0], LIFETIME)]


def test_spawns_wait_for_the_back_off_and_the_boot_slots():
    pool = Pool(4, ready=False)
    pool.records.clear()
    assert pool.step(now=1.0, spawn_after=2.0).spawn == 0
    assert pool.step(now=2.0, spawn_after=2.0, slots=2).spawn == 2


def test_fewer_workers_wanted_retires_the_booting_then_the_oldest():
    pool = Pool(3)
    pool.records[2].ready = False
    pool.size = 1
    assert [(r.pid, why) for r, why in pool.step().retire] == [(3, SCALE_DOWN), (1, SCALE_DOWN)]


def test_a_booting_worker_of_an_old_generation_does_not_count_as_capacity():
    # Regression: HUP twice in a row. Generation 2 (pid 3) is still booting when
    # generation 3 starts; one worker of generation 3 is ready. Before, the
    # oldest ready worker (pid 1) was retired in exchange for the booting one,
    # leaving one worker serving where two were wanted.
    pool = Pool(2)
    pool.records[1].retiring = True  # generation 1 half replaced already
    pool.generation = 2
    pool.spawn()  # pid 3, booting
    pool.generation = 3
    pool.spawn().ready = True  # pid 4
    pool.spawn()  # pid 5, booting
    plan = pool.step()
    assert [(r.pid, why) for r, why in plan.retire] == [(3, RELOAD)]
    assert pool.serving() == 2


events = st.lists(st.tuples(st.sampled_from(["ready", "exit", "ask", "replace", "reload", "crash"]),
                            st.integers(0, 50)), max_size=60)


@settings(max_examples=300, deadline=None)
@given(size=st.integers(1, 5), history=events)
def test_capacity_never_drops_below_the_size_on_purpose(size, history):
    pool = Pool(size)
    for event, pick in history:
        before = pool.serving()
        chosen = [r for r in pool.records if _fits(r, event)]
        if chosen:
            _apply(pool, event, chosen[pick % len(chosen)])
        after_event = pool.serving()  # a crash may lower it: that is not the plan's doing
        pool.step()
        assert pool.serving() >= min(size, after_event, before)
        wanted = [r for r in pool.records if not r.retiring and r.generation == pool.generation
                  and not r.slot.retire and not r.replace]
        assert len(wanted) <= size  # never more wanted workers than asked for
    for _ in range(3):  # and it settles: every booting worker ready, the stale ones retired
        for record in pool.records:
            record.ready = True
        pool.step()
    serving = [r for r in pool.records if r.ready and not r.retiring]
    assert len(serving) == size and all(r.generation == pool.generation for r in serving)


def _fits(record, event):
    if event == "ready":
        return not record.ready and not record.retiring
    if event == "exit":
        return record.retiring
    if event in ("ask", "replace"):
        return record.ready and not record.retiring and not record.slot.retire
    return event == "crash" and not record.retiring or event == "reload"


def _apply(pool, event, record):
    if event == "ready":
        record.ready = True
    elif event == "exit":
        pool.records.remove(record)
    elif event == "ask":
        record.slot.retire = True
    elif event == "replace":
        record.replace = LIFETIME
    elif event == "reload":
        pool.generation += 1
    else:
        pool.records.remove(record)


# --- boot staggering: at most one worker per core loads the application at once


def booting_pool(size, cores):
    pool = Pool(size)
    pool.records.clear()
    return pool, WorkerSet(cores=cores)


def test_boots_are_staggered_one_per_core():
    pool, workerset = booting_pool(4, cores=2)
    plan = workerset.plan(pool.records, 4, 1, now=100.0)
    assert plan.spawn == 2
    for _ in range(plan.spawn):
        pool.spawn(started=100.0, booting=True)
    assert workerset.plan(pool.records, 4, 1, now=100.1).spawn == 0
    assert workerset.next_check(100.1) == 100.0 + BOOT_STAGGER_MAX  # the master wakes for it
    pool.records[0].slot.booting = False  # one finished loading
    pool.records[0].ready = True
    assert workerset.plan(pool.records, 4, 1, now=100.2).spawn == 1


def test_a_slow_boot_stops_holding_its_place():
    # Loading that takes longer than BOOT_STAGGER_MAX is most likely waiting on
    # I/O, not using a core: the next worker starts anyway.
    pool, workerset = booting_pool(2, cores=1)
    pool.spawn(started=100.0, booting=True)
    assert workerset.plan(pool.records, 2, 1, now=100.0 + BOOT_STAGGER_MAX / 2).spawn == 0
    assert workerset.plan(pool.records, 2, 1, now=100.0 + BOOT_STAGGER_MAX).spawn == 1


def test_a_killed_booting_worker_holds_no_place():
    pool, workerset = booting_pool(2, cores=1)
    pool.spawn(started=100.0, booting=True).killed = True
    assert workerset.plan(pool.records, 2, 1, now=100.0).spawn == 1


def test_with_preload_every_worker_starts_at_once():
    pool, workerset = booting_pool(8, cores=2)
    workerset.preloaded = True
    assert workerset.plan(pool.records, 8, 1, now=100.0).spawn == 8


# --- back-off after crashes and failed spawns


def test_workers_that_keep_dying_at_start_back_off_doubling_up_to_the_cap():
    workerset = WorkerSet()
    now = 1000.0
    delays = []
    for _ in range(8):
        delays.append(workerset.crashed(started=now - 1.0, now=now))
    assert delays[0] == 0.0  # one crash is not a loop
    assert delays[1:4] == [BACKOFF_FIRST, 2 * BACKOFF_FIRST, 4 * BACKOFF_FIRST]
    assert max(delays) == BACKOFF_CAP and delays[-1] == BACKOFF_CAP
    pool = Pool(1)
    pool.records.clear()
    assert workerset.plan(pool.records, 1, 1, now=now + BACKOFF_CAP / 2).spawn == 0
    assert workerset.plan(pool.records, 1, 1, now=now + BACKOFF_CAP).spawn == 1


def test_a_worker_that_lived_past_the_crash_window_ends_the_streak():
    workerset = WorkerSet()
    for _ in range(3):
        workerset.crashed(started=99.0, now=100.0)
    assert workerset.crashed(started=100.0 - CRASH_WINDOW - 1, now=100.0) == 0.0
    assert workerset.crash_streak == 0
    assert workerset.crashed(started=99.5, now=100.0) == 0.0  # a new streak starts at one


def test_a_worker_that_never_booted_counts_however_long_it_tried():
    workerset = WorkerSet()
    workerset.crashed(started=0.0, now=100.0, always=True)
    assert workerset.crashed(started=0.0, now=100.0, always=True) == BACKOFF_FIRST


def test_failed_spawns_stop_a_server_that_was_never_ready_and_only_delay_one_that_was():
    starting = WorkerSet()
    delays = [starting.spawn_failed(now=10.0, healthy=False) for _ in range(SPAWN_ATTEMPTS)]
    assert delays[:-1] == [BACKOFF_FIRST * 2 ** i for i in range(SPAWN_ATTEMPTS - 1)]
    assert delays[-1] is None  # give up
    running = WorkerSet()
    delays = [running.spawn_failed(now=10.0, healthy=True) for _ in range(20)]
    assert None not in delays and delays[-1] == BACKOFF_CAP
    assert running.next_check(10.0) == 10.0 + BACKOFF_CAP
    running.spawned()
    assert running.spawn_failed(now=20.0, healthy=False) == BACKOFF_FIRST  # the count restarted


@settings(max_examples=200, deadline=None)
@given(lives=st.lists(st.floats(0.0, 3 * CRASH_WINDOW), max_size=40))
def test_the_crash_back_off_is_bounded_and_grows_only_within_a_streak(lives):
    workerset = WorkerSet()
    now, previous = 1000.0, 0.0
    for life in lives:
        delay = workerset.crashed(started=now - life, now=now)
        assert 0.0 <= delay <= BACKOFF_CAP
        if life > CRASH_WINDOW:
            assert delay == 0.0
        elif previous:
            assert delay >= previous
        previous = delay if life <= CRASH_WINDOW else 0.0
        # Nothing is spawned during the back-off, and something is right after it.
        pool = Pool(1)
        pool.records.clear()
        assert workerset.plan(pool.records, 1, 1, now=now).spawn == (0 if delay else 1)
        assert workerset.plan(pool.records, 1, 1, now=now + delay).spawn == 1
        now += delay + 0.01


def test_the_phase_is_one_of_five_names():
    assert [str(p) for p in Phase] == ["starting", "running", "reloading", "upgrading", "stopping"]


# --- timeouts: which workers to abort or kill


class Clock:
    """A fake monotonic clock; each reading may advance it (a slow master)."""

    def __init__(self, now, step=0.0):
        self.now, self.step = now, step

    def __call__(self):
        self.now += self.step
        return self.now


class BeatSlot(FakeSlot):
    def __init__(self, beats, booting=False, created=1.0):
        super().__init__(booting)
        self.beats = list(beats)  # what successive reads see
        self.created = created

    def last_beat(self):
        return self.beats.pop(0) if len(self.beats) > 1 else self.beats[0]


def worker(beats, ready=True, booting=False, aborted_at=0.0, killed=False):
    return SimpleNamespace(pid=7, ready=ready, killed=killed, aborted_at=aborted_at,
                           slot=BeatSlot(beats, booting))


def actions(records, clock, timeout=30.0, boot_timeout=60.0, stop_deadline=0.0):
    return [(v.action, round(v.beat if v.action == TORN else v.silent, 3), v.booting, v.late)
            for v in WorkerSet().overdue(records, clock, timeout, boot_timeout, stop_deadline)]


def test_a_silent_worker_is_aborted_and_a_beating_one_is_not():
    assert actions([worker([50.0])], Clock(100.0)) == [(ABORT, 50.0, False, False)]
    assert actions([worker([80.0])], Clock(100.0)) == []


def test_a_booting_worker_has_the_boot_timeout():
    loading = worker([50.0], ready=False, booting=True)
    assert actions([loading], Clock(100.0), boot_timeout=60.0) == []
    assert actions([loading], Clock(100.0), boot_timeout=40.0) == [(ABORT, 50.0, True, False)]
    assert actions([loading], Clock(1000.0), boot_timeout=0.0) == []  # off


def test_a_torn_read_is_never_a_timeout():
    # CPython's pack_into zeroes the bytes before writing them: a read can see 0.0.
    assert actions([worker([0.0, 99.0])], Clock(100.0)) == [(TORN, 0.0, False, False)]
    assert actions([worker([200.0])], Clock(100.0)) == [(TORN, 200.0, False, False)]  # future


def test_one_stale_read_followed_by_a_fresh_one_is_not_a_timeout():
    # The worker's write overtook the first read: the second sees the new beat.
    assert actions([worker([50.0, 99.9])], Clock(100.0)) == []


def test_an_aborted_worker_is_killed_after_the_grace():
    aborted = worker([0.5], aborted_at=100.0)
    assert actions([aborted], Clock(100.0 + ABORT_GRACE / 2)) == []
    assert actions([aborted], Clock(100.0 + ABORT_GRACE + 0.1)) == [(KILL, 0.0, False, False)]


def test_past_the_stop_deadline_every_worker_left_is_killed_once():
    records = [worker([99.0]), worker([99.0], aborted_at=99.0), worker([99.0], killed=True)]
    assert actions(records, Clock(100.0), stop_deadline=101.0) == []
    assert actions(records, Clock(102.0), stop_deadline=101.0) == [(KILL, 0.0, False, True)] * 2


@settings(max_examples=300, deadline=None)
@given(beat=st.floats(0.0, 200.0), start=st.floats(1.0, 150.0), step=st.floats(0.0, 2.0),
       timeout=st.floats(0.5, 60.0))
def test_a_worker_that_beat_within_its_timeout_is_never_aborted(beat, start, step, timeout):
    # Whatever the clock does between the reads, a worker aborted has a beat
    # older than its timeout by both of them, and one is aborted if it has.
    clock = Clock(start, step)
    verdicts = WorkerSet().overdue([worker([beat])], clock, timeout, 0.0)
    first_read = start + 2 * step  # overdue's own reading, then one per read of the beat
    possible = 1.0 <= beat <= first_read
    if not possible:
        assert [v.action for v in verdicts] == [TORN]
    elif first_read - beat > timeout:
        assert [v.action for v in verdicts] == [ABORT] and verdicts[0].silent > timeout
    else:
        assert verdicts == []
