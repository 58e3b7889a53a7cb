"""One HTTP benchmark, end to end: adapters, schedule, open-loop run, report, plots."""
from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import aiohttp

from . import plots
from .client import check_loopback, list_models
from .loadgen import RunOptions, run_schedule
from .report import summarize, write_result
from .workload import WorkloadError, WorkloadSpec, build_schedule

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class BenchConfig:
    """One run: ``adapters`` is N (the server's first N adapters), ``base`` (the base model
    only, also N = 0) or a file of names, one a line; ``out`` the results folder (None:
    nothing written); ``slo_ms`` the SLO bound (TTFT for generate, latency otherwise)."""

    options: RunOptions
    workload: WorkloadSpec = field(default_factory=WorkloadSpec)
    adapters: str = "base"
    out: Path | None = None
    slo_ms: float | None = None
    allow_remote: bool = False
    title: str = "Stitch HTTP benchmark"
    plots: bool = True

    def at_rate(self, rate: float, out: Path | None) -> "BenchConfig":
        return replace(self, workload=replace(self.workload, rate=rate), out=out)


async def _server_models(url: str) -> tuple[str, list[str]]:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=60)) as session:
        return await list_models(session, url)


def resolve_adapters(adapters: str, url: str) -> list[str]:
    """The ``model`` names to send, most popular first (see :class:`BenchConfig`)."""
    if adapters.strip().isdigit() or adapters == "base":
        count = 0 if adapters == "base" else int(adapters)
        base, served = asyncio.run(_server_models(url))
        if count == 0:
            return [base]
        if len(served) < count:
            raise WorkloadError(f"asked for {count} adapters, but {url}/v1/models lists {len(served)}")
        return served[:count]
    path = Path(adapters)
    if not path.is_file():
        raise WorkloadError(f"--adapters is a count, 'base' or a file of names; {adapters!r} is none of these")
    names = [line.strip() for line in path.read_text().splitlines() if line.strip() and not line.startswith("#")]
    if not names:
        raise WorkloadError(f"{path} names no adapter")
    return names


def _plots(result: dict[str, Any], out: Path) -> None:
    try:
        plots.run_plots(result, out)
    except ImportError:
        logger.warning("matplotlib is not installed (pip install 'stitch-serve[bench]'): no plots written")


def run_http(config: BenchConfig, names: list[str] | None = None) -> dict[str, Any]:
    """Run one benchmark; write result.json, summary.md and the plots under ``config.out``; return the result."""
    check_loopback(config.options.url, config.allow_remote)
    names = names or resolve_adapters(config.adapters, config.options.url)
    schedule = build_schedule(config.workload, names)
    outcome = run_schedule(schedule, config.options)
    result = summarize(outcome, config.workload, config.options, config.slo_ms, len(schedule), len(names))
    if config.out is not None:
        write_result(config.out, result, config.title)
        if config.plots:
            _plots(result, config.out)
    logger.info("rate %.2f: %.2f req/s achieved, %d errors, p99 %s ms", config.workload.rate,
                result["achieved_throughput"], result["counts"]["errors"], result["latency_ms"]["p99"])
    return result
