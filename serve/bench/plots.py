"""PNG plots of a run and of a sweep (matplotlib, Agg backend: no display needed)."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np


def pyplot():
    """matplotlib.pyplot on the Agg backend."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def log_ms_axis(ax, axis: str = "x") -> None:
    """A log-scale axis of milliseconds labelled with plain numbers (10, 20, 50, 100 ...)."""
    from matplotlib.ticker import LogLocator, NullFormatter, ScalarFormatter

    getattr(ax, f"set_{axis}scale")("log")
    target = ax.xaxis if axis == "x" else ax.yaxis
    target.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
    target.set_major_formatter(ScalarFormatter())
    target.set_minor_formatter(NullFormatter())


def _cdf(ax, values_ms: list[float], label: str) -> None:
    if not values_ms:
        return
    values = np.sort(np.asarray(values_ms))
    ax.plot(values, np.arange(1, len(values) + 1) / len(values), label=label)


def latency_cdf(result: dict[str, Any], path: Path) -> Path:
    """CDF of end-to-end latency (and TTFT for generation) of the measured successful requests."""
    plt = pyplot()
    ok = [r for r in result["requests"] if r["status"] == "200" and not r["warmup"]]
    fig, ax = plt.subplots(figsize=(6, 4))
    _cdf(ax, [r["latency"] * 1e3 for r in ok], "end-to-end latency")
    _cdf(ax, [r["ttft"] * 1e3 for r in ok if r["ttft"] is not None], "time to first token")
    bound = result["slo"]["bound_ms"]
    if bound is not None:
        ax.axvline(bound, color="grey", linestyle="--", label=f"SLO {bound:g} ms")
    ax.set(xlabel="ms", ylabel="fraction of requests", title="Latency CDF")
    log_ms_axis(ax)
    ax.grid(True, alpha=0.3)
    ax.legend(loc="lower right")
    return save_figure(fig, path)


def over_time(result: dict[str, Any], path: Path) -> Path:
    """Throughput (sent, completed, errors per second) and latency p50 / p99 per second; RSS if sampled."""
    plt = pyplot()
    bins, memory = result["timeline"], result.get("memory")
    rows = 3 if memory else 2
    fig, axes = plt.subplots(rows, 1, figsize=(7, 2.6 * rows), sharex=True)
    t = [b["t"] for b in bins]
    axes[0].plot(t, [b["sent"] for b in bins], label="sent/s", alpha=0.7)
    axes[0].plot(t, [b["completed"] for b in bins], label="completed/s")
    axes[0].plot(t, [b["errors"] for b in bins], label="errors/s", color="red")
    axes[0].set(ylabel="requests / s", title="Throughput and latency over time")
    for key, label in (("p50_ms", "p50"), ("p99_ms", "p99")):
        axes[1].plot(t, [b[key] if b[key] is not None else np.nan for b in bins], label=f"latency {label}")
    axes[1].set(ylabel="ms")
    log_ms_axis(axes[1], "y")
    if memory:
        samples = np.asarray(memory["samples"], dtype=np.float64)
        axes[2].plot(samples[:, 0], samples[:, 1] / (1 << 20), label="server RSS")
        axes[2].set(ylabel="MiB")
    _mark_warmup(axes, result["config"]["run"]["warmup"])
    axes[-1].set_xlabel("seconds since start")
    for ax in axes:
        ax.grid(True, alpha=0.3)
        ax.legend(loc="upper left", fontsize=8)
    return save_figure(fig, path)


def _mark_warmup(axes, warmup: float) -> None:
    if warmup > 0:
        for ax in axes:
            ax.axvspan(0, warmup, color="grey", alpha=0.12)


def run_plots(result: dict[str, Any], out: Path) -> list[Path]:
    """Both plots of one run under ``out``."""
    return [latency_cdf(result, out / "latency_cdf.png"), over_time(result, out / "over_time.png")]


def sweep_plot(rows: list[dict[str, Any]], path: Path, slo_ms: float | None = None, labels: str = "") -> Path:
    """Achieved throughput and latency p50 / p99 against offered rate, one line per series in ``rows``.

    rows: dicts with ``series``, ``offered_rate``, ``achieved_throughput``, ``p50_ms``, ``p99_ms``.
    """
    plt = pyplot()
    fig, (top, bottom) = plt.subplots(1, 2, figsize=(11, 4))
    for i, series in enumerate(dict.fromkeys(r["series"] for r in rows)):
        mine = [r for r in rows if r["series"] == series]
        x, color = [r["offered_rate"] for r in mine], f"C{i}"
        top.plot(x, [r["achieved_throughput"] for r in mine], marker="o", color=color, label=series)
        bottom.plot(x, [r["p50_ms"] for r in mine], marker=".", linestyle=":", color=color, label=f"{series} p50")
        bottom.plot(x, [r["p99_ms"] for r in mine], marker="o", color=color, label=f"{series} p99")
    limit = max((r["offered_rate"] for r in rows), default=1)
    top.plot([0, limit], [0, limit], color="grey", linestyle="--", label="achieved = offered")
    top.set(xlabel="offered rate (req/s)", ylabel="achieved (req/s)", title=f"Throughput {labels}".strip())
    if slo_ms is not None:
        bottom.axhline(slo_ms, color="grey", linestyle="--", label=f"SLO {slo_ms:g} ms")
    bottom.set(xlabel="offered rate (req/s)", ylabel="ms", title="Latency")
    log_ms_axis(bottom, "y")
    for ax in (top, bottom):
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=8)
    return save_figure(fig, path)


def save_figure(fig, path: Path) -> Path:
    """Write ``fig`` as a PNG at ``path`` and close it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    import matplotlib.pyplot as plt

    plt.close(fig)
    return path
