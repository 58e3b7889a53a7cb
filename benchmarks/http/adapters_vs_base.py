"""Scenario 2: HTTP on the embedded default, base only against 1,000 adapters under Zipf(1.1).

    PYTHONPATH=. .venv/bin/python -m benchmarks.http.adapters_vs_base [--quick]

One server (the packaged MiniLM, one model replica, ``max_slots`` 64 device slots, a host
tier of 256 adapters' worth of bytes, 1,000 synthetic adapters) serves four arms, each
swept over the same offered rates up to saturation:

* ``base-embed``: /v1/embeddings on the base model (no adapter at all);
* ``one-classify``: /v1/classify, every request to one adapter (always in its slot): the
  closest a classify request gets to "base only", since the classification head comes
  with an adapter;
* ``many-classify`` / ``many-embed``: the same two endpoints, adapters drawn Zipf(1.1)
  from the 1,000.

Then each pair runs again at 70 % of the many-adapter arm's saturation throughput, same
seed (so the same arrival times and texts), for the p99 comparison. Writes
``scenario.md``, ``scenario.json``, ``sweep.png``, ``p70_cdf.png`` and every run's own
folder under ``--out`` (default ``benchmarks/results/http_adapters``).
"""
from __future__ import annotations

import argparse
import logging
import shlex
import sys
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from serve.bench import plots
from serve.bench.loadgen import RunOptions
from serve.bench.run import BenchConfig, run_http
from serve.bench.sweep import SweepPolicy, run_sweeps, sweep_table
from serve.bench.workload import WorkloadSpec
from serve.engine import EngineConfig
from serve.http.args import StitchArgs

from .common import (RESULTS, hardware, hardware_line, local_app, mean_adapter_bytes, synthetic_adapters,
                     wait_for_quiet, write_json)
from .report import cdf_plot, md_table, target_line

logger = logging.getLogger("benchmarks.http.adapters_vs_base")


@dataclass(frozen=True)
class Arm:
    """One series: its name, task, and the adapters its requests name ('base', a count or a file)."""

    name: str
    task: str
    adapters: str
    pair: str  # the arm it is compared with


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--adapters", type=int, default=1000)
    parser.add_argument("--slots", type=int, default=64)
    parser.add_argument("--host-adapters", type=int, default=256, help="host tier size in adapters' worth of bytes")
    parser.add_argument("--rates", default="8,16,24,32,40,48,64,96", help="sweep rates (req/s)")
    parser.add_argument("--duration", type=float, default=20.0, help="seconds per sweep rate")
    parser.add_argument("--warmup", type=float, default=3.0, help="unmeasured seconds at the start of each run")
    parser.add_argument("--p70-duration", type=float, default=60.0, help="seconds of the runs at 70 %% of saturation")
    parser.add_argument("--slo-ms", type=float, default=250.0, help="end-to-end latency SLO (ms)")
    parser.add_argument("--input-len", default="8:32")
    parser.add_argument("--port", type=int, default=8400)
    parser.add_argument("--out", type=Path, default=RESULTS / "http_adapters")
    parser.add_argument("--arms", default="base-embed,one-classify,many-classify,many-embed",
                        help="which arms (also: resident-classify, a Zipf mix of as many adapters as slots)")
    parser.add_argument("--quick", action="store_true", help="tiny version (checks the harness in a few minutes)")
    return parser.parse_args(argv)


def _quick(ns: argparse.Namespace) -> argparse.Namespace:
    ns.adapters, ns.slots, ns.host_adapters, ns.rates = 40, 8, 16, "8,16,32"
    ns.duration, ns.warmup, ns.p70_duration, ns.out = 6.0, 1.0, 8.0, ns.out.parent / "http_adapters_quick"
    return ns


def server_args(directory: Path, manifest: dict, ns: argparse.Namespace) -> StitchArgs:
    host_bytes = ns.host_adapters * mean_adapter_bytes(manifest)
    engine = EngineConfig(max_slots=ns.slots, max_host_bytes=host_bytes, max_rank=16, max_input_tokens=128)
    return StitchArgs(engine=engine, adapter_dirs=(directory,))


