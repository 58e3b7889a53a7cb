"""Rates up to saturation, and the highest rate that meets the SLO.

The sweep runs :func:`~serve.bench.run.run_http` at each rate in increasing order and
stops after the first rate where errors appear, where the achieved throughput grew by less
than ``min_growth`` (a fraction) over the best so far, or where it fell below ``keep_up``
times the offered rate (the server no longer keeps up): the server is saturated. The
saturation throughput is the best achieved throughput. A rate *meets the SLO* when it had
no errors and at least ``slo_goal`` of its requests met the bound.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from . import plots
from .run import BenchConfig, resolve_adapters, run_http


@dataclass(frozen=True)
class SweepPolicy:
    """min_growth: throughput must grow at least this fraction per step; keep_up: achieved over offered
    below which the server is saturated; slo_goal: the SLO attainment a rate must reach to meet it."""

    min_growth: float = 0.05
    keep_up: float = 0.9
    slo_goal: float = 0.9


def sweep_row(result: dict[str, Any], series: str = "") -> dict[str, Any]:
    """The numbers of one rate that the sweep table shows."""
    lat, ttft = result["latency_ms"], result["ttft_ms"]
    return {"series": series, "rate": result["config"]["workload"]["rate"], "offered_rate": result["offered_rate"],
            "achieved_throughput": result["achieved_throughput"], "errors": result["counts"]["errors"],
            "errors_by_status": result["counts"]["errors_by_status"], "p50_ms": lat["p50"], "p90_ms": lat["p90"],
            "p99_ms": lat["p99"], "ttft_p99_ms": ttft["p99"], "slo_attainment": result["slo"]["attainment"],
            "hit_rate": result["cache"].get("delta", {}).get("hit_rate"),
            "misses_per_request": (result["cache"].get("per_request") or {}).get("misses")}


def stop_reason(rows: list[dict[str, Any]], policy: SweepPolicy) -> str | None:
    """Why the sweep stops after its last row (None: go on)."""
    last = rows[-1]
    if last["errors"]:
        return f"errors at {last['rate']:g} req/s ({last['errors_by_status']})"
    best = max((r["achieved_throughput"] for r in rows[:-1]), default=0.0)
    if rows[:-1] and last["achieved_throughput"] < best * (1 + policy.min_growth):
        return f"throughput stopped growing at {last['rate']:g} req/s"
    if last["achieved_throughput"] < policy.keep_up * last["offered_rate"]:
        return (f"achieved throughput fell below {100 * policy.keep_up:.0f} % of the offered rate at "
                f"{last['rate']:g} req/s")
    return None


def analyse(rows: list[dict[str, Any]], policy: SweepPolicy, reason: str | None) -> dict[str, Any]:
    """Saturation throughput and the highest rate meeting the SLO."""
    meeting = [r for r in rows if not r["errors"] and r["slo_attainment"] is not None
               and r["slo_attainment"] >= policy.slo_goal]
    return {"saturation_throughput": max((r["achieved_throughput"] for r in rows), default=0.0),
            "saturated": reason is not None, "stop_reason": reason or "rates exhausted before saturation",
            "max_rate_meeting_slo": max((r["rate"] for r in meeting), default=None), "slo_goal": policy.slo_goal}


def run_sweep(config: BenchConfig, rates: list[float], policy: SweepPolicy = SweepPolicy(),
              series: str = "stitch") -> dict[str, Any]:
    """Sweep ``rates`` (ascending); each rate's results go to ``out/rate-<r>/``; writes sweep.json / .md / .png."""
    return run_sweeps({series: config}, rates, policy)[series]


def run_sweeps(configs: dict[str, BenchConfig], rates: list[float],
               policy: SweepPolicy = SweepPolicy()) -> dict[str, dict[str, Any]]:
    """Several series swept side by side: at each rate every unsaturated series runs once, in turn, so
    slow drifts of a shared machine hit all series alike. Returns series -> sweep (see :func:`run_sweep`)."""
    names = {series: resolve_adapters(c.adapters, c.options.url) for series, c in configs.items()}
    rows: dict[str, list[dict[str, Any]]] = {series: [] for series in configs}
    reasons: dict[str, str | None] = {series: None for series in configs}
    for rate in sorted(rates):
        for series, config in configs.items():
            if reasons[series] is not None:
                continue
            out = config.out / f"rate-{rate:g}" if config.out is not None else None
            rows[series].append(sweep_row(run_http(config.at_rate(rate, out), names[series]), series))
            reasons[series] = stop_reason(rows[series], policy)
    sweeps = {}
    for series, config in configs.items():
        sweeps[series] = {"config": {"rates": sorted(rates), "slo_ms": config.slo_ms, "task": config.options.task,
                                     "adapters": len(names[series]), "workload": config.workload.to_dict()},
                          "rows": rows[series], **analyse(rows[series], policy, reasons[series])}
        if config.out is not None:
            write_sweep(config.out, sweeps[series], config.title)
    return sweeps


def sweep_table(rows: list[dict[str, Any]]) -> list[str]:
    """Markdown table lines of sweep rows."""
    def fmt(v, digits=1):
        return "-" if v is None else f"{v:.{digits}f}"

    lines = ["| series | rate | offered | achieved | errors | p50 ms | p90 ms | p99 ms | SLO att. | hit rate | "
             "misses/req |", "|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        att = "-" if r["slo_attainment"] is None else f"{100 * r['slo_attainment']:.1f} %"
        hit = "-" if r["hit_rate"] is None else f"{100 * r['hit_rate']:.1f} %"
        lines.append(f"| {r['series']} | {r['rate']:g} | {fmt(r['offered_rate'], 2)} | "
                     f"{fmt(r['achieved_throughput'], 2)} | {r['errors']} | {fmt(r['p50_ms'])} | {fmt(r['p90_ms'])} | "
                     f"{fmt(r['p99_ms'])} | {att} | {hit} | {fmt(r.get('misses_per_request'), 2)} |")
    return lines


def write_sweep(out: Path, sweep: dict[str, Any], title: str) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / "sweep.json").write_text(json.dumps(sweep, indent=1) + "\n")
    best = sweep["max_rate_meeting_slo"]
    lines = [f"# {title}: sweep", "", *sweep_table(sweep["rows"]), "",
             f"Saturation throughput: {sweep['saturation_throughput']:.2f} req/s ({sweep['stop_reason']}).",
             f"Highest rate meeting the SLO ({sweep['config']['slo_ms']} ms, goal {100 * sweep['slo_goal']:.0f} %): "
             f"{'none' if best is None else f'{best:g} req/s'}.", ""]
    (out / "sweep.md").write_text("\n".join(lines))
    plots.sweep_plot(sweep["rows"], out / "sweep.png", sweep["config"]["slo_ms"])
