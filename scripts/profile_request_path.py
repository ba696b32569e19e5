"""Profile the sync worker's request path with the access log off and on.

    python scripts/profile_request_path.py [N]

Runs N requests (default 20000) through ``SyncWorker.serve_request`` over a
real socket pair, in this process, once with the access log off and once with
it on (to /dev/null), and prints the time per request and how many calls the
profiler saw into prefork/logs.py. With the access log off that count must be
0: the request path does no logging or formatting work at all.

The client is first a peer that is not a trusted proxy, then a trusted one
(127.0.0.1, trusted by default) that sends no forwarding headers: the second
line shows what looking for those headers costs.
"""

from __future__ import annotations

import cProfile
import os
import pstats
import socket
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from prefork.heartbeat import HeartbeatSlot  # noqa: E402
from prefork.http.request import Limits, parse_head  # noqa: E402
from prefork.logs import Logger  # noqa: E402
from prefork.settings import build_config  # noqa: E402
from prefork.workers.ingress import ClientConnection  # noqa: E402
from prefork.workers.sync import SyncWorker  # noqa: E402
from prefork.wsgi import ErrorStream, base_environ  # noqa: E402

HEAD = (b"GET /path?x=1 HTTP/1.1\r\nHost: example.test\r\nUser-Agent: bench/1.0\r\n"
        b"Accept: */*\r\n\r\n")


def app(environ: dict, start_response):  # type: ignore[no-untyped-def]
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b"Hello, World!"]


def run(accesslog: str | None, count: int, profile: bool, trusted: bool = False) -> tuple[float, int]:
    """Seconds per request, and calls into prefork/logs.py (when profiled)."""
    log = Logger("/dev/null", "info", accesslog)
    cfg = build_config([], {}, "bench:app")
    slot = HeartbeatSlot(None)
    worker = SyncWorker(cfg, [], slot, log, 1, os.getppid(), app=app)
    worker.prepare()
    base = base_environ("127.0.0.1", "8000", False, ErrorStream(log.error_log.error))
    server, client = socket.socketpair()
    client.setblocking(False)
    req, _ = parse_head(HEAD, Limits())  # type: ignore[misc]
    remote = ("127.0.0.1", "50000")
    forwarding = ClientConnection(server, remote, None, {}, trusted=True) if trusted else None
    profiler = cProfile.Profile() if profile else None
    started = time.perf_counter()
    if profiler:
        profiler.enable()
    for _ in range(count):
        worker.serve_request(server, req, b"", base, remote, None, forwarding)
        try:
            while client.recv(65536):
                pass
        except BlockingIOError:
            pass
    if profiler:
        profiler.disable()
    elapsed = time.perf_counter() - started
    calls = 0
    if profiler:
        stats = pstats.Stats(profiler)
        calls = sum(v[1] for k, v in stats.stats.items()  # type: ignore[attr-defined]
                    if k[0].endswith(os.path.join("prefork", "logs.py")))
    server.close()
    client.close()
    slot.close()
    log.close()
    return elapsed / count, calls


def main() -> None:
    count = int(sys.argv[1]) if len(sys.argv) > 1 else 20000
    cases = (("access log off", None, False), ("access log on ", os.devnull, False),
             ("access log off, trusted proxy peer", None, True))
    for label, target, trusted in cases:
        per_request, _ = run(target, count, profile=False, trusted=trusted)
        _, calls = run(target, count // 10, profile=True, trusted=trusted)
        print(f"{label}: {per_request * 1e6:6.2f} µs per request; "
              f"calls into prefork/logs.py per request (profiled): {calls / (count // 10):.1f}")


if __name__ == "__main__":
    main()
