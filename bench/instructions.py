"""Instructions per request in a prefork worker, counted by valgrind's callgrind.

Wall-clock and CPU-time figures move with whatever else the machine runs;
instruction counts do not. For each variant (extra prefork arguments), prefork
runs ``-w 1`` under ``valgrind --tool=callgrind --trace-children=yes``, one
``http.client`` keep-alive client sends N requests, and the worker's total is
read from its callgrind file. Two runs with different N cancel out the boot:

    instructions per request = (total(N2) - total(N1)) / (N2 - N1)

    .venv-bench/bin/python -m bench.instructions -s 'off=' -s 'metrics=--metrics-bind 127.0.0.1:0'
    .venv-bench/bin/python -m bench.instructions --tree /tmp/old -s 'sync='   # another checkout

Each variant takes about a minute (the server runs some 50 times slower under
valgrind). Needs valgrind (``apt-get install -y valgrind``).
"""

from __future__ import annotations

import argparse
import glob
import http.client
import os
import shlex
import shutil
import sys
import tempfile
import time

from .catalog import HOST
from .procs import ServerProcess
from .runner import BENCH_DIR, free_port, server_env


def worker_instructions(extra: list[str], app: str, requests: int, python: str,
                        tree: str = "") -> int:
    """The worker's instruction count over its life, having served ``requests``."""
    out = tempfile.mkdtemp(prefix="callgrind-")
    port = free_port()
    argv = ["valgrind", "--tool=callgrind", "--trace-children=yes",
            f"--callgrind-out-file={out}/cg.%p", python, "-m", "prefork", "-w", "1",
            "-b", f"{HOST}:{port}", "--timeout", "600", "--graceful-timeout", "60",
            "--log-level", "warning", *extra, f"apps:{app}"]
    env = server_env()
    if tree:  # another checkout of prefork, e.g. an earlier commit's worktree
        env["PYTHONPATH"] = os.pathsep.join([BENCH_DIR, os.path.abspath(tree)])
    server = ServerProcess("prefork", argv, env, BENCH_DIR, os.path.join(out, "log"))
    server.start()
    try:
        conn = _connect(port, deadline=time.monotonic() + 300)
        for _ in range(requests):
            conn.request("GET", "/")
            conn.getresponse().read()
        conn.close()
    finally:
        # TERM to the master only (it stops its worker, whose callgrind file is
        # written as it exits); the whole group is killed if it lingers.
        server.stop(300.0, whole_group=False)
    totals = {}
    for path in glob.glob(f"{out}/cg.*"):
        pid = int(path.rsplit(".", 1)[1])
        with open(path) as f:
            for line in f:
                if line.startswith("totals:"):
                    totals[pid] = int(line.split()[1])
    shutil.rmtree(out, ignore_errors=True)
    workers = [count for pid, count in totals.items() if pid != server.pgid]
    if len(workers) != 1:
        raise SystemExit(f"expected one worker's callgrind file, found {sorted(totals)}")
    return workers[0]


def _connect(port: int, deadline: float) -> http.client.HTTPConnection:
    """A keep-alive connection once the server answers (one request is sent)."""
    while True:
        conn = http.client.HTTPConnection(HOST, port, timeout=120)
        try:
            conn.request("GET", "/")
            conn.getresponse().read()
            return conn
        except OSError:
            conn.close()
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.instructions", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("-s", "--variant", action="append", required=True,
                        help="NAME=EXTRA PREFORK ARGUMENTS (repeatable; the first is the baseline)")
    parser.add_argument("--app", default="hello")
    parser.add_argument("--requests", type=int, nargs=2, default=[200, 1200], metavar=("N1", "N2"))
    parser.add_argument("--python", default=sys.executable)
    parser.add_argument("--tree", default="", help="measure this prefork checkout instead")
    args = parser.parse_args(argv)
    n1, n2 = args.requests
    rows = []
    for variant in args.variant:
        name, _, extra = variant.partition("=")
        first = worker_instructions(shlex.split(extra), args.app, n1, args.python, args.tree)
        second = worker_instructions(shlex.split(extra), args.app, n2, args.python, args.tree)
        rows.append((name, (second - first) / (n2 - n1)))
        print(f"{name}: {rows[-1][1]:,.0f} instructions per request", file=sys.stderr)
    base = rows[0][1]
    print(f"| variant | instructions per request (apps:{args.app}, N {n1} and {n2}) | ÷ {rows[0][0]} |")
    print("| --- | --- | --- |")
    for name, per_request in rows:
        print(f"| {name} | {per_request:,.0f} | {per_request / base:.3f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
