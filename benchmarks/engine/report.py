"""The results as markdown (one table per scenario, a summary) and a PNG plot."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from .scenarios import Outcome


@dataclass(frozen=True)
class RunInfo:
    """How and where the run happened."""

    command: str
    hardware: str
    date: str
    load_before: str
    load_after: str
    seconds: float
    shapes: str
    source: str


def markdown(outcomes: list[Outcome], info: RunInfo, plot_name: str) -> str:
    lines = ["# Engine benchmarks", "",
             f"Command: `{info.command}`", "",
             f"- hardware: {info.hardware}",
             f"- date: {info.date}; whole run {info.seconds:.0f} s",
             f"- load average (1 / 5 / 15 min) before: {info.load_before}; after: {info.load_after} "
             "(other jobs share this machine)",
             f"- model: {info.shapes}",
             f"- code measured: {info.source}",
             "- timing: interleaved rounds (every variant once per round, so drift hits all alike), warmup rounds "
             "dropped, medians; ratios are taken within this one run", "",
             "## Summary", "",
             "| scenario | measured | target | PEFT | pass |", "|---|---|---|---|---|"]
    for o in outcomes:
        also = f"; {o.also}" if o.also else ""
        lines.append(f"| {o.title} | **{_value(o)}** ({o.metric}{also}) | {o.target} | {o.peft or '-'} | "
                     f"{'pass' if o.passed else '**FAIL**'} |")
    lines += ["", f"![ratios]({plot_name})", ""]
    for o in outcomes:
        lines += [f"## {o.title}", "", "| variant | value | unit | detail |", "|---|---|---|---|"]
        lines += [f"| {m.label} | {_number(m.value)} | {m.unit} | {m.detail} |" for m in o.measures]
        lines += ["", f"**{o.metric}: {_value(o)}** (target {o.target}: {'pass' if o.passed else 'FAIL'})", ""]
        lines += [f"- {note}" for note in o.notes] + [""]
    return "\n".join(lines)


def _value(o: Outcome) -> str:
    return f"{o.value:.1f} ms" if o.target.endswith("ms") else f"{o.value:.2f}x"


def _number(value: float) -> str:
    return f"{value:,.0f}" if abs(value) >= 100 else f"{value:.2f}"


def plot(outcomes: list[Outcome], path: Path) -> None:
    """Left: throughput ratios vs the HF base with the targets; right: the other targets as ratios to their limits."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(12, 4.5), gridspec_kw={"width_ratios": [3, 2]})
    _ratio_bars(left, [o for o in outcomes if o.key in ("prefill", "decode", "heterogeneous")])
    _target_bars(right, [o for o in outcomes if o.key in ("cold_load", "hot_steps", "generation")])
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def _ratio_bars(ax, outcomes: list[Outcome]) -> None:
    colors = {"Stitch": "tab:blue", "Stitch / own slot -1 path": "lightsteelblue", "PEFT": "tab:orange",
              "PEFT, no KV cache": "tab:red"}
    x = 0.0
    ticks, labels, seen = [], [], set()
    for o in outcomes:
        start = x
        for label, ratio in o.ratios.items():
            ax.bar(x, ratio, 0.8, color=colors.get(label, "gray"), label=None if label in seen else label)
            ax.text(x, ratio + 0.02, f"{ratio:.2f}", ha="center", fontsize=8)
            seen.add(label)
            x += 1
        target = float(o.target.split()[1].rstrip("x"))
        ax.hlines(target, start - 0.5, x - 0.5, colors="black", linestyles="dashed")
        ticks.append((start + x - 1) / 2)
        labels.append(o.key)
        x += 0.8
    ax.set_xticks(ticks, labels)
    ax.set_ylabel("throughput / HF base model (light: / Stitch's slot -1 path)")
    ax.set_title("Throughput vs the base model (dashed: target)")
    ax.legend(fontsize=8)


def _target_bars(ax, outcomes: list[Outcome]) -> None:
    """Each measure divided by its limit: below 1 passes for <= targets, above 1 for >= targets."""
    names, values, colors = [], [], []
    for o in outcomes:
        limit = float(o.target.split()[1].rstrip("xms"))
        names.append({"cold_load": "cold load p50\n/ 10 ms", "hot_steps": "hot step\n/ undisturbed / 1.2",
                      "generation": "generation\nStitch/PEFT / 2"}[o.key])
        values.append(o.value / limit)
        colors.append("tab:green" if o.passed else "tab:red")
    ax.bar(names, values, color=colors)
    for i, v in enumerate(values):
        ax.text(i, v + 0.02, f"{v:.2f}", ha="center", fontsize=8)
    ax.axhline(1.0, color="black", linestyle="dashed")
    ax.set_title("Measured / target limit (green: pass)")
