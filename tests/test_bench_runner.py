"""Smoke tests of the benchmark runner (bench/): its parsing, its arithmetic,
its plan, and that it stops what it starts. No benchmark runs here."""

import os
import signal
import subprocess
import sys
import time

import pytest
from conftest import ROOT

from bench import report, wrk
from bench.procs import MemorySnapshot, ServerProcess

WRK_OUTPUT = """\
Running 3s test @ http://127.0.0.1:40123/
  1 threads and 50 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency     2.11ms  512.30us  14.20ms   91.02%
    Req/Sec    23.81k     1.02k   25.40k    80.00%
  Latency Distribution
     50%    2.01ms
     75%    2.30ms
     90%    2.61ms
     99%    3.70ms
  71093 requests in 3.00s, 9.90MB read
  Socket errors: connect 0, read 2, write 0, timeout 1
Requests/sec:  23697.42
Transfer/sec:      3.30MB
WRKJSON {"requests":71093,"duration_us":3000036,"bytes":10380000,"connect":0,"read":2,\
"write":0,"status":4,"timeout":1,"lat_mean_us":2110.4,"lat_max_us":14200,"p50_us":2010,\
"p90_us":2610,"p99_us":3700,"p999_us":9100}
"""


def test_wrk_output_is_parsed_from_the_lua_summary():
    res = wrk.parse_output(WRK_OUTPUT)
    assert res["requests"] == 71093
    assert res["rps"] == pytest.approx(23697.4, rel=1e-4)
    assert res["text_rps"] == pytest.approx(23697.42)
    assert (res["p50_ms"], res["p99_ms"]) == (2.01, 3.7)
    assert res["errors"] == {"connect": 0, "read": 2, "write": 0, "timeout": 1, "status": 4}
    assert res["errors_total"] == 7


def test_wrk_output_without_the_summary_line_is_an_error():
    text = WRK_OUTPUT.split("WRKJSON")[0]
    with pytest.raises(wrk.WrkError, match="no WRKJSON line"):
        wrk.parse_output(text)


def test_upload_script_sets_method_and_body():
    script = wrk.lua_script("POST", 1 << 20)
    assert 'wrk.method = "POST"' in script
    assert 'string.rep("x", 1048576)' in script


def _load_run(server, rnd, rps, cpu_us):
    memory = {"procs": 3, "master_rss_kib": 1, "worker_rss_kib": 2, "worker_pss_kib": 3,
              "total_pss_kib": 4}
    return {"server": server, "round": rnd, "ok": True, "rps": rps, "p50_ms": 1.0,
            "p99_ms": 2.0, "errors_total": 0, "errors": {"status": 0},
            "cpu_us_per_req": cpu_us, "sys_frac": 0.3, "server_cores": 1.0,
            "wrk_cores": 0.5, "memory": memory}


def test_ratios_are_taken_within_each_round_then_the_median():
    # Round 1 is twice as fast for both: per-round ratios are 2, 2, 3 -> 2,
    # where the ratio of the medians would say 1000 / 400 = 2.5.
    runs = [_load_run("a", 0, 800, 50), _load_run("base", 0, 400, 100),
            _load_run("a", 1, 1600, 50), _load_run("base", 1, 800, 100),
            _load_run("a", 2, 1000, 50), _load_run("base", 2, 333.3333, 100)]
    summary = report.summarize_load(runs, ["a", "base"], "base")
    assert summary["a"]["rps_ratio"] == pytest.approx(2.0)
    assert summary["a"]["cpu_ratio"] == pytest.approx(0.5)
    table = report.load_table(summary, "base")
    assert "req/s ÷ base" in table.splitlines()[0]
    assert "| a " in table


def test_memory_split_between_master_and_workers():
    snap = MemorySnapshot(leader=10, per_pid={10: (20000, 15000), 11: (30000, 20000),
                                              12: (31000, 21000)})
    assert snap.summary() == {"procs": 3, "master_rss_kib": 20000, "master_pss_kib": 15000,
                              "worker_rss_kib": 31000, "worker_pss_kib": 21000,
                              "total_pss_kib": 56000}
    alone = MemorySnapshot(leader=10, per_pid={10: (20000, 15000)})
    assert alone.master() is None and alone.workers() == {10: (20000, 15000)}


def test_dry_run_prints_the_commands_and_starts_nothing():
    proc = subprocess.run(
        [sys.executable, "-m", "bench", "--dry-run", "-s", "prefork", "-s", "gunicorn-sync",
         "-d", "3", "-r", "1", "hello-close", "lifecycle"],
        cwd=ROOT, capture_output=True, text=True, timeout=30)
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    assert "-m prefork -w 2 -b 127.0.0.1:PORT --log-level warning apps:hello" in out
    assert "-m gunicorn -k sync -w 4" in out  # lifecycle uses --start-workers
    assert "wrk -t1 -c50 -d3s --latency" in out and "-H 'Connection: close'" in out


def test_unknown_scenario_is_a_usage_error():
    proc = subprocess.run([sys.executable, "-m", "bench", "--dry-run", "no-such"],
                          cwd=ROOT, capture_output=True, text=True, timeout=30)
    assert proc.returncode == 2
    assert "unknown scenario 'no-such'" in proc.stderr


def test_stop_kills_the_whole_group_when_terminating_the_leader_is_not_enough(tmp_path):
    # The leader forks a child that ignores SIGTERM, then exits on SIGTERM
    # itself: the child is left in the group and must be killed.
    code = ("import os, signal, sys, time\n"
            "if os.fork() == 0:\n"
            "    signal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
            "print('ready', flush=True)\n"
            "time.sleep(30)\n")
    srv = ServerProcess("t", [sys.executable, "-c", code], dict(os.environ), str(tmp_path),
                        str(tmp_path / "log"))
    srv.start()
    try:
        deadline = time.monotonic() + 10
        while len(srv.running()) < 2 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert len(srv.running()) == 2
        result = srv.stop(timeout=0.5, whole_group=True, sig=signal.SIGTERM)
        assert result["killed"] is True
        assert result["exit"] == -signal.SIGTERM
        assert srv.running() == []
    finally:
        srv.send(signal.SIGKILL, whole_group=True)
        srv.reap()


def test_recycle_floor_measures_forks_and_prints_a_ceiling_below_one():
    proc = subprocess.run(
        [sys.executable, "-m", "bench.recycle_floor", "--app", "raw", "-n", "20", "-r", "10",
         "--per-request", "50"],
        cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert any(line.strip().startswith("fork + exit: parent") for line in lines), proc.stdout
    ceilings = [float(line.rsplit(":", 1)[1]) for line in lines if line.startswith("ceiling")]
    assert len(ceilings) == 2 and all(0.0 < c < 1.0 for c in ceilings), proc.stdout
