# The benchmark runner: ``python -m bench [SCENARIO ...]`` from the repository
# root. For each scenario every server is started fresh (own session and
# process group, a free port, bench/ as its working directory), probed until
# it answers correctly, warmed up, measured, and stopped. Servers alternate
# within a round, and round r starts with server r, so no server is always
# the one measured first after a cool-down. Figures that matter are ratios to
# the baseline taken within one round; absolute numbers drift with the
# neighbours' load on a shared machine.
from __future__ import annotations

import argparse
import datetime
import http.client
import json
import math
import os
import platform
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Sequence
from typing import Any

from . import report, wrk
from .catalog import (
    BASELINE,
    DEFAULT_SERVERS,
    HOST,
    PRESETS,
    SCENARIOS,
    Scenario,
    ServerSpec,
    parse_server,
)
from .procs import (
    PeakSampler,
    ServerProcess,
    cpu_between,
    host_cpu,
    read_text,
    snapshot,
)

BENCH_DIR = os.path.dirname(os.path.abspath(__file__))
REPO_ROOT = os.path.dirname(BENCH_DIR)
# Variables that would change what a server does behind the command line.
SCRUBBED_ENV = ("PREFORK_CMD_ARGS", "GUNICORN_CMD_ARGS", "WEB_CONCURRENCY", "PORT")
DEFAULT_CONNS = 50
SETTLE_WINDOW = 0.3  # seconds of no CPU use that count as "idle"
SETTLE_TIMEOUT = 15.0


class RunFailed(RuntimeError):
    pass


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m bench",
        description="Benchmark prefork side by side with its peers (see docs/performance.md).")
    p.add_argument("scenarios", nargs="*", metavar="SCENARIO",
                   help="scenarios to run, in this order (default: all; see --list)")
    p.add_argument("-s", "--server", action="append", default=[], metavar="NAME[=COMMAND]",
                   help="a preset or NAME=COMMAND TEMPLATE; repeatable (default: prefork, "
                        "gunicorn-sync, gunicorn-gthread, and bjoern-fork, meinheld if installed)")
    p.add_argument("--baseline", help=f"server the ratios are taken to (default: {BASELINE})")
    p.add_argument("-w", "--workers", type=int, default=2, help="worker processes (default 2)")
    p.add_argument("--threads", type=int, default=4, help="threads for gthread (default 4)")
    p.add_argument("-c", "--conns", type=int,
                   help=f"wrk connections (default {DEFAULT_CONNS}; 10 for big and upload)")
    p.add_argument("-d", "--duration", type=int, default=10, help="measured seconds per run")
    p.add_argument("-r", "--rounds", type=int, default=3)
    p.add_argument("--warmup", type=int, default=2, help="unmeasured wrk seconds per start")
    p.add_argument("--cooldown", type=float, default=1.0, help="seconds between runs")
    p.add_argument("--wrk-threads", type=int, default=1)
    p.add_argument("--wrk-timeout", type=float, default=5.0, help="wrk's per-request timeout")
    p.add_argument("--start-workers", type=int, default=4,
                   help="workers in the lifecycle scenario (default 4)")
    p.add_argument("--term-to", choices=("master", "group"), default="master",
                   help="lifecycle: SIGTERM to the master only (kill -TERM PID; default) or to "
                        "its whole process group (systemd's default KillMode)")
    p.add_argument("--rss-requests", type=int, default=1_000_000,
                   help="master-rss: requests to send (default 1,000,000)")
    p.add_argument("--rss-chunk", type=int, default=10,
                   help="master-rss: longest wrk run between memory samples, seconds")
    p.add_argument("--rss-max-seconds", type=float, default=1800,
                   help="master-rss: give up after this long per server")
    p.add_argument("--rss-tolerance-kib", type=int, default=256,
                   help="master-rss: growth of the master's RSS still called flat")
    p.add_argument("--start-timeout", type=float, default=30.0)
    p.add_argument("--stop-timeout", type=float, default=10.0)
    p.add_argument("--sample-interval", type=float, default=0.25,
                   help="seconds between memory samples during a run")
    p.add_argument("--python", default=sys.executable,
                   help="the Python the servers run with (default: this one)")
    p.add_argument("--log-dir", default="/tmp/prefork-bench-logs")
    p.add_argument("--json", metavar="FILE", help="write every run and the summaries here")
    p.add_argument("--dry-run", action="store_true",
                   help="print what would run (commands included) and start nothing")
    p.add_argument("--list", action="store_true", help="list scenarios and server presets")
    args = p.parse_args(argv)
    unknown = [s for s in args.scenarios if s not in SCENARIOS]
    if unknown:
        p.error(f"unknown scenario {unknown[0]!r}; known: {', '.join(SCENARIOS)}")
    for name in ("workers", "threads", "duration", "rounds", "start_workers", "rss_chunk"):
        if getattr(args, name) < 1:
            p.error(f"--{name.replace('_', '-')} must be at least 1")
    try:
        args.specs = [parse_server(s) for s in args.server]
    except ValueError as exc:
        p.error(str(exc))
    names = [s.name for s in args.specs]
    if len(set(names)) != len(names):
        p.error("two servers with the same name")
    return args


