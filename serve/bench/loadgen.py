"""The open-loop runner: every request leaves at its scheduled time, whether or not earlier ones returned.

One task per request is created at its due time, so a slow server never delays later
sends (a closed loop would, and would hide the server's queueing). With a concurrency
limit, a request due while the limit is reached waits in the client, and that wait counts
in its latency (see :mod:`serve.bench.client`). The server's /metrics page is read when
the measured part begins (after the warm-up) and after the last answer.
"""
from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone

import aiohttp

from .client import RequestRecord, Sender
from .promtext import CacheCounters, cache_counters
from .rss import RSSSampler
from .workload import PlannedRequest

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class RunOptions:
    """How to send a schedule.

    url: the server (no trailing slash); task: classify | embed | generate; timeout:
    seconds per request; concurrency_limit: most requests in flight (None: no limit, pure
    open loop); warmup: requests due before this many seconds are sent but not measured;
    rss_pattern: sample the RSS of local processes whose command line contains it.
    """

    url: str
    task: str = "classify"
    timeout: float = 60.0
    concurrency_limit: int | None = None
    warmup: float = 0.0
    rss_pattern: str | None = None
    rss_interval: float = 1.0


@dataclass
class RunOutcome:
    """The records of one run, and what was read from the server around it.

    cache_before / cache_after: cache counters at the start of measurement and at the end
    (None when /metrics could not be read; ``metrics_error`` says why); rss: (seconds, bytes)
    samples; rss_pids: the processes sampled; started_at: UTC start; wall_seconds: start to
    the last answer.
    """

    records: list[RequestRecord]
    cache_before: CacheCounters | None = None
    cache_after: CacheCounters | None = None
    metrics_error: str | None = None
    rss: list[tuple[float, int]] = field(default_factory=list)
    rss_pids: list[int] = field(default_factory=list)
    started_at: str = ""
    wall_seconds: float = 0.0


async def scrape_cache(session: aiohttp.ClientSession, url: str) -> tuple[CacheCounters | None, str | None]:
    """(cache counters, None) from GET /metrics, or (None, the reason it failed)."""
    try:
        async with session.get(f"{url}/metrics") as response:
            response.raise_for_status()
            return cache_counters(await response.text()), None
    except (aiohttp.ClientError, asyncio.TimeoutError, ValueError) as err:
        return None, f"{type(err).__name__}: {err}"


class OpenLoopRunner:
    """Sends one schedule against one server; ``await runner.run()`` returns its RunOutcome."""

    def __init__(self, schedule: list[PlannedRequest], options: RunOptions) -> None:
        self.schedule = schedule
        self.options = options
        self._limit = asyncio.Semaphore(options.concurrency_limit) if options.concurrency_limit else None

    async def run(self) -> RunOutcome:
        timeout = aiohttp.ClientTimeout(total=self.options.timeout)
        connector = aiohttp.TCPConnector(limit=0)
        async with aiohttp.ClientSession(timeout=timeout, connector=connector) as session:
            return await self._run(session)

    async def _run(self, session: aiohttp.ClientSession) -> RunOutcome:
        started_at = datetime.now(timezone.utc).isoformat(timespec="seconds")
        start = time.perf_counter()
        sender = Sender(session, self.options.url, self.options.task, start)
        stop = asyncio.Event()
        sampler = RSSSampler(self.options.rss_pattern, start, self.options.rss_interval) \
            if self.options.rss_pattern else None
        sampling = asyncio.create_task(sampler.run(stop)) if sampler else None
        before = asyncio.create_task(self._scrape_at(session, start + self.options.warmup))
        records = await self._send_all(sender, start)
        (cache_before, error_before), (cache_after, error_after) = await before, await scrape_cache(
            session, self.options.url)
        wall = time.perf_counter() - start
        stop.set()
        if sampling:
            await sampling
        return RunOutcome(records, cache_before, cache_after, error_before or error_after,
                          sampler.samples if sampler else [], sampler.pids if sampler else [], started_at, wall)

    async def _scrape_at(self, session: aiohttp.ClientSession, when: float):
        await asyncio.sleep(max(0.0, when - time.perf_counter()))
        return await scrape_cache(session, self.options.url)

    async def _send_all(self, sender: Sender, start: float) -> list[RequestRecord]:
        tasks = []
        for planned in self.schedule:
            delay = start + planned.at - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            record = RequestRecord(planned.index, planned.adapter, planned.input_words, planned.at,
                                   warmup=planned.at < self.options.warmup)
            tasks.append(asyncio.create_task(self._send(sender, planned, record)))
        return list(await asyncio.gather(*tasks))

    async def _send(self, sender: Sender, planned: PlannedRequest, record: RequestRecord) -> RequestRecord:
        if self._limit is None:
            return await sender.send(planned, record)
        async with self._limit:
            return await sender.send(planned, record)


def run_schedule(schedule: list[PlannedRequest], options: RunOptions) -> RunOutcome:
    """Send ``schedule`` open-loop (blocking; runs its own event loop)."""
    logger.info("sending %d requests to %s (%s)", len(schedule), options.url, options.task)
    return asyncio.run(OpenLoopRunner(schedule, options).run())
