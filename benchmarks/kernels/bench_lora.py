"""Mixed-adapter LoRA on one linear: Stitch's kernels vs a per-adapter masking loop vs the base linear.

Run from the repository root, either way:

    .venv/bin/python -m benchmarks.kernels.bench_lora [--device cpu|cuda] [--repeats N] [--quick]
    .venv/bin/python benchmarks/kernels/bench_lora.py [...]

Writes ``benchmarks/results/kernels_lora.md`` (table, command, hardware, targets) and
``benchmarks/results/kernels_lora.png``.

Per scenario (decode: 64 requests x 1 token; prefill: 32 requests x 64 tokens; and, beyond
the targets, prefill-mixed: 32 requests of 16..112 tokens, the general prefill case;
requests in arrival order, each using one of ``adapters`` LoRA adapters round-robin) it
times, as the median of interleaved repeats after warmup:

* base: ``x @ W.T`` alone;
* torch backend: ``lora_shrink`` + ``lora_expand`` into the base output, with the step's
  AdapterBatch built beforehand (it is built once per step, not per layer; its build time
  is reported separately);
* torch linear: the whole adapted linear as the engine runs it, ``kernels.lora_linear``
  (the delta first, then the base matmul accumulating onto it); minus base, it is what
  LoRA adds to the layer;
* masking loop: PEFT's mixed-batch approach: for each distinct adapter, select its rows
  with a boolean mask, run A then B, add the scaled result into those rows (the list of
  distinct adapters is computed once per step, outside the timing, which favours it);
* segment loop: the alternative the torch backend replaced: one gather + two matmuls +
  ``index_add_`` per AdapterBatch segment;
* triton (``--device cuda`` only): the Triton kernels (shrink + expand, and lora_linear).
"""
from __future__ import annotations

import argparse
import logging
import math
import os
import platform
import statistics
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch
import torch.nn.functional as F

from benchmarks.machine import cpu_model
from kernels import AdapterBatch, get_backend, lora_linear

logger = logging.getLogger("bench_lora")

RESULTS = Path(__file__).resolve().parents[2] / "benchmarks" / "results"
ADAPTER_COUNTS = (1, 8, 32, 64, 256)
LINEARS = ((768, 768), (768, 2048))
# name -> (requests, tokens per request; None: drawn from 16..112, mean 64)
SHAPES = {"decode": (64, 1), "prefill": (32, 64), "prefill-mixed": (32, None)}
RANK = 16
DECODE_TARGET_SPEEDUP = 1.5    # torch backend vs masking loop, decode, 64 adapters (geomean over linears)
PREFILL_TARGET_OVERHEAD = 0.10  # (lora_linear - base) / base, prefill, 32 adapters, each linear


@dataclass(frozen=True)
class Scenario:
    """One benchmark point."""

    shape: str
    adapters: int
    h_in: int
    h_out: int

    def request_lengths(self, g: torch.Generator) -> torch.Tensor:
        """[R] tokens of each request."""
        requests, length = SHAPES[self.shape]
        if length is None:
            return torch.randint(16, 113, (requests,), generator=g)
        return torch.full((requests,), length)


@dataclass
class Inputs:
    """Tensors of one scenario."""

    slots: torch.Tensor    # [T]
    x: torch.Tensor        # [T, H_in]
    W: torch.Tensor        # [H_out, H_in]
    A: torch.Tensor        # [S, r, H_in]
    B: torch.Tensor        # [S, H_out, r]
    scaling: torch.Tensor  # [S]
    y: torch.Tensor        # [T, H_out], the base output the LoRA delta is added to


def make_inputs(scenario: Scenario, device: torch.device, seed: int = 0) -> Inputs:
    """Requests in arrival order, adapter of request i = a shuffled round-robin over the adapters."""
    g = torch.Generator().manual_seed(seed)
    lengths = scenario.request_lengths(g)                                                   # [R]
    requests = lengths.numel()
    per_request = torch.randperm(scenario.adapters, generator=g)[torch.arange(requests) % scenario.adapters]
    slots = per_request[torch.randperm(requests, generator=g)].repeat_interleave(lengths)  # [T]
    tokens, h_in, h_out, s = slots.numel(), scenario.h_in, scenario.h_out, scenario.adapters
    tensors = Inputs(
        slots=slots,
        x=torch.randn(tokens, h_in, generator=g),
        W=torch.randn(h_out, h_in, generator=g) / h_in ** 0.5,
        A=torch.randn(s, RANK, h_in, generator=g) / h_in ** 0.5,
        B=torch.randn(s, h_out, RANK, generator=g) / RANK ** 0.5,
        scaling=torch.full((s,), 2.0),
        y=torch.zeros(tokens, h_out),
    )
    return Inputs(**{name: t.to(device) for name, t in vars(tensors).items()})