def arms(directory: Path, count: int, slots: int, chosen: str) -> list[Arm]:
    """The chosen arms, in this order; ``resident-classify`` names only as many adapters as there are slots."""
    names = (directory / "names.txt").read_text().split()
    (directory / "one-adapter.txt").write_text(names[0] + "\n")
    (directory / "resident.txt").write_text("\n".join(names[:slots]) + "\n")
    every = [Arm("base-embed", "embed", "base", "many-embed"),
             Arm("one-classify", "classify", str(directory / "one-adapter.txt"), "many-classify"),
             Arm("resident-classify", "classify", str(directory / "resident.txt"), "one-classify"),
             Arm("many-classify", "classify", str(count), "one-classify"),
             Arm("many-embed", "embed", str(count), "base-embed")]
    wanted = chosen.split(",")
    return [arm for arm in every if arm.name in wanted]


def config(url: str, arm: Arm, ns: argparse.Namespace, rate: float, duration: float, out: Path | None) -> BenchConfig:
    low, high = (int(x) for x in ns.input_len.split(":"))
    workload = WorkloadSpec(popularity="zipf:1.1", rate=rate, duration=duration, input_len=(low, high), seed=0)
    options = RunOptions(url=url, task=arm.task, warmup=ns.warmup if out is not None else 0.0)
    return BenchConfig(options=options, workload=workload, adapters=arm.adapters, out=out, slo_ms=ns.slo_ms,
                       title=f"Scenario 2, {arm.name}")


def sweep_arms(url: str, ns: argparse.Namespace, all_arms: list[Arm]) -> dict[str, dict[str, Any]]:
    """The arms swept side by side (rate by rate), after one unmeasured run fills the cache tiers."""
    rates = [float(r) for r in ns.rates.split(",")]
    many = next((arm for arm in all_arms if arm.adapters.isdigit()), None)
    if many is not None:
        run_http(config(url, many, ns, rates[1], 2 * ns.duration, None))
    configs = {arm.name: replace(config(url, arm, ns, rates[0], ns.duration, ns.out / arm.name / "sweep"),
                                 plots=False) for arm in all_arms}
    return run_sweeps(configs, rates, SweepPolicy())


def p70_runs(url: str, ns: argparse.Namespace, all_arms: list[Arm], sweeps: dict) -> dict[str, dict[str, Any]]:
    """Each many-adapter arm and its pair at 70 % of the many-adapter arm's saturation throughput."""
    results, present = {}, {a.name: a for a in all_arms}
    for many in (a for a in all_arms if a.name.startswith("many") and a.pair in present):
        rate = round(0.7 * sweeps[many.name]["saturation_throughput"], 2)
        for arm in (present[many.pair], many):
            results[arm.name] = run_http(config(url, arm, ns, rate, ns.p70_duration, ns.out / arm.name / "p70"))
    return results


def targets(sweeps: dict, p70: dict) -> list[dict[str, Any]]:
    """The issue's three targets, for the classify pair and for the embed pair."""
    rows = []
    for many, base in (("many-classify", "one-classify"), ("many-embed", "base-embed")):
        if many not in p70 or base not in p70:
            continue
        ratio = sweeps[many]["saturation_throughput"] / max(sweeps[base]["saturation_throughput"], 1e-9)
        p99_many, p99_base = p70[many]["latency_ms"]["p99"], p70[base]["latency_ms"]["p99"]
        errors = p70[many]["counts"]["errors"] + p70[base]["counts"]["errors"]
        rows.append({"pair": f"{many} vs {base}", "throughput_ratio": ratio, "throughput_met": ratio >= 0.8,
                     "p99_many_ms": p99_many, "p99_base_ms": p99_base, "p99_ratio": p99_many / p99_base,
                     "p99_met": p99_many <= 2 * p99_base, "errors_at_p70": errors, "errors_met": errors == 0,
                     "rate_p70": p70[many]["config"]["workload"]["rate"]})
    return rows


