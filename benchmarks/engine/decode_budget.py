"""Where the LoRA time of a decode step goes: the 42 adapted linears of the engine benchmark's model.

    .venv/bin/python -m benchmarks.engine.decode_budget [--rows 16] [--slots 64] [--repeats 15] [--quick]

Writes ``benchmarks/results/decode_budget.md``. One "step" here is one pass over the
model's linears (7 per layer), each on its own weights as in a real step, with ``rows``
decode rows of distinct adapters out of ``slots`` stacked slots (the generation scenario of
``benchmarks.engine.run``: 16 rows, 64 slots). It times, in interleaved rounds:

* base: ``F.linear`` of every linear;
* adapted: ``kernels.lora_linear`` on the torch backend, as the engine runs LoRA on CPU;
* gather: the ``index_select`` of every row's A and B that the torch backend does per linear;
* matmuls: the backend's two batched matmuls per linear, on weights gathered beforehand;
* one read: a sum over a flat copy of the rows' adapter weights (one pass at streaming speed).

adapted - base is what LoRA costs a step; gather + matmuls is the part of it that moves
the adapters' bytes; one read is what reading them once costs on this machine.
"""
from __future__ import annotations

import argparse
import logging
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch
import torch.nn.functional as F

from kernels import AdapterBatch, get_backend, lora_linear

from .timing import hardware, interleaved, load_average, median, source_state
from .workload import FULL, QUICK, Shapes

logger = logging.getLogger(__name__)
RESULTS = Path(__file__).resolve().parents[2] / "benchmarks" / "results"
LABELS = {"base": "base linears (`F.linear`)", "adapted": "adapted linears (`kernels.lora_linear`, torch backend)",
          "gather": "gather: every row's A and B (`index_select`)", "matmuls": "matmuls: shrink + expand `bmm` on "
          "gathered weights", "read": "one read of the rows' adapter weights (`sum`)"}


@dataclass
class Linear:
    """One base linear and its LoRA slot stacks. W: [H_out, H_in]; A: [S, r, H_in]; B: [S, H_out, r]."""

    W: torch.Tensor
    A: torch.Tensor
    B: torch.Tensor
    scaling: torch.Tensor


def model_linears(shapes: Shapes, slots: int, seed: int = 0) -> list[Linear]:
    """The 7 linears of each layer (q, k, v, o, gate, up, down), random weights."""
    g = torch.Generator().manual_seed(seed)
    h, ffn, r = shapes.hidden, shapes.ffn, shapes.rank
    dims = [(h, h)] * 4 + [(h, ffn)] * 2 + [(ffn, h)]
    return [Linear(torch.randn(o, i, generator=g) / i ** 0.5, torch.randn(slots, r, i, generator=g) / i ** 0.5,
                   torch.randn(slots, o, r, generator=g) / r ** 0.5, torch.full((slots,), 2.0))
            for _ in range(shapes.layers) for i, o in dims]


def step_functions(linears: list[Linear], row_slots: torch.Tensor) -> dict[str, Callable[[], object]]:
    """One call of each returned function is one step's worth of that work (see the module docstring)."""
    batch = AdapterBatch.from_slots(row_slots)
    backend = get_backend(name="torch")
    inputs = {n: torch.randn(row_slots.numel(), n) for n in {lin.W.shape[1] for lin in linears}}   # [T, H_in]
    gathered = [(lin.A.index_select(0, batch.tile_slots), lin.B.index_select(0, batch.tile_slots))
                for lin in linears]
    flat = torch.cat([w.flatten() for pair in gathered for w in pair])
    u = torch.randn(row_slots.numel(), 1, linears[0].A.shape[1])                                    # [T, 1, r]

    def base() -> None:
        for lin in linears:
            F.linear(inputs[lin.W.shape[1]], lin.W)

    def adapted() -> None:
        for lin in linears:
            lora_linear(inputs[lin.W.shape[1]], lin.W, None, lin.A, lin.B, lin.scaling, batch, backend=backend)

    def gather() -> None:
        for lin in linears:
            lin.A.index_select(0, batch.tile_slots)
            lin.B.index_select(0, batch.tile_slots)

    def matmuls() -> None:
        for lin, (A, B) in zip(linears, gathered):
            torch.bmm(inputs[lin.W.shape[1]][:, None], A.transpose(1, 2))   # [T, 1, r]
            torch.bmm(u, B.transpose(1, 2))                                 # [T, 1, H_out]

    return {"base": base, "adapted": adapted, "gather": gather, "matmuls": matmuls, "read": flat.sum}


