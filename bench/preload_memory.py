"""Memory saved by --preload: PSS of the master and workers, with and without it.

    python bench/preload_memory.py [APP_MODULE] [WORKERS]

Runs the real server (prefork.testing.serve) from the repository root, sends
a few requests, and reads Pss from /proc/PID/smaps_rollup (Linux).
"""

import os
import sys

import requests

from prefork.testing import serve

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def pss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/smaps_rollup") as f:
        for line in f:
            if line.startswith("Pss:"):
                return int(line.split()[1])
    raise RuntimeError("no Pss line")


def main() -> None:
    app = sys.argv[1] if len(sys.argv) > 1 else "examples.hello_flask:app"
    workers = int(sys.argv[2]) if len(sys.argv) > 2 else 4
    print(f"{app}, {workers} workers (PSS, MiB)")
    print("| | worker PSS (each) | master PSS | total PSS |")
    print("| --- | --- | --- | --- |")
    for preload in (False, True):
        with serve(app, workers, cwd=ROOT, preload_app=preload) as server:
            for _ in range(20):
                requests.get(server.url)
            pids = server.worker_pids()
            each = sum(pss_kib(p) for p in pids) / len(pids) / 1024
            master = pss_kib(server.master_pid) / 1024
            total = master + each * len(pids)
            label = "with `--preload`" if preload else "without `--preload`"
            print(f"| {label} | {each:.1f} MiB | {master:.1f} MiB | {total:.1f} MiB |")


if __name__ == "__main__":
    main()
