"""A run's numbers: throughput, latency percentiles, errors, SLO attainment, cache, memory.

:func:`summarize` turns a :class:`~serve.bench.loadgen.RunOutcome` into one JSON-ready
dict (``result.json`` holds it, per-request records included); :func:`summary_markdown`
renders its headline numbers as a markdown table. Only requests due after the warm-up
count; every count below is of those.

* ``achieved_throughput``: successful requests per second over the measured window (from
  the end of the warm-up to the last answer, so a backlog that drains late lowers it).
* ``slo.attainment``: the share of measured requests that succeeded within the bound
  (TTFT for generate, end-to-end latency otherwise); errors count as misses.
"""
from __future__ import annotations

import json
import os
import platform
from collections import Counter
from dataclasses import asdict
from pathlib import Path
from typing import Any, Iterable

import numpy as np

from .client import RequestRecord
from .loadgen import RunOptions, RunOutcome
from .workload import WorkloadSpec

PERCENTILES = (50, 90, 99)


def distribution_ms(seconds: Iterable[float | None]) -> dict[str, float | int | None]:
    """count, mean, p50 / p90 / p99 and max of ``seconds`` (Nones skipped), in milliseconds."""
    values = np.array([s for s in seconds if s is not None], dtype=np.float64) * 1e3
    if not len(values):
        return {"count": 0, "mean": None, **{f"p{p}": None for p in PERCENTILES}, "max": None}
    marks = np.percentile(values, PERCENTILES)
    return {"count": int(len(values)), "mean": float(values.mean()),
            **{f"p{p}": float(v) for p, v in zip(PERCENTILES, marks)}, "max": float(values.max())}


def environment() -> dict[str, Any]:
    """The machine the load generator ran on."""
    return {"platform": platform.platform(), "processor": platform.processor() or platform.machine(),
            "cpu_count": os.cpu_count(), "python": platform.python_version(),
            "load_average": list(os.getloadavg()) if hasattr(os, "getloadavg") else None}


def _window(measured: list[RequestRecord], warmup: float) -> float:
    if not measured:
        return 0.0
    return max(r.done for r in measured) - max(warmup, min(r.scheduled for r in measured))


def _counts(measured: list[RequestRecord], warmup_count: int) -> dict[str, Any]:
    errors = [r for r in measured if not r.ok]
    return {"warmup": warmup_count, "measured": len(measured), "successes": len(measured) - len(errors),
            "errors": len(errors), "errors_by_status": dict(Counter(r.status for r in errors)),
            "errors_by_code": dict(Counter(r.code or r.status for r in errors))}


def slo_attainment(measured: list[RequestRecord], task: str, bound_ms: float | None) -> dict[str, Any]:
    """Share of measured requests that succeeded within ``bound_ms`` (TTFT for generate, else latency)."""
    metric = "ttft" if task == "generate" else "latency"
    if bound_ms is None or not measured:
        return {"metric": metric, "bound_ms": bound_ms, "attainment": None}
    met = sum(1 for r in measured if r.ok and getattr(r, metric) is not None and getattr(r, metric) * 1e3 <= bound_ms)
    return {"metric": metric, "bound_ms": bound_ms, "attainment": met / len(measured)}


