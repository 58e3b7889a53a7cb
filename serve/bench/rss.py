"""Resident memory of local server processes, sampled while a benchmark runs (psutil).

A Ray Serve replica is a process whose command line names its deployment (for Stitch's
model replicas, ``ServeReplica:<app>:ModelReplica``), so a substring of the command line
picks the processes to watch.
"""
from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field


def matching_processes(pattern: str) -> list:
    """psutil Processes of this machine whose command line contains ``pattern`` (this process excluded)."""
    import psutil  # installed with the "bench" extra; only RSS sampling needs it

    found = []
    for process in psutil.process_iter(["pid", "cmdline"]):
        cmdline = " ".join(process.info.get("cmdline") or ())
        if pattern in cmdline and process.pid != psutil.Process().pid:
            found.append(process)
    return found


def total_rss(processes: list) -> int:
    """Summed resident bytes of the psutil Processes still alive."""
    import psutil

    total = 0
    for process in processes:
        try:
            total += process.memory_info().rss
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
    return total


@dataclass
class RSSSampler:
    """Samples the summed RSS of the processes matching ``pattern`` every ``interval`` seconds.

    samples: (seconds since ``start`` on ``time.perf_counter``'s clock, bytes); pids: the
    processes found when sampling began.
    """

    pattern: str
    start: float
    interval: float = 1.0
    samples: list[tuple[float, int]] = field(default_factory=list)
    pids: list[int] = field(default_factory=list)

    async def run(self, stop: asyncio.Event) -> None:
        processes = await asyncio.to_thread(matching_processes, self.pattern)
        self.pids = [p.pid for p in processes]
        while not stop.is_set():
            rss = await asyncio.to_thread(total_rss, processes)
            self.samples.append((time.perf_counter() - self.start, rss))
            try:
                await asyncio.wait_for(stop.wait(), self.interval)
            except asyncio.TimeoutError:
                continue
