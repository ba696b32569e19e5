"""CPU time and thread switches per request of one prefork worker.

The side-by-side runner counts the whole machine; this counts one worker
alone. For each variant (extra prefork arguments, optionally another
checkout), prefork runs ``-w 1``, wrk warms it for a second, then the
worker's utime + stime (``/proc/PID/stat``) and the context switches of all
its threads (``/proc/PID/task/*/status``) are read before and after one
``wrk -t1 -c50`` run and divided by wrk's request count. Variants alternate
for ``-r`` rounds; the medians (and ranges) are printed:

    .venv-bench/bin/python -m bench.worker_cpu --close -r 3 \\
        -s 'gthread=-k gthread --threads 4' -s 'sync=-k sync' \\
        -s 'before=-k gthread --threads 4@/tmp/before'    # NAME=ARGS[@CHECKOUT]

Needs wrk, as the runner does.
"""

from __future__ import annotations

import argparse
import glob
import http.client
import os
import shlex
import statistics
import sys
import tempfile
import time

from . import wrk
from .catalog import HOST
from .procs import CLK_TCK, ServerProcess, proc_stat, read_text
from .runner import BENCH_DIR, free_port, server_env


def _switches(pid: int) -> int:
    total = 0
    for status in glob.glob(f"/proc/{pid}/task/*/status"):
        for line in (read_text(status) or "").splitlines():
            if line.startswith(("voluntary_ctxt_switches:", "nonvoluntary_ctxt_switches:")):
                total += int(line.split()[1])
    return total


def _cpu(pid: int) -> float:
    st = proc_stat(pid)
    if st is None:
        raise SystemExit(f"worker {pid} is gone")
    return (st.user + st.system) / CLK_TCK


def _worker(server: ServerProcess, port: int, deadline: float) -> int:
    """The worker's pid, once the server answers."""
    while time.monotonic() < deadline:
        workers = [pid for pid in server.running() if pid != server.pgid]
        if workers and _answers(port):
            return workers[0]
        time.sleep(0.1)
    raise SystemExit(f"the server did not answer within the deadline; see {server.log_path}")


def _answers(port: int) -> bool:
    conn = http.client.HTTPConnection(HOST, port, timeout=5)
    try:
        conn.request("GET", "/")
        return conn.getresponse().status == 200
    except OSError:
        return False
    finally:
        conn.close()


def measure(extra: list[str], tree: str, app: str, close: bool, secs: int) -> tuple[float, float, float]:
    """(CPU µs per request, thread switches per request, req/s) of one run."""
    port = free_port()
    env = server_env()
    if tree:
        env["PYTHONPATH"] = os.pathsep.join([BENCH_DIR, os.path.abspath(tree)])
    log = tempfile.NamedTemporaryFile(prefix="worker-cpu-", suffix=".log", delete=False).name
    argv = [sys.executable, "-m", "prefork", "-w", "1", "-b", f"{HOST}:{port}",
            "--log-level", "warning", *extra, f"apps:{app}"]
    server = ServerProcess("prefork", argv, env, BENCH_DIR, log)
    server.start()
    script = wrk.write_script("GET", 0)
    try:
        pid = _worker(server, port, time.monotonic() + 30)
        headers = ("Connection: close",) if close else ()
        url = f"http://{HOST}:{port}/"
        wrk.run(wrk.command(url, 50, 1, script, headers=headers), 1)  # warm-up
        cpu, switches = _cpu(pid), _switches(pid)
        result = wrk.run(wrk.command(url, 50, secs, script, headers=headers), secs)
        cpu, switches = _cpu(pid) - cpu, _switches(pid) - switches
    finally:
        server.stop(10.0, whole_group=True)
        os.unlink(script)
    requests = max(1, result["requests"])
    return cpu / requests * 1e6, switches / requests, result["rps"]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.worker_cpu", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("-s", "--variant", action="append", required=True,
                        help="NAME=EXTRA PREFORK ARGUMENTS[@CHECKOUT] (repeatable)")
    parser.add_argument("--app", default="hello")
    parser.add_argument("--close", action="store_true", help="Connection: close clients")
    parser.add_argument("-r", "--rounds", type=int, default=3)
    parser.add_argument("-d", "--duration", type=int, default=4, help="seconds per run")
    args = parser.parse_args(argv)
    variants = []
    for spec in args.variant:
        name, _, rest = spec.partition("=")
        extra, _, tree = rest.partition("@")
        variants.append((name, shlex.split(extra), tree))
    results: dict[str, list[tuple[float, float, float]]] = {name: [] for name, _, _ in variants}
    for _ in range(args.rounds):
        for name, extra, tree in variants:
            results[name].append(measure(extra, tree, args.app, args.close, args.duration))
    mode = "Connection: close" if args.close else "keep-alive"
    print(f"| variant ({mode}, apps:{args.app}, -w 1, wrk -t1 -c50) | CPU µs/req | switches/req | req/s |")
    print("| --- | --- | --- | --- |")
    for name, runs in results.items():
        cells = []
        for column in range(3):
            values = sorted(run[column] for run in runs)
            cells.append(f"{statistics.median(values):.1f} ({values[0]:.1f}-{values[-1]:.1f})")
        print(f"| {name} | " + " | ".join(cells) + " |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