def timeline(records: list[RequestRecord], bin_seconds: float = 1.0) -> list[dict[str, Any]]:
    """Per time bin (completions binned by completion time): sent, completed, errors, latency p50 / p99 in ms."""
    if not records:
        return []
    count = int(max(r.done for r in records) // bin_seconds) + 1
    sent, done = [0] * count, [[] for _ in range(count)]
    for r in records:
        sent[min(int(r.sent // bin_seconds), count - 1)] += 1
        done[int(r.done // bin_seconds)].append(r)
    bins = []
    for k in range(count):
        latencies = distribution_ms(r.latency for r in done[k] if r.ok)
        bins.append({"t": k * bin_seconds, "sent": sent[k], "completed": sum(1 for r in done[k] if r.ok),
                     "errors": sum(1 for r in done[k] if not r.ok), "p50_ms": latencies["p50"],
                     "p99_ms": latencies["p99"]})
    return bins


def memory(samples: list[tuple[float, int]], pids: list[int], warmup: float) -> dict[str, Any] | None:
    """RSS at the end of the warm-up, at the end and at its peak after it; growth as fractions."""
    if not samples:
        return None
    after = [(t, b) for t, b in samples if t >= warmup] or samples[-1:]
    first, last, peak = after[0][1], after[-1][1], max(b for _, b in after)
    return {"pids": pids, "rss_after_warmup": first, "rss_end": last, "rss_peak": peak,
            "growth_end": (last - first) / first if first else None,
            "growth_peak": (peak - first) / first if first else None,
            "samples": [[t, b] for t, b in samples]}


def _cache(outcome: RunOutcome, requests: int) -> dict[str, Any]:
    """Counters before / after and their change; ``per_request``: misses, loads and ms spent loading
    per measured request."""
    if outcome.cache_before is None or outcome.cache_after is None:
        return {"error": outcome.metrics_error}
    delta = outcome.cache_after.minus(outcome.cache_before)
    per_request = {"misses": delta.misses / requests, "loads": delta.loads / requests,
                   "load_ms": 1e3 * delta.load_seconds / requests} if requests else None
    return {"before": outcome.cache_before.to_dict(), "after": outcome.cache_after.to_dict(),
            "delta": delta.to_dict(), "per_request": per_request}


def summarize(outcome: RunOutcome, spec: WorkloadSpec, options: RunOptions, slo_ms: float | None = None,
              scheduled: int | None = None, adapters: int | None = None) -> dict[str, Any]:
    """Everything about one run, JSON-ready."""
    records = outcome.records
    measured = [r for r in records if not r.warmup]
    ok = [r for r in measured if r.ok]
    window = _window(measured, options.warmup)
    measured_span = max(spec.duration - options.warmup, 1e-9)
    return {
        "config": {"workload": spec.to_dict(), "run": asdict(options), "adapters": adapters, "slo_ms": slo_ms},
        "environment": environment(), "started_at": outcome.started_at, "wall_seconds": outcome.wall_seconds,
        "counts": {"scheduled": scheduled if scheduled is not None else len(records),
                   **_counts(measured, len(records) - len(measured))},
        "offered_rate": len(measured) / measured_span, "measured_window_s": window,
        "achieved_throughput": len(ok) / window if window > 0 else 0.0,
        "latency_ms": distribution_ms(r.latency for r in ok), "ttft_ms": distribution_ms(r.ttft for r in ok),
        "tpot_ms": distribution_ms(r.tpot for r in ok),
        "send_lag_ms": distribution_ms(r.sent - r.scheduled for r in measured),
        "tokens": {"prompt": sum(r.prompt_tokens for r in ok), "output": sum(r.output_tokens for r in ok),
                   "output_per_s": sum(r.output_tokens for r in ok) / window if window > 0 else 0.0},
        "slo": slo_attainment(measured, options.task, slo_ms), "cache": _cache(outcome, len(measured)),
        "memory": memory(outcome.rss, outcome.rss_pids, options.warmup),
        "timeline": timeline(records), "requests": [r.to_dict() for r in records],
    }


def _fmt(value: Any, digits: int = 1) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def summary_rows(result: dict[str, Any]) -> list[tuple[str, str]]:
    """(metric, value) rows of a run's headline numbers."""
    counts, slo, lat = result["counts"], result["slo"], result["latency_ms"]
    rows = [("offered rate (req/s)", _fmt(result["offered_rate"], 2)),
            ("achieved throughput (req/s)", _fmt(result["achieved_throughput"], 2)),
            ("requests measured / ok / errors", f"{counts['measured']} / {counts['successes']} / {counts['errors']}"),
            ("errors by status", ", ".join(f"{k}: {v}" for k, v in counts["errors_by_status"].items()) or "none"),
            ("latency p50 / p90 / p99 (ms)", " / ".join(_fmt(lat[f"p{p}"]) for p in PERCENTILES))]
    if result["ttft_ms"]["count"]:
        rows += [(f"{name} p50 / p90 / p99 (ms)", " / ".join(_fmt(result[key][f"p{p}"], 2) for p in PERCENTILES))
                 for name, key in (("TTFT", "ttft_ms"), ("TPOT", "tpot_ms"))]
        rows.append(("output tokens/s", _fmt(result["tokens"]["output_per_s"])))
    if slo["bound_ms"] is not None:
        rows.append((f"SLO attainment ({slo['metric']} <= {_fmt(slo['bound_ms'], 0)} ms)",
                     _fmt(100 * slo["attainment"], 1) + " %" if slo["attainment"] is not None else "-"))
    rows += _cache_rows(result["cache"]) + _memory_rows(result["memory"])
    rows.append(("client send lag p99 (ms)", _fmt(result["send_lag_ms"]["p99"], 2)))
    return rows


def _cache_rows(cache: dict[str, Any]) -> list[tuple[str, str]]:
    if "delta" not in cache:
        return [("adapter cache", f"not read: {cache.get('error')}")]
    delta, per_request = cache["delta"], cache.get("per_request") or {}
    rate = "-" if delta["hit_rate"] is None else _fmt(100 * delta["hit_rate"], 1) + " %"
    counts = f"{delta['hits']:.0f} / {delta['misses']:.0f} / {delta['loads']:.0f}"
    per = f"{_fmt(per_request.get('misses'), 2)} / {_fmt(per_request.get('loads'), 2)}"
    return [("adapter cache hit rate (device; server counters)", rate),
            ("adapter cache hits / misses / loads", counts), ("cache misses / disk loads per request", per)]


def _memory_rows(mem: dict[str, Any] | None) -> list[tuple[str, str]]:
    if mem is None:
        return []
    mib = 1 << 20
    return [("server RSS after warm-up / end / peak (MiB)",
             f"{mem['rss_after_warmup'] / mib:.0f} / {mem['rss_end'] / mib:.0f} / {mem['rss_peak'] / mib:.0f}"),
            ("server RSS growth after warm-up (end / peak)",
             f"{100 * (mem['growth_end'] or 0):.1f} % / {100 * (mem['growth_peak'] or 0):.1f} %")]


def summary_markdown(result: dict[str, Any], title: str = "Stitch HTTP benchmark") -> str:
    """The headline numbers of one run as a markdown document."""
    w, run = result["config"]["workload"], result["config"]["run"]
    lines = [f"# {title}", "",
             f"{run['task']} at {w['rate']} req/s ({w['arrival']}) for {w['duration']} s "
             f"(warm-up {run['warmup']} s), {result['config']['adapters']} adapters, popularity {w['popularity']}, "
             f"input {w['input_len'][0]}-{w['input_len'][1]} words, seed {w['seed']}; started {result['started_at']}.",
             "", "| metric | value |", "|---|---|"]
    lines += [f"| {name} | {value} |" for name, value in summary_rows(result)]
    return "\n".join(lines) + "\n"


def write_result(out: Path, result: dict[str, Any], title: str = "Stitch HTTP benchmark") -> None:
    """``result.json`` (compact: it holds every request) and ``summary.md`` under ``out``."""
    out.mkdir(parents=True, exist_ok=True)
    (out / "result.json").write_text(json.dumps(result, separators=(",", ":")) + "\n")
    (out / "summary.md").write_text(summary_markdown(result, title))