# --- setup

def installed(python: str, module: str) -> bool:
    try:
        done = subprocess.run([python, "-c", f"import {module}"], capture_output=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return done.returncode == 0


def choose_servers(args: argparse.Namespace) -> tuple[list[ServerSpec], list[str]]:
    """The servers to run and notes about the optional ones left out."""
    if args.specs:
        return list(args.specs), []
    chosen, notes = [], []
    for name in DEFAULT_SERVERS:
        spec = PRESETS[name]
        if spec.needs and not installed(args.python, spec.needs):
            notes.append(f"{name} left out: `import {spec.needs}` fails "
                         "(see bench/requirements-c.txt)")
            continue
        chosen.append(spec)
    return chosen, notes


def server_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in SCRUBBED_ENV}
    # bench/ for the apps, the checkout so that it is what gets measured
    paths = [BENCH_DIR, REPO_ROOT] + ([env["PYTHONPATH"]] if env.get("PYTHONPATH") else [])
    env["PYTHONPATH"] = os.pathsep.join(paths)
    return env


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((HOST, 0))
        return int(s.getsockname()[1])


def server_argv(args: argparse.Namespace, spec: ServerSpec, scenario: Scenario, port: int | str,
                workers: int) -> list[str]:
    fields = {"python": args.python, "app": f"apps:{scenario.app}", "port": port,
              "workers": workers, "threads": args.threads, "host": HOST, "bench": BENCH_DIR}
    try:
        return shlex.split(spec.template.format_map(fields))
    except (KeyError, ValueError) as exc:
        raise SystemExit(f"server {spec.name}: bad command template: {exc}") from None


def make_server(args: argparse.Namespace, spec: ServerSpec, scenario: Scenario, workers: int,
                tag: str) -> tuple[ServerProcess, int]:
    port = free_port()
    log = os.path.join(args.log_dir, f"{scenario.name}-{spec.name}-{tag}.log")
    argv = server_argv(args, spec, scenario, port, workers)
    return ServerProcess(spec.name, argv, server_env(), BENCH_DIR, log), port


def conns_for(args: argparse.Namespace, scenario: Scenario) -> int:
    return args.conns or scenario.conns or DEFAULT_CONNS


def wrk_argv(args: argparse.Namespace, scenario: Scenario, port: int | str, secs: int,
             script: str) -> list[str]:
    return wrk.command(f"http://{HOST}:{port}/", conns_for(args, scenario), secs, script,
                       threads=args.wrk_threads, timeout=args.wrk_timeout,
                       headers=scenario.headers)


# --- talking to a server

