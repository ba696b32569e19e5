"""Applications that misbehave: they fork, leak descriptors or memory, block in
close(), or call sys.exit() in a request. The server keeps serving, and each
misbehaviour gets the answer a user expects:

* sys.exit() in a request: a 500, the exit logged, the worker replaced, and
  no "failed to boot" (whatever the exit code);
* a fork during a request: the response still ends (the connection is shut
  down, not only closed, so the child's copy does not hold it open) and a
  kept connection still works; a child started with exec does not hold the
  listening socket after the server has stopped;
* a descriptor or memory leak: 200 while it lasts, then a 500 for the app's
  OSError or MemoryError, never an empty reply or a hang;
* close() that blocks: the response, complete, is the client's at once; a
  block past --timeout gets the worker aborted (the log names the request)
  and replaced.

Background clients that close after every request check that the other
workers serve throughout (keep-alive itself is the storms' business).
"""

import contextlib
import http.client
import os
import re
import signal

from conftest import alive, wait_until

from .clients import ClientPool, send_raw
from .procs import holders_of_port, nofile_wrapper, port_bindable, wait_gone


def _background(server, profile):
    return ClientPool(server.port, clients=2, path="/pid?s=0.005", think=(0.01, 0.03),
                      seed=profile.seed, headers={"Connection": "close"})


