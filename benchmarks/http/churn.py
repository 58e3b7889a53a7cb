"""Scenario 3: churn. 10,000 adapters, uniform popularity, so that most requests miss the cache.

    PYTHONPATH=. .venv/bin/python -m benchmarks.http.churn [--duration 300] [--rate 16]

One server (the packaged MiniLM, one model replica, 64 device slots, a host tier of 256
adapters' worth of bytes) and 10,000 synthetic adapters; classify requests name adapters
uniformly at random, so nearly every request loads its adapter from disk. The offered
load is held for ``--duration`` seconds (the issue asks 300) after ``--warmup`` seconds;
the resident memory of the app's Ray Serve replica processes is sampled every 2 s.
Targets: zero errors; RSS grows by less than 5 % after the warm-up. Writes
``scenario.md``, ``scenario.json`` and the run's folder (``run/``: result.json,
summary.md, latency_cdf.png, over_time.png with the RSS) under ``--out``.
"""
from __future__ import annotations

import argparse
import logging
import shlex
import sys
from pathlib import Path

from serve.bench.loadgen import RunOptions
from serve.bench.report import summary_rows
from serve.bench.run import BenchConfig, run_http
from serve.bench.workload import WorkloadSpec
from serve.engine import EngineConfig
from serve.http.args import StitchArgs

from .common import (RESULTS, hardware, hardware_line, local_app, mean_adapter_bytes, synthetic_adapters,
                     wait_for_quiet, write_json)
from .report import md_table

# Every replica process of the app named "stitch": the model replica, the ingress, the directory.
RSS_PATTERN = "ServeReplica:stitch:"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--adapters", type=int, default=10_000)
    parser.add_argument("--slots", type=int, default=64)
    parser.add_argument("--host-adapters", type=int, default=256)
    parser.add_argument("--rate", type=float, default=16.0, help="offered requests per second")
    parser.add_argument("--duration", type=float, default=300.0, help="seconds of measured load (issue: 300)")
    parser.add_argument("--warmup", type=float, default=30.0, help="seconds of unmeasured load first")
    parser.add_argument("--input-len", default="8:32")
    parser.add_argument("--port", type=int, default=8410)
    parser.add_argument("--out", type=Path, default=RESULTS / "http_churn")
    return parser.parse_args(argv)


def bench_config(url: str, ns: argparse.Namespace) -> BenchConfig:
    low, high = (int(x) for x in ns.input_len.split(":"))
    workload = WorkloadSpec(popularity="uniform", rate=ns.rate, duration=ns.warmup + ns.duration,
                            input_len=(low, high), seed=0)
    options = RunOptions(url=url, task="classify", warmup=ns.warmup, rss_pattern=RSS_PATTERN, rss_interval=2.0)
    return BenchConfig(options=options, workload=workload, adapters=str(ns.adapters), out=ns.out / "run",
                       title="Scenario 3, churn")


def markdown(ns, hw, manifest, server: StitchArgs, result, command: str) -> str:
    mem, counts = result["memory"], result["counts"]
    growth_ok = mem is not None and mem["growth_end"] < 0.05
    return "\n".join([
        "# Scenario 3: churn, 10,000 adapters, uniform popularity", "", f"Command: `{command}`", "",
        f"Hardware: {hardware_line(hw)}.", "",
        f"Server: {server.engine.model}, 1 model replica (1 CPU), {server.engine.max_slots} device slots, host tier "
        f"{server.engine.max_host_bytes / (1 << 20):.1f} MiB ({ns.host_adapters} x the mean adapter size), max rank "
        f"16. {manifest['count']} synthetic adapters written in {manifest['seconds']:.1f} s, "
        f"{manifest['bytes_on_disk'] / (1 << 20):.0f} MiB on disk.", "",
        f"Workload: classify, Poisson arrivals at {ns.rate:g} req/s, uniform popularity over {ns.adapters} adapters, "
        f"{ns.warmup:g} s warm-up then {ns.duration:g} s measured. RSS: the app's replica processes "
        f"(`{RSS_PATTERN}*`, pids {mem['pids'] if mem else '-'}), every 2 s.", "",
        *md_table(["metric", "value"], [list(row) for row in summary_rows(result)]), "",
        "![over time](run/over_time.png)", "", "## Targets", "",
        f"* errors: {counts['errors']} (target 0): {'met' if counts['errors'] == 0 else 'NOT met'}",
        f"* RSS growth after warm-up: {100 * mem['growth_end']:.2f} % at the end, {100 * mem['growth_peak']:.2f} % at "
        f"the peak (target < 5 %): {'met' if growth_ok else 'NOT met'}" if mem else "* RSS: not sampled", ""])


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    ns = parse_args(argv)
    load = wait_for_quiet()
    hw = hardware()
    directory, manifest = synthetic_adapters(ns.adapters)
    host_bytes = ns.host_adapters * mean_adapter_bytes(manifest)
    server = StitchArgs(engine=EngineConfig(max_slots=ns.slots, max_host_bytes=host_bytes, max_rank=16,
                                            max_input_tokens=128), adapter_dirs=(directory,))
    with local_app(server, port=ns.port) as url:
        result = run_http(bench_config(url, ns))
    command = "PYTHONPATH=. .venv/bin/python -m benchmarks.http.churn " + shlex.join(argv or sys.argv[1:])
    write_json(ns.out / "scenario.json", {"hardware": hw, "load_before": load, "manifest": {
        k: v for k, v in manifest.items() if k != "names"}, "result": {
        k: v for k, v in result.items() if k not in ("requests", "timeline")}})
    (ns.out / "scenario.md").write_text(markdown(ns, hw, manifest, server, result, command.strip()))
    sys.stdout.write((ns.out / "scenario.md").read_text())
    return 0


if __name__ == "__main__":
    sys.exit(main())