def adapter_bytes(linears: list[Linear], rows: int) -> int:
    """Bytes of LoRA weights the rows' adapters hold over all linears."""
    return rows * sum((lin.A[0].numel() + lin.B[0].numel()) * lin.A.element_size() for lin in linears)


def report(ms: dict[str, float], nbytes: int, linears: int, command: str, rows: int, slots: int) -> list[str]:
    """The markdown lines: the machine, the table of ms per step, and what the numbers add up to."""
    lora = ms["adapted"] - ms["base"]
    moved = ms["gather"] + ms["matmuls"]
    return ["# Decode step budget: where LoRA's time goes", "", f"Command: `{command}`", "",
            f"- hardware: {hardware()}", f"- date: {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}; "
            f"load average {load_average()}", f"- code measured: {source_state(Path(__file__).parents[2])}",
            f"- {linears} linears (the engine benchmark's model), {rows} decode rows with distinct adapters out of "
            f"{slots} slots; fp32; medians of interleaved rounds", "",
            "| work per step | ms |", "|---|---|", *[f"| {LABELS[k]} | {v:.2f} |" for k, v in ms.items()], "",
            f"- LoRA adds {lora:.2f} ms to the linears' {ms['base']:.2f} ms ({ms['adapted'] / ms['base']:.2f}x).",
            f"- Of that, gather + matmuls take {moved:.2f} ms; the remaining {lora - moved:.2f} ms is the other "
            "ops of each adapted linear and their interleaving with the base matmuls.",
            f"- The rows' adapters hold {nbytes / 2**20:.1f} MiB; one read of them takes {ms['read']:.2f} ms "
            f"({nbytes / ms['read'] / 1e6:.1f} GB/s): the floor for any kernel that reads each weight once."]


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rows", type=int, default=FULL.gen_requests, help="decode rows, one adapter each")
    parser.add_argument("--slots", type=int, default=FULL.adapter_slots, help="stacked slots per linear")
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--threads", type=int, default=2, help="torch intra-op threads")
    parser.add_argument("--quick", action="store_true", help="tiny shapes: checks the harness in seconds")
    parser.add_argument("--out", type=Path, default=RESULTS)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> Path:
    """Time the step's work and write the table; returns its path."""
    argv = sys.argv[1:] if argv is None else argv
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    torch.set_num_threads(args.threads)
    if args.rows > args.slots:
        raise SystemExit(f"--rows {args.rows} needs at least as many --slots (got {args.slots})")
    linears = model_linears(QUICK if args.quick else FULL, args.slots)
    row_slots = torch.randperm(args.slots, generator=torch.Generator().manual_seed(1))[:args.rows]
    with torch.inference_mode():
        samples = interleaved(step_functions(linears, row_slots), warmup=2, repeats=args.repeats)
    ms = {k: median(v) * 1e3 for k, v in samples.items()}
    command = " ".join([".venv/bin/python -m benchmarks.engine.decode_budget", *argv])
    lines = report(ms, adapter_bytes(linears, args.rows), len(linears), command, args.rows, args.slots)
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / "decode_budget.md"
    path.write_text("\n".join(lines) + "\n")
    logger.info("%s\nwrote %s", "\n".join(lines[-3:]), path)
    return path


if __name__ == "__main__":
    main()
