"""Run every engine benchmark of the engine issue and write the results.

    .venv/bin/python -m benchmarks.engine.run [--out benchmarks/results] [--threads 2] [--quick] [--only KEY ...]

Writes ``engine.md`` (one table per scenario, the summary, the command, the machine) and
``engine.png`` under ``--out``; ``--quick`` runs tiny shapes in seconds to check the
harness and writes ``engine_quick.md`` / ``engine_quick.png`` instead. Takes about 5
minutes on 2 idle CPU cores (8-9 when other jobs share them). See
:mod:`benchmarks.engine.scenarios` for what each scenario times.
"""
from __future__ import annotations

import argparse
import asyncio
import logging
import shlex
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

import torch

from . import report, scenarios
from .timing import hardware, load_average, source_state
from .workload import FULL, QUICK, Shapes, build_base, build_engine, build_peft, write_adapters

logger = logging.getLogger("benchmarks.engine")

RESULTS = Path(__file__).resolve().parents[1] / "results"
# Micro-scenarios first (engine stopped), then the ones that drive the started engine.
OFFLINE = {"prefill": scenarios.prefill, "heterogeneous": scenarios.heterogeneous, "decode": scenarios.decode,
           "cold_load": scenarios.cold_load}
ONLINE = {"hot_steps": scenarios.hot_steps, "generation": scenarios.generation}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, default=RESULTS, help="results folder")
    parser.add_argument("--threads", type=int, default=2, help="torch intra-op threads")
    parser.add_argument("--quick", action="store_true", help="tiny shapes: checks the harness in seconds")
    parser.add_argument("--only", nargs="+", choices=[*OFFLINE, *ONLINE], help="run these scenarios only")
    return parser.parse_args(argv)


async def run_all(shapes: Shapes, root: Path, only: list[str] | None) -> list[scenarios.Outcome]:
    lora = max(shapes.decode_sequences, shapes.hot_sequences + shapes.hot_cold_loads)
    names = write_adapters(root, shapes, {"lora": lora, "seq_bn": shapes.hetero_mix[1], "ia3": shapes.hetero_mix[2]})
    bench = scenarios.Bench(shapes=shapes, root=root, names=names, engine=build_engine(shapes, root),
                            base=build_base(shapes), peft=build_peft(shapes, root, names["lora"]),
                            generator=torch.Generator().manual_seed(1))
    outcomes = []
    for key, scenario in OFFLINE.items():
        if only is None or key in only:
            outcomes.append(await _timed(key, scenario, bench))
    async with bench.engine:
        for key, scenario in ONLINE.items():
            if only is None or key in only:
                outcomes.append(await _timed(key, scenario, bench))
    return outcomes


async def _timed(key: str, scenario, bench: scenarios.Bench) -> scenarios.Outcome:
    start = time.perf_counter()
    outcome = await scenario(bench)
    logger.info("%s: %s %.3g (target %s) in %.0f s; load %s", key, outcome.metric, outcome.value, outcome.target,
                time.perf_counter() - start, load_average())
    return outcome


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    logging.getLogger("serve").setLevel(logging.WARNING)
    torch.set_num_threads(args.threads)
    shapes = QUICK if args.quick else FULL
    info = dict(command=shlex.join([".venv/bin/python", "-m", "benchmarks.engine.run", *sys.argv[1:]]),
                hardware=hardware(), date=datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
                load_before=load_average(), shapes=_describe(shapes, args.quick),
                source=source_state(RESULTS.parents[1]))
    start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="stitch-bench-") as root:
        outcomes = asyncio.run(run_all(shapes, Path(root), args.only))
    stem = "engine_quick" if args.quick else "engine"
    args.out.mkdir(parents=True, exist_ok=True)
    run_info = report.RunInfo(**info, load_after=load_average(), seconds=time.perf_counter() - start)
    (args.out / f"{stem}.md").write_text(report.markdown(outcomes, run_info, f"{stem}.png"))
    report.plot(outcomes, args.out / f"{stem}.png")
    logger.info("wrote %s", args.out / f"{stem}.md")
    return 0


def _describe(s: Shapes, quick: bool) -> str:
    harness = " (--quick: tiny shapes that only check the harness; these ratios say nothing about the targets)"
    return (f"Llama geometry from a seeded config (no download): hidden {s.hidden}, {s.layers} layers, FFN {s.ffn}, "
            f"{s.heads} heads, vocab {s.vocab}, fp32, sdpa attention; LoRA rank {s.rank} (alpha {2 * s.rank}) on all "
            "7 linears, random non-zero adapters written with adapters_lib" + (harness if quick else ""))


if __name__ == "__main__":
    sys.exit(main())
