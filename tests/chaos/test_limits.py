"""``ulimit -n`` far below the number of connections.

The server runs with RLIMIT_NOFILE set to the profile's ``nofile`` (64) in
the process that becomes the master, so every worker has it too, and takes
``concurrent_connections`` (200) connections at once, with a HUP in the
middle. Half the requests ask the application to open more descriptors
than the limit allows: the app's OSError (EMFILE) must be answered 500 and
the others 200. Every connection is answered; no worker dies, none is
replaced but by the reload, and the master never backs off.
"""

import re
import signal

from conftest import wait_until

from .clients import burst
from .procs import nofile_wrapper, open_fds, send_counted

FITS = b"GET /files?n=8&s=0.01 HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n"
TOO_MANY = b"GET /files?n=%d&s=0.01 HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n"


def _limit_of(pid):
    with open(f"/proc/{pid}/limits") as f:
        line = next(line for line in f if line.startswith("Max open files"))
    return int(line.split()[3])


def test_low_nofile_limit_with_many_connections(test_app, profile, figures):
    limit = profile.nofile
    server = test_app("chaos_apps:router", workers=2, wrapper=nofile_wrapper(limit))
    workers = server.worker_pids()
    assert all(_limit_of(pid) == limit for pid in [server.master_pid, *workers])
    assert all(open_fds(pid) < limit - 8 for pid in workers)
    requests = [FITS if i % 2 else TOO_MANY % (limit + 10) for i in range(profile.concurrent_connections)]
    half = len(requests) // 2
    first = burst(server.port, requests[:half], deadline=60)
    send_counted(server, server.master_pid, signal.SIGHUP)
    second = burst(server.port, requests[half:], deadline=60)
    results = first + second
    server.wait_for_log(r"Reload complete", 30)
    expected = [200 if i % 2 else 500 for i in range(len(requests))]
    wrong = [(i, r.error, r.data[:120]) for i, r in enumerate(results)
             if r.statuses[:1] != [expected[i]]]
    log = server.log_text()
    figures(requests=len(results), failures=len(wrong),
            answers={str(s): sum(1 for r in results if r.statuses[:1] == [s]) for s in (200, 500)},
            hangs=sum(1 for r in results if r.error == "hang"))
    assert not wrong, f"{len(wrong)} connections not answered as expected: {wrong[:10]}\n{log[-3000:]}"
    for bad in ("died unexpectedly", "Cannot start a worker", "keep dying", "WORKER TIMEOUT"):
        assert bad not in log, re.findall(f".*{bad}.*", log)
    assert wait_until(lambda: len(server.worker_pids()) == 2, 10)
