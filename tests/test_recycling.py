"""Recycling by lifetime and by memory, with real processes and real clients:
pooled keep-alive clients that never retry lose nothing while workers are
replaced, each replacement is logged and counted with its reason, and a worker
past the hard memory limit is killed. The decisions themselves are unit-tested
at the end, with plain numbers and a fake clock."""

import random
import re
import threading
from types import SimpleNamespace

import requests
from conftest import wait_until
from keepalive_clients import ClientPool
from observing import metrics_port, scrape
from test_config import run_prefork

from prefork.recycling import (
    KILL,
    MEMORY_BUDGET,
    MIB,
    REPLACE,
    MemoryLimits,
    Recycler,
    lifetime_deadline,
    settled,
)
from prefork.stats import LIFETIME, MEMORY

APP = "leaky:app"


def exits(log, reason):
    return len(re.findall(rf"Worker \d+ exited \([^)]*\); reason: {reason}\b", log))


def assert_nothing_lost(pool, log):
    assert pool.failures == [], (pool.failures[:10], log[-3000:])
    assert pool.ok > 0


def test_lifetime_recycling_under_keep_alive_load_loses_no_request(test_app, worker_settings):
    server = test_app(APP, workers=2, keepalive=2, max_worker_lifetime=1.5,
                      max_worker_lifetime_jitter=0.5, metrics_bind="127.0.0.1:0", **worker_settings)
    port = metrics_port(server)
    with ClientPool(server.port, clients=3, per_client=10_000) as pool:
        assert wait_until(lambda: exits(server.log_text(), LIFETIME) >= 4, 40), server.log_text()[-3000:]
        pool.stop()
    log = server.log_text()
    assert_nothing_lost(pool, log)
    assert "past --max-worker-lifetime 1.5 s; replacing it" in log
    assert pool.reconnects > 0  # the retiring workers announced Connection: close
    assert wait_until(lambda: scrape(port).value("prefork_worker_restarts_total", reason=LIFETIME), 10)
    assert scrape(port).value("prefork_worker_restarts_total", reason=MEMORY) == 0
    assert len(server.wait_workers(2)) == 2


def test_memory_recycling_replaces_a_leaking_worker_and_loses_no_request(test_app, worker_settings):
    # 2 MiB per request, about 13 requests a second per client: each worker
    # passes 64 MiB within seconds, and is replaced about 3 s later.
    server = test_app(APP, workers=2, keepalive=2, max_worker_memory=64, **worker_settings)
    with ClientPool(server.port, clients=2, per_client=10_000, think=(0.05, 0.1), path="/leak?2") as pool:
        assert wait_until(lambda: exits(server.log_text(), MEMORY) >= 2, 60), server.log_text()[-3000:]
        pool.stop()
    log = server.log_text()
    assert_nothing_lost(pool, log)
    line = re.search(r"Worker (\d+) uses ([\d.]+) MiB \(PSS\), above --max-worker-memory 64 MiB "
                     r"for 3 samples in a row; replacing it after its current request", log)
    assert line, log[-3000:]
    assert float(line[2]) > 64
    assert re.search(rf"Worker {line[1]} exited \(exit code 0\); reason: memory", log)
    assert "SIGKILL" not in log


def test_a_worker_that_keeps_growing_is_killed_at_the_hard_limit(test_app):
    server = test_app(APP, workers=1, max_worker_memory=48, max_worker_memory_hard=160, timeout=120)
    (pid,) = server.wait_workers(1)

    def grow():  # its request fails when its worker is killed: that is the point
        try:
            requests.get(f"{server.url}/grow?4,0.1,60", timeout=70)
        except requests.RequestException:
            pass

    client = threading.Thread(target=grow, daemon=True)
    client.start()
    server.wait_for_log(rf"Worker {pid} uses [\d.]+ MiB \(PSS\)(?: while it retires)?, above "
                        r"--max-worker-memory-hard 160 MiB; killing it \(SIGKILL\)", timeout=40)
    server.wait_for_log(rf"Worker {pid} exited \(killed by SIGKILL\); reason: memory", timeout=10)
    client.join(10)
    assert requests.get(server.url).ok  # its replacement serves
    assert pid not in server.wait_workers(1)


def test_a_hard_limit_not_above_the_soft_one_is_a_one_line_error():
    proc = run_prefork("--max-worker-memory", "100", "--max-worker-memory-hard", "100", APP)
    assert proc.returncode == 2, proc.stderr
    (line,) = proc.stderr.splitlines()
    assert line == ("prefork: error: --max-worker-memory-hard: 100 MiB must be above "
                    "--max-worker-memory (100 MiB)")


# --- the decisions, without processes


def test_memory_limits_need_samples_in_a_row():
    limits = MemoryLimits(soft=100, hard=0, samples=3)
    assert [limits.judge(1, n) for n in (101, 150, 90, 120, 130)] == ["", "", "", "", ""]
    assert limits.judge(1, 140) == REPLACE  # 120, 130, 140: three in a row
    assert limits.judge(1, 100) == ""  # at the limit is not above it
    assert limits.over(1) == 0


def test_the_hard_limit_kills_at_once_and_samples_are_per_worker():
    limits = MemoryLimits(soft=100, hard=200, samples=2)
    assert limits.judge(1, 150) == ""
    assert limits.judge(2, 201) == KILL
    assert limits.judge(1, 150) == REPLACE
    limits.forget([2])
    assert limits.over(1) == 0 and limits.over(2) == 1


def test_lifetime_deadline_and_its_jitter():
    rng = random.Random(7)
    assert lifetime_deadline(10.0, 0, 5, rng) == 0.0
    assert lifetime_deadline(10.0, 60, 0, rng) == 70.0
    draws = [lifetime_deadline(10.0, 60, 5, rng) for _ in range(200)]
    assert all(70.0 <= d <= 75.0 for d in draws) and len(set(draws)) > 100


