"""Pooled keep-alive clients with think time, the way services call each other:
each client keeps one ``http.client`` connection (which never retries) and
waits 15-30 ms between requests. Reports, per server, the requests sent, the
requests that failed (a lost request is a server bug), throughput and latency.

    .venv-bench/bin/python -m bench.pooled -s prefork -s prefork-gthread -s gunicorn-sync
    .venv-bench/bin/python -m bench.pooled -s 'old=python -m prefork -w {workers} -b {host}:{port} {app}'

Servers are the runner's presets (bench/catalog.py) or NAME=TEMPLATE.
"""

from __future__ import annotations

import argparse
import http.client
import random
import shlex
import socket
import statistics
import sys
import threading
import time
from collections.abc import Sequence
from typing import Any

from .catalog import HOST, parse_server
from .procs import ServerProcess
from .runner import BENCH_DIR, free_port, server_env


def client(port: int, until: float, think: tuple[float, float], seed: int,
           out: dict[str, Any]) -> None:
    rng = random.Random(seed)
    conn: http.client.HTTPConnection | None = None
    while time.monotonic() < until:
        if conn is None:
            conn = http.client.HTTPConnection(HOST, port, timeout=10)
        started = time.perf_counter()
        try:
            conn.request("GET", "/")
            resp = conn.getresponse()
            resp.read()
            out["latencies"].append(time.perf_counter() - started)
            if resp.will_close:
                conn.close()
                conn = None
                out["reconnects"] += 1
        except (OSError, http.client.HTTPException) as exc:
            out["failures"].append(type(exc).__name__)
            conn.close()
            conn = None
        time.sleep(rng.uniform(*think))
    if conn is not None:
        conn.close()


def wait_port(port: int, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection((HOST, port), timeout=1):
                return
        except OSError:
            time.sleep(0.05)
    raise SystemExit(f"server on port {port} did not start")


def run(template: str, name: str, args: argparse.Namespace) -> dict[str, Any]:
    port = free_port()
    fields = {"python": args.python, "app": f"apps:{args.app}", "port": port,
              "workers": args.workers, "threads": args.threads, "host": HOST, "bench": BENCH_DIR}
    argv = shlex.split(template.format_map(fields))
    srv = ServerProcess(name, argv, server_env(), BENCH_DIR, f"/tmp/pooled-{name}.log")
    srv.start()
    try:
        wait_port(port, 30)
        time.sleep(0.5)  # let every worker finish booting before the clock starts
        outs = [{"latencies": [], "failures": [], "reconnects": 0} for _ in range(args.clients)]
        until = time.monotonic() + args.duration
        threads = [threading.Thread(target=client, args=(port, until, (args.think_min, args.think_max),
                                                         i, outs[i]))
                   for i in range(args.clients)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(args.duration + 30)
    finally:
        srv.stop(15)
    lat = sorted(x for o in outs for x in o["latencies"])
    failures = [f for o in outs for f in o["failures"]]
    done = len(lat)
    return {
        "server": name, "requests": done + len(failures), "failed": len(failures),
        "failure_kinds": sorted(set(failures)), "req_s": done / args.duration,
        "p50_ms": 1000 * statistics.median(lat) if lat else 0.0,
        "p99_ms": 1000 * lat[int(0.99 * (len(lat) - 1))] if lat else 0.0,
        "reconnects": sum(o["reconnects"] for o in outs),
    }


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("-s", "--server", action="append", required=True)
    p.add_argument("--app", default="raw")
    p.add_argument("-w", "--workers", type=int, default=2)
    p.add_argument("--threads", type=int, default=4)
    p.add_argument("--clients", type=int, default=3)
    p.add_argument("--think-min", type=float, default=0.015)
    p.add_argument("--think-max", type=float, default=0.030)
    p.add_argument("-d", "--duration", type=float, default=10.0)
    p.add_argument("--python", default=sys.executable)
    args = p.parse_args(argv)
    print(f"{args.clients} http.client keep-alive clients, think {args.think_min * 1000:g}-"
          f"{args.think_max * 1000:g} ms, -w {args.workers}, {args.duration:g} s, app {args.app}")
    print(f"{'server':<18}{'requests':>9}{'failed':>8}{'req/s':>8}{'p50 ms':>8}{'p99 ms':>8}"
          f"{'reconn':>8}  failures")
    for arg in args.server:
        spec = parse_server(arg)
        r = run(spec.template, spec.name, args)
        print(f"{r['server']:<18}{r['requests']:>9}{r['failed']:>8}{r['req_s']:>8.0f}"
              f"{r['p50_ms']:>8.2f}{r['p99_ms']:>8.2f}{r['reconnects']:>8}  "
              f"{','.join(r['failure_kinds'])}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
