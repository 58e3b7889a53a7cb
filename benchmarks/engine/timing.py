"""Timing helpers and the machine description written next to every result."""
from __future__ import annotations

import os
import platform
import statistics
import subprocess
import time
from pathlib import Path
from typing import Callable

import torch

from benchmarks.machine import cpu_model


def interleaved(fns: dict[str, Callable[[], object]], warmup: int, repeats: int) -> dict[str, list[float]]:
    """Seconds of each call, the functions timed in turn every round (load drift hits all alike)."""
    samples: dict[str, list[float]] = {name: [] for name in fns}
    for round_index in range(warmup + repeats):
        for name, fn in fns.items():
            start = time.perf_counter()
            fn()
            seconds = time.perf_counter() - start
            if round_index >= warmup:
                samples[name].append(seconds)
    return samples


def median(values: list[float]) -> float:
    return statistics.median(values)


def mean(values: list[float]) -> float:
    return statistics.fmean(values)


def percentile(values: list[float], q: float) -> float:
    """The q-quantile (0..1) by linear interpolation."""
    ordered = sorted(values)
    position = q * (len(ordered) - 1)
    low = int(position)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


def load_average() -> str:
    one, five, fifteen = os.getloadavg()
    return f"{one:.2f} / {five:.2f} / {fifteen:.2f}"


def hardware() -> str:
    """CPU model, cores, torch version and threads."""
    model = cpu_model()
    return (f"{model}, nproc {len(os.sched_getaffinity(0))}, torch {torch.__version__}, "
            f"torch.get_num_threads() = {torch.get_num_threads()}, Python {platform.python_version()}")


def source_state(root: Path) -> str:
    """The commit and the uncommitted files of the packages measured (other work may be in progress)."""
    def git(*args: str) -> str:
        try:
            return subprocess.run(["git", "-C", str(root), *args], capture_output=True, text=True, check=True).stdout
        except (OSError, subprocess.CalledProcessError):
            return ""
    commit = git("rev-parse", "--short", "HEAD").strip() or "unknown"
    dirty = [line[3:] for line in git("status", "--porcelain", "--", "kernels", "serve", "adapters_lib").splitlines()]
    return f"commit {commit}" + (f", with uncommitted changes in {', '.join(dirty)}" if dirty else ", clean")