def masking_loop(inputs: Inputs, distinct: list[int]) -> None:
    """PEFT-style mixed batch: per distinct adapter, mask its rows and add its scaled LoRA output."""
    for slot in distinct:
        rows = inputs.slots == slot                                            # [T] bool
        delta = F.linear(F.linear(inputs.x[rows], inputs.A[slot]), inputs.B[slot]) * inputs.scaling[slot]
        inputs.y[rows] += delta


def segment_loop(inputs: Inputs, batch: AdapterBatch) -> None:
    """The per-segment alternative: gather, two matmuls and index_add_ per AdapterBatch segment."""
    for slot, start, end in batch.segments:
        tokens = batch.order[start:end]                                        # [n]
        u = F.linear(inputs.x.index_select(0, tokens), inputs.A[slot])        # [n, r]
        inputs.y.index_add_(0, tokens, F.linear(u, inputs.B[slot]) * inputs.scaling[slot])


def lora_with(backend) -> Callable[[Inputs, AdapterBatch], None]:
    """shrink + expand of a backend module."""
    def run(inputs: Inputs, batch: AdapterBatch) -> None:
        u = backend.lora_shrink(inputs.x, inputs.A, batch)
        backend.lora_expand(inputs.y, u, inputs.B, inputs.scaling, batch)
    return run


def linear_with(backend) -> Callable[[Inputs, AdapterBatch], torch.Tensor]:
    """The whole adapted linear, ``kernels.lora_linear`` on a backend module."""
    def run(inputs: Inputs, batch: AdapterBatch) -> torch.Tensor:
        return lora_linear(inputs.x, inputs.W, None, inputs.A, inputs.B, inputs.scaling, batch, backend=backend)
    return run


def time_interleaved(fns: dict[str, Callable[[], None]], repeats: int, warmup: int,
                     device: torch.device) -> dict[str, float]:
    """Median seconds of each function, timing them in turn each round (drift hits all alike)."""
    samples: dict[str, list[float]] = {name: [] for name in fns}
    for round_index in range(warmup + repeats):
        for name, fn in fns.items():
            _sync(device)
            start = time.perf_counter()
            fn()
            _sync(device)
            if round_index >= warmup:
                samples[name].append(time.perf_counter() - start)
    return {name: statistics.median(values) for name, values in samples.items()}


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def run_scenario(scenario: Scenario, device: torch.device, repeats: int, warmup: int) -> dict:
    """Time every method on one scenario; returns one result row."""
    inputs = make_inputs(scenario, device)
    build = time_interleaved({"build": lambda: AdapterBatch.from_slots(inputs.slots)}, repeats, warmup, device)
    batch = AdapterBatch.from_slots(inputs.slots)
    distinct = batch.active_slots.tolist()
    torch_backend = get_backend(name="torch")
    torch_lora, torch_linear = lora_with(torch_backend), linear_with(torch_backend)
    fns = {
        "base": lambda: F.linear(inputs.x, inputs.W),
        "torch": lambda: torch_lora(inputs, batch),
        "torch_linear": lambda: torch_linear(inputs, batch),
        "masking": lambda: masking_loop(inputs, distinct),
        "segment": lambda: segment_loop(inputs, batch),
    }
    if device.type == "cuda":
        triton = get_backend(device, name="triton")
        triton_lora, triton_linear = lora_with(triton), linear_with(triton)
        fns["triton"] = lambda: triton_lora(inputs, batch)
        fns["triton_linear"] = lambda: triton_linear(inputs, batch)
    times = time_interleaved(fns, repeats, warmup, device)
    weight_bytes = len(distinct) * RANK * (scenario.h_in + scenario.h_out) * inputs.A.element_size()
    return {"scenario": scenario, "tokens": batch.num_tokens, "distinct": len(distinct), "build": build["build"],
            **times, "weight_bytes": weight_bytes, "tile_rows": batch.tile_rows, "views": batch.tile_span is not None}


def hardware_line(device: torch.device, threads: int) -> str:
    """What the numbers were measured on."""
    if device.type == "cuda":
        return f"{torch.cuda.get_device_name(device)}, torch {torch.__version__}"
    return (f"{cpu_model()} ({os.cpu_count()} logical cores, {threads} torch threads), "
            f"torch {torch.__version__}, {platform.system()} {platform.machine()}")


def _ms(seconds: float) -> str:
    return f"{seconds * 1e3:.3f}"


