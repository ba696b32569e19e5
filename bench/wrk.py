# Driving wrk. Its own text output rounds latencies and has several units, so
# a Lua done() hook prints one machine-readable line (WRKJSON {...}) with the
# exact counts and percentiles in microseconds; the text's "Requests/sec" is
# kept only as a cross-check.
from __future__ import annotations

import json
import os
import resource
import shlex
import subprocess
import tempfile
from typing import Any

MARK = "WRKJSON "

_DONE = r"""
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'WRKJSON {"requests":%.0f,"duration_us":%.0f,"bytes":%.0f,' ..
    '"connect":%.0f,"read":%.0f,"write":%.0f,"status":%.0f,"timeout":%.0f,' ..
    '"lat_mean_us":%.1f,"lat_max_us":%.0f,"p50_us":%.0f,"p90_us":%.0f,' ..
    '"p99_us":%.0f,"p999_us":%.0f}\n',
    summary.requests, summary.duration, summary.bytes,
    e.connect, e.read, e.write, e.status, e.timeout,
    latency.mean, latency.max, latency:percentile(50), latency:percentile(90),
    latency:percentile(99), latency:percentile(99.9)))
end
"""

ERROR_KINDS = ("connect", "read", "write", "timeout", "status")


class WrkError(RuntimeError):
    pass


def lua_script(method: str = "GET", body_size: int = 0) -> str:
    """The Lua script: request shape (method, body) and the done() reporter."""
    setup = []
    if method != "GET":
        setup.append(f'wrk.method = "{method}"')
    if body_size:
        setup.append(f'wrk.body = string.rep("x", {body_size})')
        setup.append('wrk.headers["Content-Type"] = "application/octet-stream"')
    return "\n".join(setup) + "\n" + _DONE


def write_script(method: str, body_size: int) -> str:
    fd, path = tempfile.mkstemp(prefix="prefork-bench-", suffix=".lua")
    with os.fdopen(fd, "w") as f:
        f.write(lua_script(method, body_size))
    return path


def command(url: str, conns: int, secs: int, script: str, *, threads: int = 1,
            timeout: float = 5.0, headers: tuple[str, ...] = ()) -> list[str]:
    cmd = ["wrk", f"-t{threads}", f"-c{conns}", f"-d{secs}s", "--latency",
           "--timeout", f"{timeout:g}s", "-s", script]
    for header in headers:
        cmd += ["-H", header]
    cmd.append(url)
    return cmd


def parse_output(text: str) -> dict[str, Any]:
    """Figures from wrk's output: the WRKJSON line, plus derived fields."""
    found = None
    text_rps = None
    for line in text.splitlines():
        if line.startswith(MARK):
            found = json.loads(line[len(MARK):])
        elif line.startswith("Requests/sec:"):
            text_rps = float(line.split()[1])
    if found is None:
        raise WrkError("no WRKJSON line in wrk's output:\n" + text[-2000:])
    secs = found["duration_us"] / 1e6
    errors = {kind: int(found[kind]) for kind in ERROR_KINDS}
    return {
        "requests": int(found["requests"]),
        "duration_s": secs,
        "rps": found["requests"] / secs if secs else 0.0,
        "mib_per_s": found["bytes"] / secs / 2**20 if secs else 0.0,
        "p50_ms": found["p50_us"] / 1e3,
        "p90_ms": found["p90_us"] / 1e3,
        "p99_ms": found["p99_us"] / 1e3,
        "p999_ms": found["p999_us"] / 1e3,
        "max_ms": found["lat_max_us"] / 1e3,
        "mean_ms": found["lat_mean_us"] / 1e3,
        "errors": errors,
        "errors_total": sum(errors.values()),
        "text_rps": text_rps,
    }


def run(cmd: list[str], secs: int) -> dict[str, Any]:
    """Run wrk (bounded: its duration plus a minute) and parse what it printed."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    try:
        done = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                              timeout=secs + 60)
    except subprocess.TimeoutExpired as exc:
        raise WrkError(f"wrk did not finish within {secs + 60} s") from exc
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    out = done.stdout.decode("utf-8", "replace")
    if done.returncode != 0 and MARK not in out:
        raise WrkError(f"wrk exited {done.returncode}:\n{out[-2000:]}")
    result = parse_output(out)
    result["wrk_cpu_s"] = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    result["wrk_cmd"] = shlex.join(cmd)
    return result