def request(port: int, scenario: Scenario, timeout: float) -> tuple[int, bytes]:
    body = b"x" * scenario.body_size if scenario.body_size else None
    headers = {"Connection": "close"} if scenario.close else {}
    if body is not None:
        headers["Content-Type"] = "application/octet-stream"
    conn = http.client.HTTPConnection(HOST, port, timeout=timeout)
    try:
        conn.request(scenario.method, "/", body=body, headers=headers)
        resp = conn.getresponse()
        return resp.status, resp.read()
    finally:
        conn.close()


def check_answer(scenario: Scenario, status: int, body: bytes) -> None:
    if not 200 <= status < 300:
        raise RunFailed(f"answered HTTP {status}")
    if scenario.expect and body != scenario.expect:
        raise RunFailed(f"unexpected body {body[:80]!r}")
    if scenario.expect_length and len(body) != scenario.expect_length:
        raise RunFailed(f"body of {len(body)} bytes, expected {scenario.expect_length}")


def wait_ready(srv: ServerProcess, port: int, scenario: Scenario, timeout: float) -> float:
    """Poll until the server answers; -> seconds from launch to the full answer."""
    deadline = srv.launched_at + timeout
    last: Exception | None = None
    while time.monotonic() < deadline:
        if srv.leader_exited():
            raise RunFailed(f"exited before answering:\n{srv.log_tail()}")
        try:
            status, body = request(port, scenario, max(0.1, deadline - time.monotonic()))
        except ConnectionRefusedError as exc:  # not listening yet
            last = exc
            time.sleep(0.005)
            continue
        except (OSError, http.client.HTTPException) as exc:
            last = exc
            time.sleep(0.05)
            continue
        ready = time.monotonic() - srv.launched_at
        check_answer(scenario, status, body)
        return ready
    raise RunFailed(f"no answer within {timeout:.0f} s (last: {last!r}):\n{srv.log_tail()}")


def settle(srv: ServerProcess, timeout: float = SETTLE_TIMEOUT) -> bool:
    """Wait until the group uses no CPU and keeps the same processes for a
    window (every worker booted and idle); False if that never happens."""
    deadline = time.monotonic() + timeout
    before = srv.members()
    while time.monotonic() < deadline:
        time.sleep(SETTLE_WINDOW)
        after = srv.members()
        user, system = cpu_between(before, after)
        if set(after) == set(before) and user + system <= 0.011:
            return True
        before = after
    return False


def warm_up(args: argparse.Namespace, scenario: Scenario, port: int, script: str) -> None:
    """An unmeasured wrk run, then one request: it queues behind whatever the
    killed warm-up left, so the measured window starts with an idle server."""
    if args.warmup > 0:
        wrk.run(wrk_argv(args, scenario, port, args.warmup, script), args.warmup)
        check_answer(scenario, *request(port, scenario, args.start_timeout))


# --- one run of each kind

def load_run(args: argparse.Namespace, spec: ServerSpec, scenario: Scenario, rnd: int,
             script: str) -> dict[str, Any]:
    srv, port = make_server(args, spec, scenario, args.workers, f"r{rnd}")
    rec: dict[str, Any] = {"server": spec.name, "round": rnd, "cmd": srv.command, "ok": False}
    try:
        srv.start()
        rec["ready_s"] = wait_ready(srv, port, scenario, args.start_timeout)
        warm_up(args, scenario, port, script)
        sampler = PeakSampler(srv.pgid, args.sample_interval)
        before, host0 = srv.members(), host_cpu()
        sampler.start()
        try:
            res = wrk.run(wrk_argv(args, scenario, port, args.duration, script), args.duration)
        finally:
            peak = sampler.stop()
        after, host1 = srv.members(), host_cpu()
        user, system = cpu_between(before, after)
        rec.update(res)
        rec.update(measures(res, user, system, host0, host1))
        rec["memory"] = peak.summary()
        if srv.leader_exited():
            raise RunFailed(f"the server exited during the run:\n{srv.log_tail()}")
        check_answer(scenario, *request(port, scenario, args.start_timeout))
        rec["ok"] = True
    except Exception as exc:  # recorded, and the next run goes on
        rec["error"] = f"{type(exc).__name__}: {exc}"
    finally:
        rec["stop"] = srv.stop(args.stop_timeout)
    return rec


