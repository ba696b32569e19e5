"""How fast the master acts on what its workers report: the handover figures.

For each prefork checkout given with ``--tree`` (default: this one), in
alternating rounds:

  ready    launch to ``READY=1`` (sd_notify), ``-w 2``, the Flask hello app
  reload   ``HUP`` to the next ``READY=1`` (the new generation is serving and
           the old one is retired), ``-w 2``
  quota    requests a worker serves past its ``--max-requests 200`` while its
           successor boots (each worker's start takes ``--boot-delay`` seconds,
           as a real app's imports do), ``-w 1``, two keep-alive clients

    .venv-bench/bin/python -m bench.handover --tree /tmp/before --tree .

Only the standard library; the trees are put first on PYTHONPATH.
"""

from __future__ import annotations

import argparse
import http.client
import os
import shutil
import signal
import socket
import statistics
import sys
import tempfile
import threading
import time
from collections import Counter
from typing import Any

from .catalog import HOST
from .procs import ServerProcess
from .runner import BENCH_DIR, free_port

QUOTA = 200


class Server:
    """A prefork subprocess (its own process group) with its own sd_notify socket."""

    def __init__(self, tree: str, args: list[str], env: dict[str, str] | None = None) -> None:
        self.dir = tempfile.mkdtemp(prefix="handover-")
        self.notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.notify.bind(os.path.join(self.dir, "notify"))
        self.port = free_port()
        child_env = dict(os.environ, **(env or {}))
        child_env["PYTHONPATH"] = os.pathsep.join([os.path.abspath(tree), BENCH_DIR])
        child_env["NOTIFY_SOCKET"] = self.notify.getsockname()
        argv = [sys.executable, "-m", "prefork", "-b", f"{HOST}:{self.port}",
                "--log-level", "warning", *args]
        self.process = ServerProcess("prefork", argv, child_env, BENCH_DIR,
                                     os.path.join(self.dir, "log"))
        self.started = time.perf_counter()
        self.process.start()

    @property
    def pid(self) -> int:
        return self.process.pgid

    def wait_ready(self, timeout: float = 30.0) -> float:
        """Seconds until the next READY=1, from now."""
        begun = time.perf_counter()
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError("no READY=1")
            self.notify.settimeout(left)
            message = self.notify.recv(4096).decode()
            if "READY=1" in message.split("\n"):
                return time.perf_counter() - begun

    def stop(self) -> None:
        self.process.stop(10.0, whole_group=False)  # SIGKILL to the group if it lingers
        self.notify.close()
        shutil.rmtree(self.dir, ignore_errors=True)


def measure_ready(tree: str) -> float:
    server = Server(tree, ["-w", "2", "apps:hello"])
    try:
        server.wait_ready()
        return time.perf_counter() - server.started
    finally:
        server.stop()


def measure_reload(tree: str) -> float:
    server = Server(tree, ["-w", "2", "apps:hello"])
    try:
        server.wait_ready()
        os.kill(server.pid, signal.SIGHUP)
        return server.wait_ready()
    finally:
        server.stop()


def measure_quota(tree: str, seconds: float, boot_delay: float) -> list[int]:
    """Requests past the quota, for each worker that was replaced."""
    server = Server(tree, ["-w", "1", "--max-requests", str(QUOTA), "--max-requests-jitter", "0",
                           "apps:pid"], env={"BENCH_BOOT_DELAY": str(boot_delay)})
    served: Counter[str] = Counter()
    lock = threading.Lock()
    failures: list[str] = []
    try:
        server.wait_ready()
        until = time.monotonic() + seconds
        threads = [threading.Thread(target=_client, args=(server.port, until, served, lock, failures))
                   for _ in range(2)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    finally:
        server.stop()
    if failures:
        print(f"  {len(failures)} failed requests, e.g. {failures[0]}", file=sys.stderr)
    # The last worker was still serving when the clients stopped.
    finished = list(served.values())[:-1]
    return [count - QUOTA for count in finished]


def _client(port: int, until: float, served: Counter[str], lock: threading.Lock,
            failures: list[str]) -> None:
    conn: http.client.HTTPConnection | None = None
    while time.monotonic() < until:
        if conn is None:
            conn = http.client.HTTPConnection(HOST, port, timeout=10)
        try:
            conn.request("GET", "/")
            response = conn.getresponse()
            body = response.read().decode()
        except (OSError, http.client.HTTPException) as exc:
            failures.append(repr(exc))
            conn.close()
            conn = None
            continue
        with lock:
            served[body] += 1
        if response.will_close:
            conn.close()
            conn = None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.handover", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tree", action="append", help="a prefork checkout (repeatable)")
    parser.add_argument("-r", "--rounds", type=int, default=5)
    parser.add_argument("--quota-seconds", type=float, default=6.0)
    parser.add_argument("--boot-delay", type=float, default=0.3)
    args = parser.parse_args(argv)
    trees = args.tree or [os.path.dirname(BENCH_DIR)]
    results: dict[str, dict[str, list[Any]]] = {t: {"ready": [], "reload": [], "quota": []}
                                                for t in trees}
    for round_ in range(args.rounds):
        for tree in trees:
            got = results[tree]
            got["ready"].append(measure_ready(tree))
            got["reload"].append(measure_reload(tree))
            got["quota"] += measure_quota(tree, args.quota_seconds, args.boot_delay)
            print(f"round {round_ + 1} {tree}: ready {got['ready'][-1] * 1000:.0f} ms, "
                  f"reload {got['reload'][-1] * 1000:.0f} ms", file=sys.stderr)
    print("| tree | launch to READY=1 (median) | HUP to READY=1 (median) "
          "| requests past --max-requests 200 (median / max, workers) |")
    print("| --- | --- | --- | --- |")
    for tree, got in results.items():
        quota = got["quota"] or [0]
        print(f"| {tree} | {statistics.median(got['ready']) * 1000:.0f} ms "
              f"| {statistics.median(got['reload']) * 1000:.0f} ms "
              f"| {statistics.median(quota):.0f} / {max(quota)} ({len(got['quota'])}) |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
