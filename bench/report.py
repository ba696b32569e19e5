# Turning runs into tables. A ratio is always taken inside one round (both
# servers measured minutes apart at most) and then the median over rounds is
# reported: on a shared machine only such same-run ratios mean anything.
from __future__ import annotations

import statistics
from collections.abc import Callable, Iterable, Sequence
from typing import Any

Run = dict[str, Any]


def median(values: Iterable[float | None]) -> float | None:
    present = [v for v in values if v is not None]
    return statistics.median(present) if present else None


def fmt(value: float | None, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def mib(kib: float | None) -> str:
    return fmt(None if kib is None else kib / 1024, ".1f")


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h)
              for i, h in enumerate(header)]

    def line(cells: Sequence[str]) -> str:
        return "| " + " | ".join(c.ljust(w) for c, w in zip(cells, widths, strict=True)) + " |"

    rule = "|" + "|".join("-" * (w + 2) for w in widths) + "|"
    return "\n".join([line(header), rule, *(line(r) for r in rows)])


def round_ratios(runs: Sequence[Run], server: str, baseline: str,
                 value: Callable[[Run], float | None]) -> list[float]:
    """value(server) / value(baseline) for every round where both have one."""
    ratios = []
    for rnd in sorted({r["round"] for r in runs}):
        mine = [value(r) for r in runs if r["server"] == server and r["round"] == rnd]
        base = [value(r) for r in runs if r["server"] == baseline and r["round"] == rnd]
        if mine and base and mine[0] is not None and base[0]:
            ratios.append(mine[0] / base[0])
    return ratios


def _failures(runs: Sequence[Run]) -> str:
    bad = sum(1 for r in runs if not r.get("ok"))
    return f" FAILED {bad}/{len(runs)}" if bad else ""


# --- throughput scenarios

def summarize_load(runs: Sequence[Run], servers: Sequence[str], baseline: str | None
                   ) -> dict[str, dict[str, Any]]:
    out = {}
    for name in servers:
        mine = [r for r in runs if r["server"] == name]
        ok = [r for r in mine if r.get("rps") is not None]
        s: dict[str, Any] = {
            "runs": len(mine),
            "failed": sum(1 for r in mine if not r.get("ok")),
            "rps": median(r["rps"] for r in ok),
            "rps_min": min((r["rps"] for r in ok), default=None),
            "rps_max": max((r["rps"] for r in ok), default=None),
            "p50_ms": median(r["p50_ms"] for r in ok),
            "p99_ms": median(r["p99_ms"] for r in ok),
            "errors": sum(r["errors_total"] for r in ok),
            "non2xx": sum(r["errors"]["status"] for r in ok),
            "cpu_us_per_req": median(r["cpu_us_per_req"] for r in ok),
            "sys_frac": median(r["sys_frac"] for r in ok),
            "server_cores": median(r["server_cores"] for r in ok),
            "wrk_cores": median(r["wrk_cores"] for r in ok),
            "procs": max((r["memory"]["procs"] for r in ok), default=None),
        }
        for key in ("master_rss_kib", "worker_rss_kib", "worker_pss_kib", "total_pss_kib"):
            s[key] = median(r["memory"][key] for r in ok)
        if baseline:
            s["rps_ratio"] = median(round_ratios(runs, name, baseline, lambda r: r.get("rps")))
            s["cpu_ratio"] = median(round_ratios(runs, name, baseline,
                                                 lambda r: r.get("cpu_us_per_req")))
        out[name] = s
    return out


def load_table(summary: dict[str, dict[str, Any]], baseline: str | None) -> str:
    header = ["server", "req/s", "(min-max)", "p50 ms", "p99 ms", "errors", "CPU µs/req",
              "sys %", "srv cores", "wrk cores", "procs", "master RSS MiB", "worker RSS MiB",
              "worker PSS MiB", "total PSS MiB"]
    if baseline:
        header += [f"req/s ÷ {baseline}", f"CPU/req ÷ {baseline}"]
    rows = []
    for name, s in summary.items():
        errors = str(s["errors"]) + (f" ({s['non2xx']} non-2xx)" if s["non2xx"] else "")
        if s["failed"]:
            errors += f" FAILED {s['failed']}/{s['runs']}"
        row = [name, fmt(s["rps"], ".0f"),
               f"{fmt(s['rps_min'], '.0f')}-{fmt(s['rps_max'], '.0f')}",
               fmt(s["p50_ms"], ".2f"), fmt(s["p99_ms"], ".2f"), errors,
               fmt(s["cpu_us_per_req"], ".0f"),
               fmt(None if s["sys_frac"] is None else 100 * s["sys_frac"], ".0f"),
               fmt(s["server_cores"], ".2f"), fmt(s["wrk_cores"], ".2f"),
               fmt(s["procs"], "d"), mib(s["master_rss_kib"]), mib(s["worker_rss_kib"]),
               mib(s["worker_pss_kib"]), mib(s["total_pss_kib"])]
        if baseline:
            row += [fmt(s.get("rps_ratio"), ".2f"), fmt(s.get("cpu_ratio"), ".2f")]
        rows.append(row)
    return markdown_table(header, rows)