def p70_table(p70: dict) -> list[str]:
    header = ["arm", "rate (req/s)", "achieved", "errors", "p50 ms", "p90 ms", "p99 ms", "SLO att.", "hit rate",
              "misses/req", "load ms/req"]
    rows = []
    for name, r in p70.items():
        lat, hit = r["latency_ms"], r["cache"].get("delta", {}).get("hit_rate")
        per_request = r["cache"].get("per_request") or {}
        misses, load_ms = per_request.get("misses"), per_request.get("load_ms")
        rows.append([name, f"{r['config']['workload']['rate']:g}", f"{r['achieved_throughput']:.2f}",
                     str(r["counts"]["errors"]), f"{lat['p50']:.1f}", f"{lat['p90']:.1f}", f"{lat['p99']:.1f}",
                     f"{100 * r['slo']['attainment']:.1f} %", "-" if hit is None else f"{100 * hit:.1f} %",
                     "-" if misses is None else f"{misses:.2f}", "-" if load_ms is None else f"{load_ms:.2f}"])
    return md_table(header, rows)


def markdown(ns, hw, manifest, server: StitchArgs, sweeps, p70, goals, command: str) -> str:
    rows = [row for s in sweeps.values() for row in s["rows"]]
    sat = md_table(["arm", "saturation (req/s)", "stop", "highest rate meeting SLO"],
                   [[n, f"{s['saturation_throughput']:.2f}", s["stop_reason"], str(s["max_rate_meeting_slo"])]
                    for n, s in sweeps.items()])
    return "\n".join([
        "# Scenario 2: base only vs 1,000 adapters (Zipf 1.1), HTTP", "",
        f"Command: `{command}`", "", f"Hardware: {hardware_line(hw)}.", "",
        f"Server: {server.engine.model}, 1 model replica (1 CPU), {server.engine.max_slots} device slots, host tier "
        f"{server.engine.max_host_bytes / (1 << 20):.1f} MiB ({ns.host_adapters} x the mean adapter size of "
        f"{mean_adapter_bytes(manifest) / 1024:.0f} KiB), max rank 16. {manifest['count']} synthetic adapters "
        f"({', '.join(f'{k}: {v}' for k, v in manifest['methods'].items())}), written in {manifest['seconds']:.1f} s, "
        f"{manifest['bytes_on_disk'] / (1 << 20):.0f} MiB on disk.", "",
        f"Workload: Poisson arrivals, Zipf(1.1) popularity, inputs of {ns.input_len} words, {ns.duration:g} s per "
        f"rate ({ns.warmup:g} s warm-up), SLO: latency <= {ns.slo_ms:g} ms for {100 * SweepPolicy().slo_goal:.0f} % "
        "of requests.", "", "## Sweep", "", *sweep_table(rows), "", *sat, "", "![sweep](sweep.png)", "",
        "## At 70 % of the many-adapter arm's saturation", "", *p70_table(p70), "", "![p70](p70_cdf.png)", "",
        "## Targets", "", *[target_line(g) for g in goals], ""])


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    ns = parse_args(argv)
    ns = _quick(ns) if ns.quick else ns
    load = wait_for_quiet()
    hw = hardware()
    directory, manifest = synthetic_adapters(ns.adapters)
    server = server_args(directory, manifest, ns)
    all_arms = arms(directory, ns.adapters, ns.slots, ns.arms)
    with local_app(server, port=ns.port) as url:
        sweeps = sweep_arms(url, ns, all_arms)
        p70 = p70_runs(url, ns, all_arms, sweeps)
    goals = targets(sweeps, p70)
    command = "PYTHONPATH=. .venv/bin/python -m benchmarks.http.adapters_vs_base " + shlex.join(argv or sys.argv[1:])
    plots.sweep_plot([row for s in sweeps.values() for row in s["rows"]], ns.out / "sweep.png", ns.slo_ms)
    cdf_plot({name: r for name, r in p70.items()}, ns.out / "p70_cdf.png", "latency at 70 % of saturation")
    write_json(ns.out / "scenario.json", {"hardware": hw, "load_before": load, "manifest": {
        k: v for k, v in manifest.items() if k != "names"}, "sweeps": sweeps, "targets": goals,
        "p70": {n: {k: v for k, v in r.items() if k not in ("requests", "timeline")} for n, r in p70.items()}})
    (ns.out / "scenario.md").write_text(markdown(ns, hw, manifest, server, sweeps, p70, goals, command.strip()))
    sys.stdout.write((ns.out / "scenario.md").read_text())
    return 0


if __name__ == "__main__":
    sys.exit(main())