def _get(port, path, timeout=5.0):
    """GET on a new connection: (status, body), or (0, the exception) if it failed."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request("GET", path)
        response = conn.getresponse()
        return response.status, response.read()
    except (OSError, http.client.HTTPException) as exc:
        return 0, f"{type(exc).__name__}: {exc}".encode()
    finally:
        conn.close()


def _children(body):
    return [int(pid) for pid in re.findall(rb"child=(\d+)", body)]


def _kill_all(pids):
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


def test_sys_exit_in_a_request(test_app, profile, figures, worker_class):
    server = test_app("chaos_apps:router", workers=2, **worker_class)
    answers = []
    with _background(server, profile) as pool:
        for _ in range(profile.exit_rounds):
            for code in ("", "3", "4", "bye"):
                before = set(server.wait_workers(2))
                start = len(server.log_text())
                status, body = _get(server.port, "/exits" + (f"?code={code}" if code else ""))
                answers.append(status)
                call = f"sys.exit({code if code.isdigit() else repr(code) if code else ''})"
                assert status == 500, (f"{call} answered {status} {body!r}; log:\n"
                                       + server.log_text()[start:][-2000:])
                # exactly one worker, the one that exited, is replaced
                assert wait_until(lambda b=before: len(server.worker_pids()) == 2
                                  and len(b - set(server.worker_pids())) == 1, 15), server.log_text()
                assert re.search(r"SystemExit|sys\.exit", server.log_text()[start:])
    log = server.log_text()
    figures(requests=pool.count + len(answers), failures=len(pool.failures),
            exits=len(answers))
    assert not pool.failures, pool.report()
    assert "failed to boot" not in log and "Shutting down" not in log, log[-3000:]


def test_app_that_forks_keeps_responses_ending(test_app, profile, figures, worker_class):
    server = test_app("chaos_apps:router", workers=2, **worker_class)
    children = []
    kept = 0
    try:
        with _background(server, profile) as pool:
            for _ in range(profile.fork_rounds):
                # A close-delimited response: it ends when the connection does.
                result = send_raw(server.port, b"GET /forks?s=10&stream=1 HTTP/1.0\r\n\r\n",
                                  deadline=4, half_close=False)
                children += _children(result.data)
                assert not result.error and result.data.endswith(b"child=%d" % children[-1]), result
                # A kept connection: the next requests on it are answered.
                conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=4)
                try:
                    conn.request("GET", "/forks?s=10")
                    response = conn.getresponse()
                    body = response.read()
                    children += _children(body)
                    assert response.status == 200
                    port = conn.sock.getsockname()[1] if conn.sock else None
                    for _ in range(5):
                        pool.stopping.wait(0.02)
                        conn.request("GET", "/pid")
                        response = conn.getresponse()
                        assert response.status == 200 and response.read().startswith(b"pid=")
                        if conn.sock is not None and conn.sock.getsockname()[1] == port:
                            kept += 1
                finally:
                    conn.close()
        figures(requests=pool.count + 7 * profile.fork_rounds, failures=len(pool.failures),
                forks=len(children), kept_alive_after_fork=kept)
        assert not pool.failures, pool.report()
    finally:
        _kill_all(children)


def test_exec_child_does_not_hold_the_port(test_app):
    server = test_app("chaos_apps:router", workers=1)
    status, body = _get(server.port, "/spawns?s=30")
    children = _children(body)
    try:
        assert status == 200 and children and alive(children[0])
        assert server.stop() == 0
        problem = port_bindable(server.port)
        assert not problem, (f"after the stop, port {server.port} cannot be bound ({problem}); "
                             f"held by {holders_of_port(server.port)}, the app's child is {children}")
    finally:
        _kill_all(children)


def _leak(server, path, count):
    results = [send_raw(server.port, b"GET %s HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n"
                        % path.encode(), deadline=5) for _ in range(count)]
    wrong = [(i, r.error, r.data[:100]) for i, r in enumerate(results)
             if r.statuses[:1] not in ([200], [500])]
    return results, wrong


def test_app_leaking_descriptors(test_app, profile, figures):
    server = test_app("chaos_apps:router", workers=2, wrapper=nofile_wrapper(128))
    results, wrong = _leak(server, "/leak_fds?n=8", profile.leak_requests)
    errors = sum(1 for r in results if r.statuses[:1] == [500])
    figures(requests=len(results), failures=len(wrong), answered_500=errors)
    assert not wrong, f"{len(wrong)} requests without a 200 or 500: {wrong[:10]}\n{server.log_text()[-3000:]}"
    assert errors, "the leak never reached the limit: the test proved nothing"
    assert re.search(r"Too many open files", server.log_text())
    assert len(server.worker_pids()) == 2


def test_app_leaking_memory(test_app, profile, figures):
    server = test_app("chaos_apps:router", workers=2)
    results, wrong = _leak(server, "/leak_memory?mb=16", profile.leak_requests)
    errors = sum(1 for r in results if r.statuses[:1] == [500])
    figures(requests=len(results), failures=len(wrong), answered_500=errors)
    assert not wrong, f"{len(wrong)} requests without a 200 or 500: {wrong[:10]}\n{server.log_text()[-3000:]}"
    assert errors, "the leak never reached the limit: the test proved nothing"
    assert "MemoryError" in server.log_text()
    assert wait_until(lambda: len(server.worker_pids()) == 2, 10)


def test_close_that_blocks(test_app, profile, figures):
    server = test_app("chaos_apps:router", workers=2, timeout=2)
    with _background(server, profile) as pool:
        # Shorter than --timeout: the kept connection is served after close() returns.
        conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=5)
        try:
            for path in ("/close_blocks?s=0.3", "/pid", "/pid", "/pid"):
                conn.request("GET", path)
                response = conn.getresponse()
                assert response.status == 200 and response.read().startswith(b"pid=")
        finally:
            conn.close()
        # Longer than --timeout: the response is complete at once; the worker is aborted.
        # (Were it sent only after close(), the worker would be aborted first.)
        status, body = _get(server.port, "/close_blocks?s=30")
        assert status == 200, (status, body)
        stuck = int(body.split(b"=")[1])
        server.wait_for_log(r"WORKER TIMEOUT \(pid:%d\) .*serving 'GET /close_blocks\?s=30" % stuck, 15)
        assert not wait_gone([stuck], 10)
        server.wait_workers(2, timeout=10, exclude=[stuck])
        pool.wait_requests(10)
    figures(requests=pool.count + 5, failures=len(pool.failures), aborted_workers=1)
    assert not pool.failures, pool.report()
