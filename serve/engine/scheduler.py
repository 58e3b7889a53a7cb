"""Scheduler: an asyncio loop that forms mixed-adapter batches and runs steps in a worker thread.

A request is admitted first (:meth:`Scheduler.admit`: the bounded queue; QueueFullError
when it would overflow), then pins its adapter, then queues its rows (:meth:`Scheduler.run`).
The loop waits for rows, gives the batch up to ``max_wait_s`` to fill, picks rows and runs
one step in its worker thread, so the event loop keeps accepting requests and loading
adapters meanwhile.

Picking rows (:meth:`Scheduler.pick`): oldest first, at most ``max_batch_size`` rows and
``max_batch_tokens`` padded tokens (rows x longest row). A first pass takes at most
``max_rows_per_adapter`` rows of each adapter, so one adapter's burst cannot fill the
step while other adapters wait; a second pass fills what room is left, oldest first.
The oldest row is always picked, so no row waits forever.

Generation (:mod:`serve.engine.generation`) shares the queue and the thread: a generation
request is admitted here, leaves the queue (:meth:`Scheduler.take`) when it joins the
running batch, and its steps run through :meth:`Scheduler.execute`, taking turns with
these steps.
"""
from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from typing import Any, Callable, Sequence

from .errors import EngineClosedError, QueueFullError
from .stats import BATCH_BOUNDS, Buckets

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class SchedulerConfig:
    """Bounds of a step and of the queue (see the module docstring)."""

    max_batch_size: int = 64
    max_batch_tokens: int = 16384
    max_rows_per_adapter: int = 16
    max_wait_s: float = 0.002
    max_queue: int = 1024


@dataclass(eq=False)
class Row:
    """One input sequence of a request: a row of a step's batch.

    input_ids: its tokens; slot: its adapter's slot (-1: base model only); adapter: the
    adapter's name (None: base model), which the per-adapter cap counts by; task: what
    the runner computes for it ("embed", "classify").
    """

    input_ids: list[int]
    slot: int
    adapter: str | None
    task: str
    future: asyncio.Future | None = None
    ticket: "Ticket | None" = None
    queued_at: float = 0.0

    def __len__(self) -> int:
        return len(self.input_ids)


@dataclass(eq=False)
class Ticket:
    """Room in the queue for ``rows`` rows of one request; a context manager that gives it back."""

    scheduler: "Scheduler"
    rows: int

    def __enter__(self) -> "Ticket":
        return self

    def __exit__(self, *exc) -> None:
        self.scheduler.withdraw(self)


@dataclass(frozen=True)
class SchedulerStats:
    """steps / rows / padded_tokens: totals of the steps run; queued: rows waiting now;
    largest_step: most rows in one step; step_seconds: total time inside steps;
    batch_size / batch_adapters: histograms of rows and of distinct adapters per step."""

    steps: int = 0
    rows: int = 0
    padded_tokens: int = 0
    largest_step: int = 0
    step_seconds: float = 0.0
    queued: int = 0
    batch_size: Buckets = Buckets.empty(BATCH_BOUNDS)
    batch_adapters: Buckets = Buckets.empty(BATCH_BOUNDS)


