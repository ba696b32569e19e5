"""The least a worker replacement can cost: fork, a fresh process, exit.

Recycling (``--max-requests``, lifetime, memory) replaces a process, so each
replacement costs at least what the kernel and the interpreter charge for a
fork of the loaded application and the exit of a child, whatever the server
does around it. This measures that floor, in CPU time (the parent's from
``RUSAGE_SELF``, the children's from ``RUSAGE_CHILDREN``), in one process that
has imported the application as ``--preload`` does, with ``gc.freeze()``:

  fork + exit            the child leaves at once (``os._exit``)
  fork + 1 call + exit   the child calls the application once
  fork + N calls + exit  the child calls it N times (a worker's life)

and the cost of one call in a long-lived process. The application is called
directly with a minimal environ, no HTTP: only the process's cost is measured.
With ``--warm`` the parent calls the application once before it forks (a
preloaded master never does; this shows what the application's own lazy set-up
on its first call costs a fresh process).

Given the machine's CPU per request without recycling (server and client,
``2 cores x duration / requests`` from a saturated run, ``--per-request``),
it prints the best throughput ratio recycling every N requests could reach:

    ratio <= (N x per_request) / (N x per_request + floor)

    .venv-bench/bin/python -m bench.recycle_floor --app hello -n 200 --per-request 179
"""

from __future__ import annotations

import argparse
import gc
import importlib
import io
import os
import resource
import sys

from .runner import BENCH_DIR


def _environ() -> dict[str, object]:
    return {"REQUEST_METHOD": "GET", "PATH_INFO": "/", "QUERY_STRING": "", "SERVER_NAME": "localhost",
            "SERVER_PORT": "80", "SERVER_PROTOCOL": "HTTP/1.1", "wsgi.url_scheme": "http",
            "wsgi.input": io.BytesIO(), "wsgi.errors": sys.stderr, "wsgi.version": (1, 0),
            "wsgi.multithread": False, "wsgi.multiprocess": True, "wsgi.run_once": False}


def _call(app) -> None:  # type: ignore[no-untyped-def]
    result = app(_environ(), lambda status, headers, exc_info=None: None)
    try:
        for _ in result:
            pass
    finally:
        close = getattr(result, "close", None)
        if close is not None:
            close()


def _cpu(who: int) -> tuple[float, int]:
    r = resource.getrusage(who)
    return r.ru_utime + r.ru_stime, r.ru_minflt


def fork_cost(app, calls: int, rounds: int) -> tuple[float, float, float]:  # type: ignore[no-untyped-def]
    """Mean CPU seconds (parent, child) and child page faults per fork."""
    parent0, _ = _cpu(resource.RUSAGE_SELF)
    child0, faults0 = _cpu(resource.RUSAGE_CHILDREN)
    for _ in range(rounds):
        pid = os.fork()
        if pid == 0:
            try:
                for _ in range(calls):
                    _call(app)
            finally:
                os._exit(0)
        os.waitpid(pid, 0)
    parent1, _ = _cpu(resource.RUSAGE_SELF)
    child1, faults1 = _cpu(resource.RUSAGE_CHILDREN)
    return (parent1 - parent0) / rounds, (child1 - child0) / rounds, (faults1 - faults0) / rounds


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--app", default="hello", help="an app of bench/apps.py (default: hello)")
    parser.add_argument("-n", "--requests", type=int, default=200, help="requests per worker (--max-requests)")
    parser.add_argument("-r", "--rounds", type=int, default=200, help="forks per measurement")
    parser.add_argument("--warm", action="store_true", help="call the app once in the parent first")
    parser.add_argument("--per-request", type=float, default=0.0,
                        help="machine CPU µs per request without recycling, for the ceiling")
    args = parser.parse_args(argv)
    sys.path.insert(0, BENCH_DIR)
    app = getattr(importlib.import_module("apps"), args.app)
    import prefork.arbiter  # noqa: F401  (what a preloaded master has imported too)
    import prefork.workers.sync  # noqa: F401

    if args.warm:
        _call(app)
    gc.collect()
    gc.freeze()
    costs = {calls: (label, fork_cost(app, calls, args.rounds))
             for label, calls in (("fork + exit", 0), ("fork + 1 call + exit", 1),
                                  (f"fork + {args.requests} calls + exit", args.requests))}
    before, _ = _cpu(resource.RUSAGE_SELF)
    for _ in range(2000):
        _call(app)
    steady = (_cpu(resource.RUSAGE_SELF)[0] - before) / 2000
    print(f"app {args.app}{' (warmed in the parent)' if args.warm else ''}: "
          f"{steady * 1e6:.1f} µs per call in a long-lived process")
    floors = {}
    for calls, (label, (parent, child, faults)) in costs.items():
        extra = parent + child - calls * steady  # what the process costs beyond its calls
        floors[calls] = extra
        print(f"{label:>28}: parent {parent * 1e3:.2f} ms, child {child * 1e3:.2f} ms, "
              f"{faults:.0f} page faults; beyond the calls: {extra * 1e3:.2f} ms")
    if args.per_request:
        life = args.requests * args.per_request * 1e-6
        for label, calls in (("fork + exit", 0), (f"a {args.requests}-call life", args.requests)):
            print(f"ceiling with recycling every {args.requests} requests, floor = {label}: "
                  f"{life / (life + floors[calls]):.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
