"""The master killed with SIGKILL while its workers are busy or stuck.

Nobody is left to enforce --timeout or to stop the workers, so each orphan
must do it itself: stop accepting, finish its request within
--graceful-timeout (or --timeout, whichever is shorter) and exit. Then the
port is free, and a new server can bind it at once.
"""

import os
import signal
import threading

import pytest
from conftest import wait_until

from .clients import send_raw
from .procs import holders_of_port, port_bindable, sleeping_threads, wait_gone

GRACEFUL = 2.0
TIMEOUT = 4.0
SLACK = 3.0  # beat interval, process exit, a loaded machine


@pytest.mark.parametrize("seconds,expect", [(1.0, "answered"), (60.0, "cut")],
                         ids=["busy", "stuck"])
def test_master_killed_while_workers_serve(test_app, profile, figures, seconds, expect,
                                           worker_class):
    workers = 2
    outcomes = []
    for _ in range(profile.master_kill_rounds):
        server = test_app("chaos_apps:router", workers=workers, timeout=TIMEOUT,
                          graceful_timeout=GRACEFUL, **worker_class)
        pids = server.worker_pids()
        results = [None] * workers

        def client(i, port=server.port, out=results):
            request = b"GET /pid?s=%g HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n" % seconds
            out[i] = send_raw(port, request, deadline=GRACEFUL + TIMEOUT + SLACK)

        threads = [threading.Thread(target=client, args=(i,), daemon=True) for i in range(workers)]
        for thread in threads:
            thread.start()
        assert wait_until(lambda p=pids: sum(map(sleeping_threads, p)) == workers, 10), (
            "the requests did not all start")
        os.kill(server.master_pid, signal.SIGKILL)
        server.proc.wait(5)
        left = wait_gone(pids, min(GRACEFUL, TIMEOUT) + SLACK)
        for thread in threads:
            thread.join(GRACEFUL + TIMEOUT + SLACK + 5)
        try:
            assert not left, (f"workers {left} still run {min(GRACEFUL, TIMEOUT) + SLACK} s "
                              f"after their master was killed; log:\n{server.log_text()[-2000:]}")
            problem = port_bindable(server.port)
            assert not problem, f"port {server.port}: {problem}, held by {holders_of_port(server.port)}"
            for result in results:
                answered = result.statuses == [200]
                outcomes.append(answered)
                if expect == "answered":
                    assert answered, result
                else:
                    assert not result.error == "hang", result
        finally:
            for pid in left:
                os.kill(pid, signal.SIGKILL)
    figures(requests=len(outcomes), failures=0 if expect == "cut" else outcomes.count(False),
            answered=outcomes.count(True), cut=outcomes.count(False))