def results_table(rows: list[dict], with_triton: bool) -> list[str]:
    """Markdown table of every scenario."""
    head = ["shape", "tokens", "linear", "adapters", "distinct in batch", "tiles", "base ms", "torch ms",
            "torch linear ms", "masking ms", "segment loop ms"] + (["triton ms", "triton linear ms"] if with_triton else []) + [
            "masking / torch", "torch / base", "(torch linear - base) / base", "weight bytes", "torch GB/s",
            "batch build ms"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for row in rows:
        sc = row["scenario"]
        tiles = f"{row['tile_rows']} rows, {'views' if row['views'] else 'gathered'}"
        cells = [sc.shape, str(row["tokens"]), f"{sc.h_in}->{sc.h_out}", str(sc.adapters), str(row["distinct"]), tiles,
                 _ms(row["base"]), _ms(row["torch"]), _ms(row["torch_linear"]), _ms(row["masking"]), _ms(row["segment"])]
        cells += [_ms(row["triton"]), _ms(row["triton_linear"])] if with_triton else []
        cells += [f"{row['masking'] / row['torch']:.2f}x", f"{row['torch'] / row['base'] * 100:.1f}%",
                  f"{linear_overhead(row) * 100:.1f}%",
                  f"{row['weight_bytes'] / 1e6:.2f} MB", f"{row['weight_bytes'] / row['torch'] / 1e9:.1f}",
                  _ms(row["build"])]
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def linear_overhead(row: dict) -> float:
    """What LoRA adds to the layer: (lora_linear - base) / base."""
    return row["torch_linear"] / row["base"] - 1


def target_lines(rows: list[dict]) -> list[str]:
    """Whether the two targets were met, with the numbers."""
    decode = [r for r in rows if r["scenario"].shape == "decode" and r["scenario"].adapters == 64]
    prefill = [r for r in rows if r["scenario"].shape == "prefill" and r["scenario"].adapters == 32]
    lines = []
    if decode:
        speedups = [r["masking"] / r["torch"] for r in decode]
        geomean = math.exp(sum(math.log(s) for s in speedups) / len(speedups))
        verdict = "MET" if geomean >= DECODE_TARGET_SPEEDUP else "MISSED"
        lines.append(f"- Decode, 64 distinct adapters: torch backend vs masking loop = "
                     f"{', '.join(f'{s:.2f}x' for s in speedups)} (geometric mean {geomean:.2f}x; "
                     f"target >= {DECODE_TARGET_SPEEDUP}x): **{verdict}**")
    for r in prefill:
        overhead = linear_overhead(r)
        verdict = "MET" if overhead <= PREFILL_TARGET_OVERHEAD else "MISSED"
        lines.append(f"- Prefill, 32 distinct adapters, {r['scenario'].h_in}->{r['scenario'].h_out}: "
                     f"LoRA adds {overhead * 100:.1f}% to the base linear in `lora_linear` "
                     f"(target <= {PREFILL_TARGET_OVERHEAD * 100:.0f}%): **{verdict}**. "
                     f"Shrink + expand alone, added to a finished base output: "
                     f"{r['torch'] / r['base'] * 100:.1f}%")
    return lines


NOTES = [
    "- The machine may be shared: the load average above says how quiet it was. On a 2-core VM the prefill "
    "ratios move by several percentage points from run to run (BENCHMARKS.md gives the spread).",
    "- The prefill target is judged on the adapted linear (`lora_linear` minus base). Shrink + expand "
    "added to a finished base output must read and write y once more (6 MB for 2,048 rows of 768); "
    "`lora_linear` writes the delta into y first and the base matmul accumulates onto it (GEMM with "
    "beta = 1), so that pass happens inside the compute-bound matmul. The torch / base column shows "
    "what the separate pass costs.",
    "- prefill and decode use requests of equal length, so the AdapterBatch tiles are views of the "
    "activations (one tile per request, no gather). prefill-mixed (16..112 tokens per request) is the "
    "general case: rows are gathered into padded per-slot tiles and scattered back, which costs two extra "
    "passes over the activations plus padding, hence its higher overhead.",
    "- Decode on the wide linear (768->2048) is bound by adapter weight traffic: bmm needs the used B "
    "matrices gathered into one tensor, so the torch backend moves them about three times (gather read, "
    "write, bmm read); the masking loop reads them once but pays a per-adapter overhead.",
    "- Alternatives measured while choosing the torch backend (same machine): a loop of one matmul per "
    "segment (the segment loop column) and per request (slower: ~25 us per small matmul call); "
    "`torch.nn.functional.grouped_mm` on CPU (slower); cutting the gathers into cache-sized chunks "
    "(slower); tile sizes for mixed lengths (TILE_COST_ROWS 16/32/64/128: 32 best).",
]


def write_markdown(rows: list[dict], command: str, hardware: str, load: tuple[float, float], path: Path,
                   with_triton: bool) -> None:
    """benchmarks/results/kernels_lora.md."""
    lines = [
        "# Mixed-adapter LoRA kernels: one linear, rank 16, fp32",
        "",
        f"Command: `{command}`",
        "",
        f"Hardware: {hardware}",
        "",
        f"Load average (1 min) before / after the run: {load[0]:.2f} / {load[1]:.2f}",
        "",
        "Times are medians of interleaved repeats after warmup, per call of one linear layer. "
        "torch = `lora_shrink` + `lora_expand` of the torch backend, added to a finished base output; "
        "torch linear = the whole adapted linear, `kernels.lora_linear` (delta first, then the base matmul "
        "accumulating onto it), as the engine runs it; masking = PEFT-style per-adapter "
        "boolean-mask loop; segment loop = per-segment gather/matmul/index_add_. Weight bytes = A and B "
        "of the adapters in the batch (what any method must read); torch GB/s = those bytes over the torch "
        "time. Tiles = the AdapterBatch's tile plan (rows per tile; views of the activations, or gathered "
        "rows). Batch build = `AdapterBatch.from_slots`, once per step for all layers.",
        "",
        "## Targets",
        "",
        *target_lines(rows),
        "",
        "## All scenarios",
        "",
        *results_table(rows, with_triton),
        "",
        "## Notes",
        "",
        *NOTES,
        "",
    ]
    path.write_text("\n".join(lines))


def write_plot(rows: list[dict], path: Path, with_triton: bool) -> None:
    """benchmarks/results/kernels_lora.png: time vs adapters, per shape, per linear."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    methods = ["base", "torch", "torch_linear", "masking", "segment"] + (["triton"] if with_triton else [])
    fig, axes = plt.subplots(1, len(SHAPES), figsize=(6 * len(SHAPES), 4.5))
    for ax, shape in zip(axes, SHAPES):
        for (h_in, h_out), style in zip(LINEARS, ("-", "--")):
            points = [r for r in rows if r["scenario"].shape == shape and r["scenario"].h_out == h_out]
            for method, color in zip(methods, ("black", "tab:blue", "tab:purple", "tab:red", "tab:orange",
                                               "tab:green")):
                ax.plot([r["scenario"].adapters for r in points], [r[method] * 1e3 for r in points], style,
                        color=color, marker="o", label=f"{method} {h_in}->{h_out}")
        requests, per_request = SHAPES[shape]
        ax.set(title=f"{shape}: {requests} requests x {per_request or '16..112'} tokens", xlabel="adapters",
               ylabel="ms per call",
               xscale="log", yscale="log")
        ax.grid(True, which="both", alpha=0.3)
    axes[0].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--device", default="cpu", help="cpu or cuda (cuda also times the Triton kernels)")
    parser.add_argument("--threads", type=int, default=os.cpu_count(), help="torch CPU threads")
    parser.add_argument("--repeats", type=int, default=0, help="timed rounds (default: 200 decode, 60 prefill)")
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--quick", action="store_true", help="a few repeats, for a smoke run")
    parser.add_argument("--out", type=Path, default=RESULTS, help="directory for kernels_lora.md / .png")
    return parser.parse_args(argv)


def invocation(argv: list[str]) -> str:
    """The command as it was run (module or script form)."""
    runner = "-m benchmarks.kernels.bench_lora" if __package__ else "benchmarks/kernels/bench_lora.py"
    return " ".join([".venv/bin/python", runner, *argv])


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    with_triton = device.type == "cuda"
    command = invocation(argv)
    logger.info("ran as: %s", command)
    load_before = os.getloadavg()[0]
    rows = []
    for shape in SHAPES:
        repeats = args.repeats or (3 if args.quick else 200 if shape == "decode" else 60)
        for h_in, h_out in LINEARS:
            for adapters in ADAPTER_COUNTS:
                row = run_scenario(Scenario(shape, adapters, h_in, h_out), device, repeats, args.warmup)
                logger.info("%s %d->%d adapters=%d: base %s ms, torch %s ms, masking %s ms", shape, h_in, h_out,
                            adapters, _ms(row["base"]), _ms(row["torch"]), _ms(row["masking"]))
                rows.append(row)
    args.out.mkdir(parents=True, exist_ok=True)
    hardware = hardware_line(device, args.threads)
    write_markdown(rows, command, hardware, (load_before, os.getloadavg()[0]), args.out / "kernels_lora.md",
                   with_triton)
    write_plot(rows, args.out / "kernels_lora.png", with_triton)
    for line in target_lines(rows):
        logger.info("%s", line)
    logger.info("wrote %s and %s", args.out / "kernels_lora.md", args.out / "kernels_lora.png")


if __name__ == "__main__":
    main()