def measures(res: dict[str, Any], user: float, system: float,
             host0: tuple[int, int, int], host1: tuple[int, int, int]) -> dict[str, Any]:
    secs, requests = res["duration_s"], res["requests"]
    cpu = user + system
    total = host1[2] - host0[2]
    ncpu = os.cpu_count() or 1
    return {
        "server_user_s": round(user, 3), "server_sys_s": round(system, 3),
        "server_cores": cpu / secs if secs else None,
        "sys_frac": system / cpu if cpu else None,
        "cpu_us_per_req": cpu / requests * 1e6 if requests else None,
        "wrk_cores": res["wrk_cpu_s"] / secs if secs else None,
        "host_busy_cores": (host1[0] - host0[0]) / total * ncpu if total else None,
        "host_steal_cores": (host1[1] - host0[1]) / total * ncpu if total else None,
    }


def lifecycle_run(args: argparse.Namespace, spec: ServerSpec, scenario: Scenario,
                  rnd: int) -> dict[str, Any]:
    workers = args.start_workers
    srv, port = make_server(args, spec, scenario, workers, f"r{rnd}")
    rec: dict[str, Any] = {"server": spec.name, "round": rnd, "cmd": srv.command,
                           "workers": workers, "ok": False, "term_to": args.term_to}
    try:
        srv.start()
        rec["start_s"] = wait_ready(srv, port, scenario, args.start_timeout)
        rec["settled"] = settle(srv)
        rec["procs"] = len(srv.members())
        srv.send(signal.SIGTERM, whole_group=args.term_to == "group")
        gone = srv.wait_gone(args.stop_timeout)
        rec["killed"] = gone is None
        rec["stop_s"] = gone
        if gone is None:
            raise RunFailed(f"still running {args.stop_timeout:g} s after SIGTERM")
        rec["ok"] = True
    except Exception as exc:
        rec["error"] = f"{type(exc).__name__}: {exc}"
    finally:
        rec["stop"] = srv.stop(args.stop_timeout)  # SIGKILLs whatever is left
        rec["exit"] = rec["stop"].get("exit")
    return rec


def memory_run(args: argparse.Namespace, spec: ServerSpec, scenario: Scenario,
               script: str) -> dict[str, Any]:
    srv, port = make_server(args, spec, scenario, args.workers, "r0")
    rec: dict[str, Any] = {"server": spec.name, "round": 0, "cmd": srv.command, "ok": False,
                           "target": args.rss_requests, "tolerance_kib": args.rss_tolerance_kib}
    try:
        srv.start()
        wait_ready(srv, port, scenario, args.start_timeout)
        warm_up(args, scenario, port, script)
        start = snapshot(srv.pgid)
        sampler = PeakSampler(srv.pgid, max(args.sample_interval, 1.0))
        sampler.start()
        try:
            series, errors, secs = drive(args, scenario, port, script, srv)
        finally:
            peak = sampler.stop()
        end = snapshot(srv.pgid)
        if srv.leader_exited():
            raise RunFailed(f"the server exited during the run:\n{srv.log_tail()}")
        rec.update(memory_figures(start, end, peak))
        rec.update(requests=series[-1]["requests"], errors=errors, seconds=secs, series=series,
                   reached=series[-1]["requests"] >= args.rss_requests)
        rec["ok"] = True
    except Exception as exc:
        rec["error"] = f"{type(exc).__name__}: {exc}"
    finally:
        rec["stop"] = srv.stop(args.stop_timeout)
    return rec


