"""Adaptive worker count (--workers-max) with real processes: more workers under
concurrent slow requests, fewer after idleness, and no request lost by pooled
keep-alive clients that never retry while a worker is removed. The decisions
are unit-tested at the end with a fake clock."""

import re

from conftest import wait_until
from keepalive_clients import ClientPool
from test_config import run_prefork

from prefork.scaling import SATURATED_FOR, Load, Scaler, over_budget

APP = "reliability:app"


def assert_nothing_lost(pool, log):
    assert pool.failures == [], (pool.failures[:10], log[-3000:])
    assert pool.ok > 0


def test_scale_up_under_slow_requests_and_down_after_idleness_losing_nothing(test_app, worker_settings):
    threads = worker_settings.get("threads", 1)
    server = test_app(APP, workers=1, workers_max=3, scale_down_after=1.5, keepalive=2,
                      **worker_settings)
    # More slow clients than the workers' threads: the pool is saturated until it has 3 workers.
    with ClientPool(server.port, clients=3 * threads + 2, per_client=10_000, think=(0.0, 0.01),
                    path="/think?0.3") as slow:
        assert wait_until(lambda: "Scaling up to 3 workers" in server.log_text(), 40), \
            server.log_text()[-3000:]
        slow.stop()
    log = server.log_text()
    assert_nothing_lost(slow, log)
    assert re.search(rf"Scaling up to 2 workers: 1/1 busy, \d+ waiting for {SATURATED_FOR:.1f} s", log) \
        or re.search(r"Scaling up to 2 workers: \d/1 busy, [1-9]\d* waiting for 1\.\d s", log), log[-3000:]
    assert "Scaling up to 4" not in log
    # Light keep-alive traffic leaves spare capacity: back to the minimum, one worker at a time.
    with ClientPool(server.port, clients=1, per_client=10_000, think=(0.05, 0.1)) as light:
        assert wait_until(lambda: len(re.findall(r"reason: scale_down", server.log_text())) >= 2, 40), \
            server.log_text()[-3000:]
        light.stop()
    log = server.log_text()
    assert_nothing_lost(light, log)
    assert re.search(r"Scaling down to 2 workers: [01]/3 busy, 0 waiting for 1\.\d s", log), log[-3000:]
    assert "Scaling down to 1 worker: " in log and "Scaling down to 0" not in log
    assert len(server.wait_workers(1)) == 1


def test_workers_max_below_workers_is_a_one_line_error():
    proc = run_prefork("-w", "4", "--workers-max", "2", APP)
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.strip() == "prefork: error: --workers-max: 2 is fewer than --workers (4)"


# --- the decisions, with a fake clock


def looks(scaler, loads, current, floor=1, ceiling=4, after=5.0, every=0.25, start=0.0):
    """Decide at each load in turn, ``every`` seconds apart: [(time, step)] of the changes."""
    changes = []
    for i, load in enumerate(loads):
        now = start + i * every
        step, _ = scaler.decide(now, load, current, floor, ceiling, after)
        if step:
            changes.append((now, step))
            current += step
    return changes


def test_scale_up_needs_saturation_for_a_second_in_a_row():
    busy = Load(workers=2, busy=2, waiting=0)
    calm = Load(workers=2, busy=1, waiting=0)
    assert looks(Scaler(), [busy, busy, busy, calm] * 5, current=2) == []  # never 1 s in a row
    assert looks(Scaler(), [busy] * 5, current=2) == [(1.0, 1)]
    queued = Load(workers=2, busy=1, waiting=3)  # connections wait: saturated too
    assert looks(Scaler(), [queued] * 5, current=2) == [(1.0, 1)]


def test_one_worker_at_a_time_up_to_the_ceiling():
    scaler = Scaler()
    assert looks(scaler, [Load(2, 2, 9)] * 40, current=2, ceiling=4) == [(1.0, 1), (2.25, 1)]


def test_scale_down_needs_two_idle_workers_for_the_whole_period():
    one_idle = Load(workers=3, busy=2, waiting=0)  # removing one would saturate the rest
    assert looks(Scaler(), [one_idle] * 40, current=3, after=5.0) == []
    two_idle = Load(workers=3, busy=1, waiting=0)
    assert looks(Scaler(), [two_idle] * 24, current=3, after=5.0) == [(5.0, -1)]
    blip = [two_idle] * 12 + [one_idle] + [two_idle] * 12  # 3 s, a busy moment, 3 s
    assert looks(Scaler(), blip, current=3, after=5.0) == []


def test_never_below_the_floor_and_no_flapping_after_a_change():
    idle = Load(workers=2, busy=0, waiting=0)
    assert looks(Scaler(), [idle] * 100, current=2, floor=2) == []
    scaler = Scaler()
    assert looks(scaler, [Load(1, 1, 2)] * 5, current=1, ceiling=2) == [(1.0, 1)]
    # Right after scaling up, spare capacity must last the whole period again.
    assert looks(scaler, [Load(2, 0, 0)] * 20, current=2, after=5.0, start=1.25) == []


def test_hold_starts_the_periods_again():
    scaler = Scaler()
    busy = Load(1, 1, 1)
    assert scaler.decide(0.0, busy, 1, 1, 2, 5.0) == (0, "")
    scaler.hold()  # a worker is booting
    assert scaler.decide(0.75, busy, 1, 1, 2, 5.0) == (0, "")
    step, inputs = scaler.decide(1.75, busy, 1, 1, 2, 5.0)
    assert step == 1 and inputs == "1/1 busy, 1 waiting for 1.0 s"


def test_memory_budget():
    assert not over_budget(300, 3, 0)
    assert not over_budget(300, 3, 400)  # 300 + 100 is the budget, not past it
    assert over_budget(301, 3, 400)
    assert not over_budget(0, 0, 10)


def test_no_scaling_decision_while_the_pool_is_not_settled():
    from types import SimpleNamespace

    from prefork.scaling import load_of, settled_pool

    def record(generation=1, ready=True, busy=0, threads=1, **flags):
        slot = SimpleNamespace(busy_threads=lambda: busy, threads=threads)
        fields = {"retiring": False, "killed": False, "aborted_at": 0.0, "replace": "", **flags}
        return SimpleNamespace(generation=generation, ready=ready, slot=slot, **fields)

    pool = [record(busy=1), record(busy=0)]
    assert settled_pool(pool, 1, 2) == pool
    assert load_of(pool, waiting=3) == Load(2, 1, 3)
    assert settled_pool([record(), record(ready=False)], 1, 2) is None  # a boot
    assert settled_pool([record(), record(generation=2)], 2, 2) is None  # a reload
    assert settled_pool([record(), record(replace="lifetime")], 1, 2) is None  # a recycling
    assert settled_pool([record()], 1, 2) is None  # fewer than wanted
    assert settled_pool([record(), record(retiring=True)], 1, 1) is not None  # a retiree is not counted
    threaded = record(busy=3, threads=4)
    assert load_of([threaded], 0).busy == 0  # busy means every thread busy
