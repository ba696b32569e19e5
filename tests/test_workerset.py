"""The maintenance decisions of prefork/workerset.py, without processes: fake
worker records, a fake clock, and a property over random histories of
readiness, recycling requests, reloads and exits."""

from types import SimpleNamespace

from hypothesis import given, settings
from hypothesis import strategies as st

from prefork.stats import LIFETIME, MAX_REQUESTS, RELOAD, SCALE_DOWN
from prefork.workerset import WorkerSet


class FakeSlot:
    def __init__(self):
        self.retire = False

    def retire_requested(self):
        return self.retire


class Pool:
    """Fake records, numbered in order of birth (``age``), and the plan applied to them."""

    def __init__(self, size, ready=True):
        self.size = size
        self.generation = 1
        self.records = []
        self.born = 0
        for _ in range(size):
            self.spawn().ready = ready

    def spawn(self):
        self.born += 1
        record = SimpleNamespace(pid=self.born, age=self.born, generation=self.generation,
                                 ready=False, retiring=False, killed=False, aborted_at=0.0,
                                 replace="", slot=FakeSlot())
        self.records.append(record)
        return record

    def serving(self):
        return sum(1 for r in self.records if r.ready and not r.retiring)

    def step(self, now=10.0, spawn_after=0.0, slots=99):
        plan = WorkerSet().plan(self.records, self.size, self.generation, now, spawn_after,
                                lambda: slots)
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