def drive(args: argparse.Namespace, scenario: Scenario, port: int, script: str,
          srv: ServerProcess) -> tuple[list[dict[str, Any]], int, float]:
    """wrk in chunks until --rss-requests are served (or time is up), with the
    memory sampled between chunks. -> (series, errors, seconds)"""
    t0 = time.monotonic()
    deadline = t0 + args.rss_max_seconds
    total = errors = 0
    series = [sample_point(srv, 0, 0.0)]
    secs = 1  # a first short chunk gives the rate to size the others by
    while total < args.rss_requests and time.monotonic() < deadline:
        res = wrk.run(wrk_argv(args, scenario, port, secs, script), secs)
        total += res["requests"]
        errors += res["errors_total"]
        elapsed = time.monotonic() - t0
        series.append(sample_point(srv, total, elapsed))
        if srv.leader_exited():
            break
        rate = total / elapsed if elapsed else 1.0
        left = max(0.0, min(deadline - time.monotonic(), (args.rss_requests - total) / rate))
        secs = max(1, min(args.rss_chunk, math.ceil(left)))
    return series, errors, time.monotonic() - t0


def sample_point(srv: ServerProcess, requests: int, elapsed: float) -> dict[str, Any]:
    snap = snapshot(srv.pgid)
    master = snap.master()
    workers = snap.workers().values()
    return {"requests": requests, "seconds": round(elapsed, 2),
            "master_rss_kib": master[0] if master else None,
            "worker_rss_kib": max((m[0] for m in workers), default=None)}


def memory_figures(start: Any, end: Any, peak: Any) -> dict[str, Any]:
    m0, m1, mp = start.master(), end.master(), peak.master()
    w0, w1 = start.workers(), end.workers()
    return {
        "master_rss_start_kib": m0[0] if m0 else None,
        "master_rss_end_kib": m1[0] if m1 else None,
        "master_rss_peak_kib": mp[0] if mp else None,
        "master_pss_end_kib": m1[1] if m1 else None,
        "worker_rss_start_kib": max((m[0] for m in w0.values()), default=None),
        "worker_rss_end_kib": max((m[0] for m in w1.values()), default=None),
        "worker_pss_end_kib": max((m[1] for m in w1.values()), default=None),
        "workers_replaced": set(w0) != set(w1),
    }


# --- scenarios

def rotated(servers: Sequence[ServerSpec], rnd: int) -> list[ServerSpec]:
    k = rnd % len(servers)
    return list(servers[k:]) + list(servers[:k])


def run_scenario(args: argparse.Namespace, scenario: Scenario, servers: Sequence[ServerSpec],
                 baseline: str | None) -> dict[str, Any]:
    if scenario.kind != "load":
        servers = [s for s in servers if s.supervised]
        baseline = baseline if baseline in {s.name for s in servers} else None
    print(f"\n## {scenario.name}: {scenario.title}\n", flush=True)
    runs: list[dict[str, Any]] = []
    script = wrk.write_script(scenario.method, scenario.body_size)
    try:
        if scenario.kind == "memory":
            for spec in servers:
                runs.append(memory_run(args, spec, scenario, script))
                progress(scenario, runs[-1])
                time.sleep(args.cooldown)
        else:
            for rnd in range(args.rounds):
                for spec in rotated(servers, rnd):
                    if scenario.kind == "load":
                        runs.append(load_run(args, spec, scenario, rnd, script))
                    else:
                        runs.append(lifecycle_run(args, spec, scenario, rnd))
                    progress(scenario, runs[-1])
                    time.sleep(args.cooldown)
    finally:
        os.unlink(script)
    names = [s.name for s in servers]
    out: dict[str, Any] = {"title": scenario.title, "kind": scenario.kind, "runs": runs,
                           "baseline": baseline}
    if scenario.kind == "load":
        out["summary"] = report.summarize_load(runs, names, baseline)
        out["table"] = report.load_table(out["summary"], baseline)
    elif scenario.kind == "lifecycle":
        out["summary"] = report.summarize_lifecycle(runs, names, baseline)
        out["table"] = report.lifecycle_table(out["summary"], baseline)
    else:
        out["table"] = report.memory_table(runs)
    print("\n" + out["table"], flush=True)
    return out


