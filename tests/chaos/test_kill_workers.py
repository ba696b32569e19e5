"""Random ``kill -9`` of workers under keep-alive load.

A worker killed with SIGKILL takes down the connection it holds, and only
that one: the requests that fail must be exactly those on connections the
killed worker held. To know which those are, the victim is first frozen
(SIGSTOP), the client ports of the sockets it holds are read from /proc,
and only then is it killed; the clients record every request with its
connection's port and its timing, so each failure is matched to a kill.
"""

import os
import random
import re
import signal
import time

import pytest
from conftest import wait_until

from .clients import ClientPool
from .conftest import WORKER_CLASSES
from .procs import age, freeze, held_client_ports, wait_gone

try:
    from prefork.workerset import CRASH_WINDOW
except ImportError:  # the policy moved: the value of the first release
    CRASH_WINDOW = 5.0


def _pick_victim(server, workers, rng, timeout=20.0):
    """A random worker among those past the crash window (killing a worker
    younger than that counts toward the master's crash-loop back-off, which
    would only slow the test down), once every worker is there."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        pids = server.worker_pids()
        if len(pids) == workers:
            old = [p for p in pids if age(p) > CRASH_WINDOW + 0.2]
            if old:
                return rng.choice(old)
        time.sleep(0.05)
    raise AssertionError(f"no worker of {workers} older than {CRASH_WINDOW} s within "
                         f"{timeout} s; log:\n{server.log_text()}")


def _explain(pool, kills):
    """Match every failure to the kill of the worker that held its connection."""
    explained, unexplained = [], []
    for failure in pool.failures:
        conn = failure.conn
        kill = next((k for k in kills if conn is not None and conn.port in k["ports"]
                     and conn.opened < k["at"] <= failure.ended), None)
        if kill is None:
            unexplained.append(failure)
        else:
            explained.append((failure, kill, "in flight" if failure.sent < kill["at"] else
                              "sent on a connection the killed worker held"))
    return explained, unexplained


def _in_flight(pool, kill):
    """Requests on the victim's connections that were sent before the kill and
    had not been answered."""
    return [o for o in pool.outcomes if o.conn is not None and o.conn.port in kill["ports"]
            and o.sent < kill["at"] <= o.ended]


@pytest.mark.parametrize("connection,worker", [("keep-alive", "sync"), ("close", "sync"),
                                               ("keep-alive", "gthread")])
def test_random_kill_9_fails_only_the_requests_of_the_killed_worker(test_app, profile, figures,
                                                                     connection, worker):
    """Keep-alive clients (and, as a control, clients that close after every
    request): every failure is a request on a connection the killed worker
    held, at most one per connection, and at least one was in flight. A
    gthread worker holds several connections, busy and parked: all of them
    are its victims, and only they."""
    rng = random.Random(profile.seed)
    workers = profile.kill_workers
    server = test_app("chaos_apps:router", workers=workers, **WORKER_CLASSES[worker])
    kills = []
    with ClientPool(server.port, clients=profile.kill_clients, path="/pid?s=0.05",
                    think=(0.005, 0.03), seed=profile.seed, headers={"Connection": connection}) as pool:
        for _ in range(profile.kill_rounds):
            victim = _pick_victim(server, workers, rng)
            freeze(victim)
            ports = held_client_ports(victim, server.port)
            at = pool.mark(f"kill -9 {victim}")
            os.kill(victim, signal.SIGKILL)
            kills.append({"pid": victim, "ports": ports, "at": at})
            assert not wait_gone([victim], 5), f"worker {victim} survived SIGKILL"
            server.wait_workers(workers, timeout=15, exclude=[victim])
            pool.wait_requests(20)
    explained, unexplained = _explain(pool, kills)
    in_flight = sum(len(_in_flight(pool, k)) for k in kills)
    per_connection = {}
    for failure, _, _ in explained:
        key = (failure.conn.client, failure.conn.seq)
        per_connection[key] = per_connection.get(key, 0) + 1
    figures(requests=pool.count, failures=len(pool.failures), kills=len(kills),
            in_flight_on_killed=in_flight,
            explained={why: sum(1 for _, _, w in explained if w == why)
                       for why in {w for _, _, w in explained}},
            unexplained=len(unexplained))
    assert not unexplained, "failures not on a killed worker's connection:\n" + pool.report(unexplained)
    assert all(n == 1 for n in per_connection.values()), per_connection
    assert len(pool.failures) <= in_flight + sum(len(k["ports"]) for k in kills)
    assert in_flight > 0, "no request was in flight on a killed worker: the test proved nothing"
    log = server.log_text()
    for kill in kills:
        assert re.search(rf"Worker {kill['pid']}\b.*killed by SIGKILL", log), log[-3000:]
    assert "WORKER TIMEOUT" not in log
    # the server is whole again: every worker answers
    assert wait_until(lambda: len(server.worker_pids()) == workers, 10)