class Scheduler:
    """Batches rows across adapters and runs ``run_step(rows) -> outputs`` (one per row) in a worker thread."""

    def __init__(self, run_step: Callable[[Sequence[Row]], list[Any]], config: SchedulerConfig) -> None:
        self.config = config
        self._run_step = run_step
        self._ready: list[Row] = []
        self._admitted = 0  # rows admitted and not yet picked into a step
        self._changed = asyncio.Event()
        self._loop_task: asyncio.Task | None = None
        self._executor: ThreadPoolExecutor | None = None
        self._stats = SchedulerStats()

    # -- lifecycle ------------------------------------------------------------
    async def start(self) -> None:
        """Start the batching loop on the running event loop."""
        if self._loop_task is None:
            self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="stitch-step")
            self._loop_task = asyncio.get_running_loop().create_task(self._loop())

    async def stop(self) -> None:
        """Stop the loop; queued rows fail with EngineClosedError; waits for a running step."""
        task, self._loop_task = self._loop_task, None
        if task is not None:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
        for row in self._ready:
            _fail(row, EngineClosedError("the engine stopped"))
        self._ready.clear()
        if self._executor is not None:
            await asyncio.to_thread(self._executor.shutdown, wait=True)
            self._executor = None

    @property
    def running(self) -> bool:
        return self._loop_task is not None and not self._loop_task.done()

    # -- requests -------------------------------------------------------------
    def admit(self, rows: int) -> Ticket:
        """Reserve room for ``rows`` rows; QueueFullError when the queue has no room for them."""
        if not self.running:
            raise EngineClosedError("the engine is not running (call start())")
        if self._admitted + rows > self.config.max_queue:
            raise QueueFullError(f"the queue is full ({self._admitted} rows waiting, limit {self.config.max_queue}); "
                                 "retry later")
        self._admitted += rows
        return Ticket(self, rows)

    async def run(self, ticket: Ticket, rows: Sequence[Row]) -> list[Any]:
        """Queue the rows of an admitted request and wait for their outputs (in order)."""
        if len(rows) > ticket.rows:
            raise ValueError(f"{len(rows)} rows on a ticket for {ticket.rows}")
        loop, now = asyncio.get_running_loop(), time.monotonic()
        for row in rows:
            row.future, row.ticket, row.queued_at = loop.create_future(), ticket, now
        self._ready.extend(rows)
        self._changed.set()
        return list(await asyncio.gather(*(row.future for row in rows)))

    def take(self, ticket: Ticket, rows: int = 1) -> None:
        """``rows`` rows of an admitted request start running: they leave the queue."""
        ticket.rows -= rows
        self._admitted -= rows

    async def execute(self, function: Callable[..., Any], *args: Any) -> Any:
        """Run ``function(*args)`` in the step thread, where every step of every task runs, one at a time."""
        if self._executor is None:
            raise EngineClosedError("the engine is not running (call start())")
        return await asyncio.get_running_loop().run_in_executor(self._executor, function, *args)

    def withdraw(self, ticket: Ticket) -> None:
        """Give back a ticket's room: its rows not picked yet leave the queue."""
        mine = [row for row in self._ready if row.ticket is ticket]
        if mine:
            self._ready = [row for row in self._ready if row.ticket is not ticket]
            for row in mine:
                _fail(row, asyncio.CancelledError())
        self._admitted -= ticket.rows
        ticket.rows = 0

    def stats(self) -> SchedulerStats:
        return replace(self._stats, queued=self._admitted)

    # -- batching -------------------------------------------------------------
    def pick(self) -> list[Row]:
        """Take the rows of the next step out of the queue (see the module docstring)."""
        chosen: dict[int, Row] = {}
        per_adapter: Counter[str | None] = Counter()
        longest = 0
        for capped in (True, False):
            for row in self._ready:
                if id(row) in chosen or (capped and per_adapter[row.adapter] >= self.config.max_rows_per_adapter):
                    continue
                if self._fits(len(chosen) + 1, max(longest, len(row))):
                    chosen[id(row)] = row
                    per_adapter[row.adapter] += 1
                    longest = max(longest, len(row))
        self._ready = [row for row in self._ready if id(row) not in chosen]
        for row in chosen.values():
            self.take(row.ticket)
        return list(chosen.values())

    def _fits(self, rows: int, longest: int) -> bool:
        return rows <= self.config.max_batch_size and rows * longest <= self.config.max_batch_tokens

    def _full(self) -> bool:
        tokens = sum(map(len, self._ready))
        return len(self._ready) >= self.config.max_batch_size or tokens >= self.config.max_batch_tokens

    async def _loop(self) -> None:
        while True:
            await self._wait_for_rows()
            rows = self.pick()
            if rows:
                await self._step(rows)

    async def _wait_for_rows(self) -> None:
        """Until rows are queued and the batch is full or the oldest row has waited max_wait_s."""
        while not self._ready:
            self._changed.clear()
            await self._changed.wait()
        deadline = self._ready[0].queued_at + self.config.max_wait_s
        while self._ready and not self._full() and (left := deadline - time.monotonic()) > 0:
            self._changed.clear()
            try:
                await asyncio.wait_for(self._changed.wait(), left)
            except asyncio.TimeoutError:
                return

    async def _step(self, rows: list[Row]) -> None:
        start = time.perf_counter()
        try:
            outputs = await self.execute(self._run_step, rows)
        except asyncio.CancelledError:
            for row in rows:
                _fail(row, EngineClosedError("the engine stopped during this step"))
            raise
        except Exception as err:
            logger.exception("engine step of %d rows failed", len(rows))
            for row in rows:
                _fail(row, err)
            return
        for row, output in zip(rows, outputs):
            if not row.future.done():
                row.future.set_result(output)
        self._record(rows, time.perf_counter() - start)

    def _record(self, rows: list[Row], seconds: float) -> None:
        s = self._stats
        self._stats = replace(s, steps=s.steps + 1, rows=s.rows + len(rows),
                              padded_tokens=s.padded_tokens + len(rows) * max(map(len, rows)),
                              largest_step=max(s.largest_step, len(rows)), step_seconds=s.step_seconds + seconds,
                              batch_size=s.batch_size.observe(len(rows)),
                              batch_adapters=s.batch_adapters.observe(len({r.adapter for r in rows} - {None})))


def _fail(row: Row, err: BaseException) -> None:
    if row.future is not None and not row.future.done():
        if isinstance(err, asyncio.CancelledError):
            row.future.cancel()
        else:
            row.future.set_exception(err)
