"""Thousands of seeded mutations of valid requests, each on its own connection.

Every connection must end with an answer or a close within a deadline
(the client half-closes after sending, so a truncated head ends at once
instead of waiting for the read deadline); no answer may be a 5xx other
than 501 (an unknown transfer coding) or 505 (an HTTP version the server
does not speak); no worker may die or be replaced; the server logs no
traceback. Any failing request is rebuilt from its index and the seed.
"""

import random
from concurrent.futures import ThreadPoolExecutor

import pytest

from .clients import send_raw
from .conftest import WORKER_CLASSES
from .mutations import mutated

ALLOWED_5XX = {501, 505}
DEADLINE = 10.0
MAX_HANGS = 10  # past this many hangs the server is broken: stop early


def _verdict(result):
    if result.error == "hang":
        return "hang"
    if result.error.startswith("connect"):
        return result.error
    if result.data and not result.data.startswith(b"HTTP/1."):
        return "not an HTTP response"
    bad = [s for s in result.statuses if s >= 500 and s not in ALLOWED_5XX]
    return f"status {bad[0]}" if bad else ""


@pytest.mark.parametrize("parser,worker", [("python", "sync"), ("httptools", "sync"),
                                           ("python", "gthread")])
def test_mutated_request_heads(test_app, profile, figures, parser, worker):
    if parser == "httptools":
        pytest.importorskip("httptools")
    rng = random.Random(profile.seed)
    cases = [mutated(rng) for _ in range(profile.mutated_heads)]
    server = test_app("chaos_apps:router", workers=4, http_parser=parser, **WORKER_CLASSES[worker])
    workers = server.worker_pids()
    problems = []
    statuses: dict[str, int] = {}

    def send(index):
        if sum(1 for p in problems if p[1] == "hang") >= MAX_HANGS:
            return
        data, names = cases[index]
        result = send_raw(server.port, data, DEADLINE)
        verdict = _verdict(result)
        key = str(result.statuses[0]) if result.statuses else (result.error or "closed")
        statuses[key] = statuses.get(key, 0) + 1
        if verdict:
            problems.append((index, verdict, names, data[:300], result.data[:200]))

    with ThreadPoolExecutor(profile.mutation_senders) as pool:
        list(pool.map(send, range(len(cases))))
    log = server.log_text()
    figures(requests=len(cases), failures=len(problems), answers=statuses)
    described = "\n".join(f"#{i} (seed {profile.seed}) {verdict} after {names}: sent {sent!r}, got {got!r}"
                          for i, verdict, names, sent, got in problems[:20])
    assert not problems, f"{len(problems)} of {len(cases)} mutated requests mishandled:\n{described}"
    assert server.worker_pids() == workers, log[-3000:]
    assert "Traceback" not in log, log[log.index("Traceback") - 500:][:3000]
    # still serving
    result = send_raw(server.port, b"GET /pid HTTP/1.1\r\nHost: a\r\n\r\n")
    assert result.statuses == [200], result
