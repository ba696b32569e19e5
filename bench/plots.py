# The pictures on docs/performance.md, drawn from a benchmark run's JSON (what
# `python -m bench --json FILE` writes): throughput and p99 latency of every
# server in every throughput scenario. Each scenario gets its own panel and
# scale, because req/s differ by 200x between a 1 MiB upload and a bare app;
# comparing servers within a panel is what the figures are for.
"""Draw the throughput and p99 plots of a benchmark run.

    python bench/plots.py                                  # bench/results/published.json -> docs/images/
    python bench/plots.py /tmp/bench.json --out /tmp/plots

Needs matplotlib (in prefork's `docs` and `test` extras).
"""

from __future__ import annotations

import argparse
import json
import os
import textwrap
from collections.abc import Callable, Sequence
from typing import Any

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEFAULT_JSON = os.path.join(ROOT, "bench", "results", "published.json")
DEFAULT_OUT = os.path.join(ROOT, "docs", "images")
HIGHLIGHT = "prefork"
COLOURS = {"prefork": "#3949ab", "gunicorn-sync": "#546e7a"}
OTHER = "#b0bec5"
DPI = 100


def load_scenarios(path: str) -> tuple[dict[str, Any], dict[str, dict[str, Any]]]:
    """The run's meta and its throughput scenarios that have a summary."""
    with open(path, encoding="utf-8") as f:
        data = json.load(f)
    scenarios = {name: sc for name, sc in data["scenarios"].items()
                 if sc.get("kind") == "load" and sc.get("summary")}
    if not scenarios:
        raise SystemExit(f"{path}: no throughput scenario with a summary")
    return data.get("meta", {}), scenarios


def _thousands(value: float) -> str:
    return f"{value:,.0f}"


def _tick(value: float, _pos: int) -> str:
    if value >= 10_000:
        return f"{value / 1000:g}k"
    return f"{value:,.0f}" if value >= 10 else f"{value:g}"


def _panel(ax: Any, name: str, scenario: dict[str, Any], key: str,
           label: Callable[[dict[str, Any]], str]) -> None:
    summary = {s: v for s, v in scenario["summary"].items() if v.get(key) is not None}
    servers = list(summary)[::-1]  # the first server on top
    values = [summary[s][key] for s in servers]
    colours = [COLOURS.get(s, OTHER) for s in servers]
    bars = ax.barh(servers, values, color=colours, height=0.65)
    for bar, server in zip(bars, servers, strict=True):
        ax.annotate(label(summary[server]), (bar.get_width(), bar.get_y() + bar.get_height() / 2),
                    xytext=(3, 0), textcoords="offset points", va="center", fontsize=8)
    from matplotlib.ticker import MaxNLocator

    subtitle = textwrap.fill(scenario["title"].replace("`", ""), 48)
    ax.set_title(name, fontsize=9, fontweight="bold", loc="left", pad=6 + 11 * subtitle.count("\n") + 11)
    ax.text(0, 1.02, subtitle, transform=ax.transAxes, fontsize=8, va="bottom", color="#37474f")
    ax.set_xlim(0, max(values) * 1.5)  # room for the labels
    ax.tick_params(labelsize=8)
    ax.xaxis.set_major_locator(MaxNLocator(4))
    ax.xaxis.set_major_formatter(_tick)
    for label_ in ax.get_yticklabels():
        if label_.get_text() == HIGHLIGHT:
            label_.set_fontweight("bold")
    ax.spines[["top", "right"]].set_visible(False)


def figure(scenarios: dict[str, dict[str, Any]], key: str, heading: str,
           label: Callable[[dict[str, Any]], str]) -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(scenarios)
    cols = 3 if len(names) > 4 else min(2, len(names))
    rows = -(-len(names) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(11, 2.9 * rows + 0.5), squeeze=False, sharey=True)
    for ax, name in zip(axes.flat, names, strict=False):  # more panels than scenarios
        _panel(ax, name, scenarios[name], key, label)
    for ax in list(axes.flat)[len(names):]:
        ax.set_visible(False)
    fig.suptitle(heading, fontsize=11, x=0.01, ha="left")
    fig.tight_layout()
    return fig


def _rps_label(s: dict[str, Any]) -> str:
    ratio = s.get("rps_ratio")
    return _thousands(s["rps"]) + (f"  ({ratio:.2f}×)" if ratio is not None else "")


def _p99_label(s: dict[str, Any]) -> str:
    return f"{s['p99_ms']:.2f} ms"


PLOTS = {
    "perf-throughput.png": ("rps", "Throughput, req/s (median of rounds; × Gunicorn sync in the same "
                                   "rounds) — higher is better", _rps_label),
    "perf-p99.png": ("p99_ms", "p99 latency, ms (median of rounds) — lower is better", _p99_label),
}


def write_plots(json_path: str, out_dir: str) -> list[str]:
    """Write every plot of ``json_path`` into ``out_dir``; return their paths."""
    import matplotlib.pyplot as plt

    meta, scenarios = load_scenarios(json_path)
    os.makedirs(out_dir, exist_ok=True)
    written = []
    for filename, (key, heading, label) in PLOTS.items():
        fig = figure(scenarios, key, heading, label)
        path = os.path.join(out_dir, filename)
        # no Software/date metadata: the file changes only when the figures do
        fig.savefig(path, dpi=DPI, metadata={"Software": None})
        plt.close(fig)
        written.append(path)
    return written


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("json", nargs="?", default=DEFAULT_JSON, help="a run's JSON (default: %(default)s)")
    p.add_argument("--out", default=DEFAULT_OUT, help="directory for the PNG files (default: %(default)s)")
    args = p.parse_args(argv)
    for path in write_plots(args.json, args.out):
        print(f"wrote {os.path.relpath(path)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