# --- start-up and shutdown

def summarize_lifecycle(runs: Sequence[Run], servers: Sequence[str], baseline: str | None
                        ) -> dict[str, dict[str, Any]]:
    out = {}
    for name in servers:
        mine = [r for r in runs if r["server"] == name]
        starts = [r["start_s"] for r in mine if r.get("start_s") is not None]
        stops = [r["stop_s"] for r in mine if r.get("stop_s") is not None]
        s: dict[str, Any] = {
            "runs": len(mine),
            "failed": sum(1 for r in mine if not r.get("ok")),
            "workers": mine[0]["workers"] if mine else None,
            "start_s": median(starts), "start_min": min(starts, default=None),
            "start_max": max(starts, default=None),
            "stop_s": median(stops), "stop_min": min(stops, default=None),
            "stop_max": max(stops, default=None),
            "killed": sum(1 for r in mine if r.get("killed")),
            "exit_codes": sorted({str(r.get("exit")) for r in mine}),
            "unsettled": sum(1 for r in mine if r.get("settled") is False),
        }
        if baseline:
            s["start_ratio"] = median(round_ratios(runs, name, baseline, lambda r: r.get("start_s")))
            s["stop_ratio"] = median(round_ratios(runs, name, baseline, lambda r: r.get("stop_s")))
        out[name] = s
    return out


def lifecycle_table(summary: dict[str, dict[str, Any]], baseline: str | None) -> str:
    header = ["server", "workers", "launch → first response s", "(min-max)",
              "SIGTERM → all exited s", "(min-max)", "killed", "exit codes"]
    if baseline:
        header += [f"start ÷ {baseline}", f"stop ÷ {baseline}"]
    rows = []
    for name, s in summary.items():
        killed = str(s["killed"]) + (f" FAILED {s['failed']}/{s['runs']}" if s["failed"] else "")
        row = [name, fmt(s["workers"], "d"), fmt(s["start_s"], ".3f"),
               f"{fmt(s['start_min'], '.3f')}-{fmt(s['start_max'], '.3f')}",
               fmt(s["stop_s"], ".3f"),
               f"{fmt(s['stop_min'], '.3f')}-{fmt(s['stop_max'], '.3f')}",
               killed, ",".join(s["exit_codes"])]
        if baseline:
            row += [fmt(s.get("start_ratio"), ".2f"), fmt(s.get("stop_ratio"), ".2f")]
        rows.append(row)
    return markdown_table(header, rows)


# --- memory over many requests

def memory_table(runs: Sequence[Run]) -> str:
    header = ["server", "requests", "seconds", "master RSS start → end MiB", "growth KiB",
              "master RSS peak MiB", "master flat?", "worker RSS start → end MiB",
              "worker PSS end MiB", "workers replaced"]
    rows = []
    for r in runs:
        if not r.get("ok"):
            rows.append([r["server"], "-", "-", "-", "-", "-", "FAILED", "-", "-", "-"])
            continue
        m0, m1 = r["master_rss_start_kib"], r["master_rss_end_kib"]
        growth = None if m0 is None or m1 is None else m1 - m0
        verdict = "-" if growth is None else ("yes" if growth <= r["tolerance_kib"] else "NO")
        rows.append([
            r["server"], f"{r['requests']:,}" + ("" if r["reached"] else " (short)"),
            fmt(r["seconds"], ".0f"),
            f"{mib(m0)} → {mib(m1)}", fmt(growth, "+d"), mib(r["master_rss_peak_kib"]),
            verdict, f"{mib(r['worker_rss_start_kib'])} → {mib(r['worker_rss_end_kib'])}",
            mib(r["worker_pss_end_kib"]), "yes" if r["workers_replaced"] else "no",
        ])
    return markdown_table(header, rows)


# --- one line per server over every scenario

def overview_table(results: dict[str, dict[str, Any]], servers: Sequence[str],
                   baseline: str | None) -> str:
    """req/s (and the ratio to the baseline) per load scenario; start-up and
    stop times from the lifecycle scenario."""
    loads = [n for n, r in results.items() if r["kind"] == "load"]
    life = next((r for r in results.values() if r["kind"] == "lifecycle"), None)
    header = ["server", *loads]
    if life:
        header += ["start s", "stop s"]
    rows = []
    for name in servers:
        row = [name]
        for scenario in loads:
            s = results[scenario]["summary"].get(name, {})
            cell = fmt(s.get("rps"), ".0f")
            if baseline and s.get("rps_ratio") is not None:
                cell += f" ({s['rps_ratio']:.2f}×)"
            row.append(cell)
        if life:
            s = life["summary"].get(name, {})
            row += [fmt(s.get("start_s"), ".3f"), fmt(s.get("stop_s"), ".3f")]
        rows.append(row)
    return markdown_table(header, rows)
