"""``ulimit -n`` far below the number of connections.

The server runs with RLIMIT_NOFILE set to the profile's ``nofile`` (64) in
the process that becomes the master, so every worker has it too, and takes
``concurrent_connections`` (200) connections at once, three times:

1. keep-alive requests whose connections the client leaves open until the
   server closes them (a gthread worker parks them: more of them than it has
   descriptors for);
2. the same with ``Connection: close``, and a HUP between two halves;
3. half of the requests ask the application to open more descriptors than
   the limit allows: the app's OSError (EMFILE) must be answered 500, the
   others 200 (or, in a gthread worker, 500 too when another thread's
   request held every descriptor at that moment).

Every connection is answered; no worker dies, none is replaced but by the
reload, and the master never backs off.
"""

import re
import signal

from conftest import wait_until

from .clients import burst
from .procs import nofile_wrapper, open_fds, send_counted

KEPT = b"GET /pid HTTP/1.1\r\nHost: a\r\n\r\n"
CLOSED = b"GET /pid?s=0.005 HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n"
FILES = b"GET /files?n=%d&s=0.01 HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n"


def _limit_of(pid):
    with open(f"/proc/{pid}/limits") as f:
        line = next(line for line in f if line.startswith("Max open files"))
    return int(line.split()[3])


def _wrong(results, expected):
    """The connections whose first answer is not one of ``expected[i]``."""
    return [(i, r.error, r.data[:120]) for i, r in enumerate(results)
            if not r.statuses or r.statuses[0] not in expected[i]]


def test_low_nofile_limit_with_many_connections(test_app, profile, figures, worker_class):
    limit = profile.nofile
    server = test_app("chaos_apps:router", workers=2, wrapper=nofile_wrapper(limit),
                      **worker_class)
    workers = server.worker_pids()
    assert all(_limit_of(pid) == limit for pid in [server.master_pid, *workers])
    assert all(open_fds(pid) < limit - 16 for pid in workers)
    n = profile.concurrent_connections
    kept = burst(server.port, [KEPT] * n, deadline=60)
    closed = burst(server.port, [CLOSED] * (n // 2), deadline=60)
    send_counted(server, server.master_pid, signal.SIGHUP)
    closed += burst(server.port, [CLOSED] * (n - n // 2), deadline=60)
    server.wait_for_log(r"Reload complete", 30)
    # a request that fits: 4 descriptors per thread of a gthread worker, at most
    mixed = burst(server.port, [FILES % (4 if i % 2 else limit + 10) for i in range(n)], deadline=60)
    # Threads share their process's descriptors: in a gthread worker, a request
    # that fits can meet EMFILE while another thread's request holds them all.
    fits = {200, 500} if worker_class else {200}
    wrong = {
        "kept": _wrong(kept, [{200}] * n),
        "closed": _wrong(closed, [{200}] * n),
        "mixed": _wrong(mixed, [fits if i % 2 else {500} for i in range(n)]),
    }
    log = server.log_text()
    results = kept + closed + mixed
    figures(requests=len(results), failures=sum(len(w) for w in wrong.values()),
            answers={str(s): sum(1 for r in results if r.statuses[:1] == [s]) for s in (200, 500)},
            hangs=sum(1 for r in results if r.error == "hang"),
            fitting_answered_500=sum(1 for r in mixed[1::2] if r.statuses[:1] == [500]),
            accept_failures=len(re.findall(r"accept\(\) failed", log)))
    assert not any(wrong.values()), (
        "connections not answered as expected: "
        + "; ".join(f"{k}: {len(w)}, e.g. {w[:5]}" for k, w in wrong.items() if w)
        + "\n" + log[-3000:])
    for bad in ("died unexpectedly", "Cannot start a worker", "keep dying", "WORKER TIMEOUT"):
        assert bad not in log, re.findall(f".*{bad}.*", log)
    assert wait_until(lambda: len(server.worker_pids()) == 2, 10)