def progress(scenario: Scenario, rec: dict[str, Any]) -> None:
    head = f"  round {rec['round']} {rec['server']:<17}"
    if rec.get("error"):
        print(f"{head} FAILED {rec['error']}", flush=True)
    elif scenario.kind == "load":
        print(f"{head} {rec['rps']:9.0f} req/s  p99 {rec['p99_ms']:7.2f} ms  "
              f"err {rec['errors_total']}  {rec['cpu_us_per_req'] or 0:5.0f} µs/req  "
              f"srv {rec['server_cores']:.2f} + wrk {rec['wrk_cores']:.2f} "
              f"of host {rec['host_busy_cores'] or 0:.2f} cores", flush=True)
    elif scenario.kind == "lifecycle":
        print(f"{head} first response {report.fmt(rec.get('start_s'), '.3f')} s, "
              f"stop {report.fmt(rec.get('stop_s'), '.3f')} s (exit {rec.get('exit')}, "
              f"settled {rec.get('settled')}, {rec.get('procs')} processes)", flush=True)
    else:
        print(f"{head} {rec['requests']:,} requests in {rec['seconds']:.0f} s, master RSS "
              f"{report.mib(rec['master_rss_start_kib'])} → "
              f"{report.mib(rec['master_rss_end_kib'])} MiB", flush=True)


# --- the whole run

def machine(args: argparse.Namespace) -> dict[str, Any]:
    cpuinfo = read_text("/proc/cpuinfo") or ""
    model = next((line.split(":", 1)[1].strip() for line in cpuinfo.splitlines()
                  if line.startswith("model name")), platform.processor())
    return {"cpus": os.cpu_count(), "cpu_model": model,
            "kernel": f"{platform.system()} {platform.release()}",
            "loadavg": (read_text("/proc/loadavg") or "").split()[:3]}


def versions(python: str) -> dict[str, str]:
    code = ("import importlib.metadata as m, sys\n"
            "print('python', sys.version.split()[0])\n"
            "for d in ('prefork', 'gunicorn', 'flask', 'werkzeug', 'bjoern', 'meinheld'):\n"
            "    try: print(d, m.version(d))\n"
            "    except Exception: pass\n")
    found: dict[str, str] = {}
    try:
        out = subprocess.run([python, "-c", code], capture_output=True, text=True, timeout=60)
        for line in out.stdout.splitlines():
            name, _, version = line.partition(" ")
            found[name] = version
        done = subprocess.run(["wrk", "--version"], capture_output=True, text=True, timeout=10)
        found["wrk"] = (done.stdout or done.stderr).split(" [")[0].removeprefix("wrk ").strip()
    except (OSError, subprocess.TimeoutExpired) as exc:
        found["error"] = repr(exc)
    return found


def print_plan(args: argparse.Namespace, scenarios: Sequence[Scenario],
               servers: Sequence[ServerSpec], baseline: str | None) -> None:
    print(f"# dry run: {len(scenarios)} scenario(s), servers {[s.name for s in servers]}, "
          f"baseline {baseline}")
    for sc in scenarios:
        chosen = [s for s in servers if sc.kind == "load" or s.supervised]
        workers = args.start_workers if sc.kind == "lifecycle" else args.workers
        rounds = 1 if sc.kind == "memory" else args.rounds
        print(f"\n## {sc.name} ({sc.kind}, {rounds} round(s)): {sc.title}")
        for spec in chosen:
            print(f"  {spec.name}: {shlex.join(server_argv(args, spec, sc, 'PORT', workers))}")
        if sc.kind == "load":
            print(f"  wrk: {shlex.join(wrk_argv(args, sc, 'PORT', args.duration, 'SCRIPT.lua'))}")
        elif sc.kind == "memory":
            print(f"  wrk: {shlex.join(wrk_argv(args, sc, 'PORT', args.rss_chunk, 'SCRIPT.lua'))}"
                  f"  (repeated until {args.rss_requests:,} requests)")
        else:
            print(f"  SIGTERM to the {args.term_to} once idle; stop timeout {args.stop_timeout} s")