class FakeSlot:
    def __init__(self):
        self.retire = False

    def retire_requested(self):
        return self.retire


def record(pid, started=0.0, ready=True, generation=1, **kw):
    values = dict(retiring=False, killed=False, aborted_at=0.0, replace="", reason="")
    values.update(kw)
    return SimpleNamespace(pid=pid, started=started, ready=ready, generation=generation,
                           slot=FakeSlot(), **values)


def cfg(**kw):
    values = dict(max_worker_lifetime=0.0, max_worker_lifetime_jitter=0.0,
                  max_worker_memory=0, max_worker_memory_hard=0)
    values.update(kw)
    return SimpleNamespace(**values)


class FakeClock:
    def __init__(self, step=0.0):
        self.now = 0.0
        self.step = step

    def __call__(self):
        self.now += self.step
        return self.now


def test_settled_means_no_boot_and_no_pending_replacement():
    assert settled([record(1), record(2, retiring=True, ready=False)])
    assert not settled([record(1), record(2, ready=False)])
    assert not settled([record(1), record(2, replace=LIFETIME)])
    pending = record(2)
    pending.slot.retire = True  # asked for --max-requests
    assert not settled([record(1), pending])


def test_lifetime_replaces_one_worker_at_a_time_oldest_first():
    recycler = Recycler(log=None, rng=random.Random(1))
    workers = {1: record(1, started=5.0), 2: record(2, started=0.0), 3: record(3, started=1.0)}
    settings = cfg(max_worker_lifetime=10.0)
    assert recycler.check(settings, workers, 1, 9.0) == []
    assert recycler.next_check(9.0) == 10.0
    (action,) = recycler.check(settings, workers, 1, 12.0)
    assert (action.record.pid, action.kind, action.reason) == (2, REPLACE, LIFETIME)
    assert "has lived 12.0 s, past --max-worker-lifetime 10 s" in action.why
    workers[2].replace = LIFETIME
    assert recycler.check(settings, workers, 1, 12.5) == []  # 3 waits for 2's successor
    del workers[2]
    workers[4] = record(4, started=12.6, ready=False)
    assert recycler.check(settings, workers, 1, 13.0) == []  # nor during a boot
    workers[4].ready = True
    (action,) = recycler.check(settings, workers, 1, 13.5)
    assert action.record.pid == 3


def test_lifetime_turned_off_by_a_reload_schedules_nothing():
    recycler = Recycler(log=None)
    workers = {1: record(1)}
    assert recycler.check(cfg(max_worker_lifetime=10.0), workers, 1, 1.0) == []
    assert recycler.next_check(1.0) == 10.0
    assert recycler.check(cfg(), workers, 1, 2.0) == []
    assert recycler.next_check(2.0) == 0.0


def test_lifetime_leaves_workers_of_an_old_generation_to_the_reload():
    recycler = Recycler(log=None)
    workers = {1: record(1, generation=1), 2: record(2, generation=2)}
    (action,) = recycler.check(cfg(max_worker_lifetime=1.0), workers, 2, 5.0)
    assert action.record.pid == 2


def test_memory_replaces_after_three_samples_one_per_interval():
    used = {1: 300 * MIB, 2: 10 * MIB}
    recycler = Recycler(log=None, clock=FakeClock(), read=lambda pid: (used[pid], "PSS"))
    workers = {1: record(1), 2: record(2)}
    settings = cfg(max_worker_memory=256)
    found = [recycler.check(settings, workers, 1, t) for t in (0.0, 0.5, 1.0, 1.5, 2.0)]
    assert [len(a) for a in found] == [0, 0, 0, 0, 1]  # samples at 0, 1 and 2 s
    (action,) = found[-1]
    assert (action.record.pid, action.kind, action.reason) == (1, REPLACE, MEMORY)
    assert action.why == ("uses 300.0 MiB (PSS), above --max-worker-memory 256 MiB for 3 samples "
                          "in a row; replacing it after its current request")
    workers[1].replace = MEMORY
    assert recycler.check(settings, workers, 1, 3.0) == []  # replaced once, not again
    assert recycler.next_check(3.0) == 4.0


def test_the_hard_limit_kills_a_retiring_worker():
    recycler = Recycler(log=None, clock=FakeClock(), read=lambda pid: (700 * MIB, "RSS"))
    workers = {1: record(1, retiring=True, reason=MEMORY)}
    (action,) = recycler.check(cfg(max_worker_memory=256, max_worker_memory_hard=512), workers, 1, 0.0)
    assert action.kind == KILL and action.reason == MEMORY
    assert action.why == ("uses 700.0 MiB (RSS) while it retires, above --max-worker-memory-hard "
                          "512 MiB; killing it (SIGKILL)")


def test_memory_reading_per_turn_is_bounded_and_resumes_next_turn():
    clock = FakeClock(step=MEMORY_BUDGET / 4)  # each look at the clock: a quarter of the budget
    read = []
    recycler = Recycler(log=None, clock=clock, read=lambda pid: read.append(pid) or (MIB, "PSS"))
    workers = {pid: record(pid) for pid in range(1, 21)}
    recycler.check(cfg(max_worker_memory=256), workers, 1, 1.0)
    assert 0 < len(read) < 20
    assert recycler.next_check(1.0) == 1.0  # more to read: the loop comes back at once
    for _ in range(20):
        recycler.check(cfg(max_worker_memory=256), workers, 1, 1.1)
    assert sorted(read) == list(range(1, 21))  # everyone once in the round, nobody twice
