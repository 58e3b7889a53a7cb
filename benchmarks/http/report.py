"""Markdown and plot helpers of the HTTP scenarios."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from serve.bench.plots import log_ms_axis, pyplot, save_figure


def md_table(header: list[str], rows: list[list[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return lines + ["| " + " | ".join(row) + " |" for row in rows]


def _mark(met: bool) -> str:
    return "met" if met else "NOT met"


def target_line(goal: dict[str, Any]) -> str:
    """One pair's three targets as a markdown bullet list."""
    return "\n".join([
        f"* **{goal['pair']}**:",
        f"  * saturated throughput ratio {goal['throughput_ratio']:.2f} (target >= 0.8): "
        f"{_mark(goal['throughput_met'])}",
        f"  * p99 at {goal['rate_p70']:g} req/s: {goal['p99_many_ms']:.1f} ms vs {goal['p99_base_ms']:.1f} ms, ratio "
        f"{goal['p99_ratio']:.2f} (target <= 2): {_mark(goal['p99_met'])}",
        f"  * errors at that rate: {goal['errors_at_p70']} (target 0): {_mark(goal['errors_met'])}"])


def cdf_plot(results: dict[str, dict[str, Any]], path: Path, title: str, key: str = "latency") -> Path:
    """CDFs of one per-request field (seconds, shown in ms) of several runs on one axis."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6.5, 4))
    for name, result in results.items():
        values = np.sort([r[key] * 1e3 for r in result["requests"]
                          if r["status"] == "200" and not r["warmup"] and r[key] is not None])
        if len(values):
            ax.plot(values, np.arange(1, len(values) + 1) / len(values), label=name)
    ax.set(xlabel="ms", ylabel="fraction of requests", title=title)
    log_ms_axis(ax)
    ax.grid(True, alpha=0.3)
    ax.legend(loc="lower right", fontsize=8)
    return save_figure(fig, path)