def list_catalog() -> None:
    print("scenarios:")
    for sc in SCENARIOS.values():
        print(f"  {sc.name:<12} {sc.title}")
    print("servers (-s):")
    for spec in PRESETS.values():
        print(f"  {spec.name:<17} {spec.template}")


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if args.list:
        list_catalog()
        return 0
    scenarios = [SCENARIOS[n] for n in (args.scenarios or SCENARIOS)]
    servers, notes = choose_servers(args)
    names = [s.name for s in servers]
    if args.baseline and args.baseline not in names:
        raise SystemExit(f"--baseline {args.baseline!r} is not one of {names}")
    baseline = args.baseline or (BASELINE if BASELINE in names else None)
    if args.dry_run:
        print_plan(args, scenarios, servers, baseline)
        return 0
    if shutil.which("wrk") is None:
        raise SystemExit("wrk is not on PATH (Debian/Ubuntu: apt-get install wrk)")
    os.makedirs(args.log_dir, exist_ok=True)
    meta = {"started": datetime.datetime.now().isoformat(timespec="seconds"),
            "command": "python -m bench " + shlex.join(sys.argv[1:] if argv is None else argv),
            "machine": machine(args), "versions": versions(args.python), "servers":
            {s.name: s.template for s in servers}, "baseline": baseline,
            "options": {k: v for k, v in vars(args).items() if k != "specs"}}
    print_header(meta, notes)
    signal.signal(signal.SIGTERM, _interrupt)
    results: dict[str, Any] = {}
    interrupted = False
    try:
        for sc in scenarios:
            results[sc.name] = run_scenario(args, sc, servers, baseline)
    except KeyboardInterrupt:
        interrupted = True
        print("\ninterrupted: stopping the server being measured", file=sys.stderr)
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)  # let the cleanup finish
        ServerProcess.kill_all()
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
    meta["loadavg_end"] = (read_text("/proc/loadavg") or "").split()[:3]
    if sum(1 for r in results.values() if r["kind"] != "memory") > 1:
        label = f"req/s (÷ {baseline})" if baseline else "req/s"
        print(f"\n## overview: {label} per scenario, median of {args.rounds} round(s)\n")
        print(report.overview_table(results, names, baseline))
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"meta": meta, "scenarios": results}, f, indent=1, default=str)
        print(f"\njson: {args.json}")
    if interrupted:
        return 130
    return 1 if print_verdict(results, args) else 0


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def print_header(meta: dict[str, Any], notes: Sequence[str]) -> None:
    m = meta["machine"]
    print(f"# {meta['command']}")
    print(f"# {meta['started']}  {m['cpus']} CPUs ({m['cpu_model']}), {m['kernel']}, "
          f"load {' '.join(m['loadavg'])}")
    print("# " + ", ".join(f"{k} {v}" for k, v in meta["versions"].items()))
    for note in notes:
        print(f"# {note}")
    sys.stdout.flush()


def print_verdict(results: dict[str, Any], args: argparse.Namespace) -> list[str]:
    """Failed runs and a master whose memory grew; printed, and the exit status."""
    problems = []
    for name, res in results.items():
        for run in res["runs"]:
            if not run.get("ok"):
                problems.append(f"{name}/{run['server']} round {run['round']}: "
                                f"{run.get('error', 'failed')}")
            elif res["kind"] == "memory" and run["master_rss_start_kib"] is not None:
                growth = run["master_rss_end_kib"] - run["master_rss_start_kib"]
                if growth > args.rss_tolerance_kib:
                    problems.append(f"{name}/{run['server']}: master RSS grew {growth} KiB")
    for problem in problems:
        print(f"PROBLEM {problem}")
    return problems
