"""Generation with iteration-level continuous batching (the event-loop side).

A request becomes a :class:`SequenceState`. :class:`GenerationScheduler` keeps the sequences
waiting to join and the running ones, and runs one step at a time in the scheduler's step
thread (shared with classify / embed steps, which interleave with these):

* when sequences wait and the running batch has room, a **prefill** step computes their
  prompts (oldest first, at most ``max_prefill_tokens`` padded tokens) and their first
  tokens; they join the batch;
* otherwise a **decode** step computes one token for every running sequence.

Finished sequences leave at the next step (their KV row is given to the last row), so
requests join and leave between decode steps. Each step delivers one
:class:`GenerationChunk` per sequence to the request's queue. Prefill and decode are
separate steps: see docs/engine.md for why.

A request that stops reading (its stream is closed or its task cancelled) is marked
cancelled: it leaves the waiting queue at once, or its row is dropped at the next step.
"""
from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, AsyncGenerator, AsyncIterator

import torch

from .errors import EngineClosedError
from .sampling import SamplingParams
from .stats import BATCH_BOUNDS, SECONDS_BOUNDS, Buckets
from .textstream import TextStream

if TYPE_CHECKING:
    from .decoding import GenerationRunner
    from .scheduler import Scheduler, Ticket

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class GenerationChunk:
    """What one step added to a sequence.

    text: the new text (may be "" while a token is an incomplete character or could start
    a stop string); token_ids: the new tokens; finish_reason: None, or "stop" (a stop
    string, stop token or end-of-sequence token) / "length" (max_new_tokens) on the last
    chunk; prompt_tokens / completion_tokens: counts so far; logits: [V] float32 raw
    logits of the new token when the request asked for them.
    """

    text: str
    token_ids: list[int]
    finish_reason: str | None
    prompt_tokens: int
    completion_tokens: int
    logits: torch.Tensor | None = None


@dataclass(eq=False)
class SequenceState:
    """One generation request while it runs.

    prompt: its token ids; slot / adapter: its adapter's slot (-1: none) and name;
    generator: its sampling generator (None: greedy); text: its detokenizer; stop_ids:
    tokens that end it; tokens: generated so far; finish_reason: None until it ends;
    cancelled: its consumer left. The step thread appends tokens; the loop reads them only
    from the chunks it delivers.
    """

    prompt: list[int]
    params: SamplingParams
    slot: int
    adapter: str | None
    generator: torch.Generator | None
    text: TextStream
    stop_ids: frozenset[int]
    ticket: "Ticket | None" = None
    tokens: list[int] = field(default_factory=list)
    finish_reason: str | None = None
    cancelled: bool = False
    chunks: asyncio.Queue = field(default_factory=asyncio.Queue)
    queued_at: float = 0.0
    last_token_at: float | None = None

    @property
    def cached(self) -> int:
        """Tokens in its KV row: the prompt and every generated token but the last."""
        return len(self.prompt) + len(self.tokens) - 1

    @property
    def done(self) -> bool:
        return self.finish_reason is not None or self.cancelled

    def accept(self, token: int, logits: torch.Tensor | None) -> GenerationChunk:
        """Append a generated token (step thread); returns its chunk."""
        self.tokens.append(token)
        if token in self.stop_ids:
            text, reason = self.text.flush(), "stop"
        else:
            text, hit = self.text.push(token)
            reason = "stop" if hit else None
        if reason is None and len(self.tokens) >= self.params.max_new_tokens:
            text, reason = text + self.text.flush(), "length"
        self.finish_reason = reason
        return GenerationChunk(text, [token], reason, len(self.prompt), len(self.tokens), logits)


@dataclass(frozen=True)
class GenerationLimits:
    """max_running: sequences in the running batch; max_prefill_tokens: padded prompt tokens of
    one prefill step (rows x longest prompt); max_wait_s: how long an idle engine waits for
    more requests to prefill together."""

    max_running: int = 64
    max_prefill_tokens: int = 16384
    max_wait_s: float = 0.002


@dataclass(frozen=True)
class GenerationStats:
    """started / finished / cancelled: sequences that joined the batch / ended / were
    abandoned; prefill_steps / decode_steps and step_seconds: steps run and their time;
    prompt_tokens / generated_tokens: tokens prefilled / sampled; running / waiting: now;
    time_to_first_token: seconds from submission to the first token; inter_token: seconds
    between a sequence's tokens; decode_batch: running sequences per decode step."""

    started: int = 0
    finished: int = 0
    cancelled: int = 0
    prefill_steps: int = 0
    decode_steps: int = 0
    step_seconds: float = 0.0
    prompt_tokens: int = 0
    generated_tokens: int = 0
    running: int = 0
    waiting: int = 0
    time_to_first_token: Buckets = Buckets.empty(SECONDS_BOUNDS)
    inter_token: Buckets = Buckets.empty(SECONDS_BOUNDS)
    decode_batch: Buckets = Buckets.empty(BATCH_BOUNDS)


class GenerationScheduler:
    """Continuous batching of :class:`SequenceState` objects (see the module docstring).

    Args:
        runner: computes the steps (in the step thread).
        scheduler: the engine's scheduler: its queue admits requests, its thread runs steps.
        limits: bounds of the running batch and of a prefill step.
    """

    def __init__(self, runner: "GenerationRunner", scheduler: "Scheduler", limits: GenerationLimits) -> None:
        self.runner = runner
        self.scheduler = scheduler
        self.limits = limits
        self._waiting: deque[SequenceState] = deque()
        self._running: set[SequenceState] = set()
        self._changed = asyncio.Event()
        self._task: asyncio.Task | None = None
        self._stats = GenerationStats()

    # -- lifecycle ------------------------------------------------------------
    async def start(self) -> None:
        """Start the loop (after the scheduler: steps run in its thread)."""
        if self._task is None:
            self.runner.reset()
            self._task = asyncio.get_running_loop().create_task(self._loop())

    async def stop(self) -> None:
        """Stop the loop; waiting and running sequences fail with EngineClosedError."""
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
        self._fail([*self._waiting, *self._running], EngineClosedError("the engine stopped"))
        self._waiting.clear()
        self._running.clear()

    # -- requests -------------------------------------------------------------
    def submit(self, sequence: SequenceState) -> None:
        """Queue an admitted sequence (its ticket holds its place in the queue)."""
        if self._task is None:
            raise EngineClosedError("the engine is not running (call start())")
        sequence.queued_at = time.monotonic()
        self._waiting.append(sequence)
        self._changed.set()

    def cancel(self, sequence: SequenceState) -> None:
        """Abandon a sequence that has not finished; its place in the batch is free at once."""
        if sequence.finish_reason is not None or sequence.cancelled:
            return
        sequence.cancelled = True
        if sequence in self._waiting:
            self._waiting.remove(sequence)
        self._running.discard(sequence)
        self._stats = replace(self._stats, cancelled=self._stats.cancelled + 1)

    async def chunks(self, sequence: SequenceState) -> AsyncGenerator[GenerationChunk, None]:
        """The sequence's chunks as the steps deliver them, up to the one with a finish reason."""
        while True:
            item = await sequence.chunks.get()
            if isinstance(item, BaseException):
                raise item
            yield item
            if item.finish_reason is not None:
                return

    def stats(self) -> GenerationStats:
        return replace(self._stats, running=len(self._running), waiting=len(self._waiting))

    # -- the loop ---------------------------------------------------------------
    async def _loop(self) -> None:
        while True:
            await self._wait_for_work()
            joining = self._pick()
            if joining or self._running:
                await self._step(joining)

    async def _wait_for_work(self) -> None:
        """Until a sequence runs, or sequences wait and the prefill is full or the oldest waited max_wait_s."""
        while not self._waiting and not self._running:
            self._changed.clear()
            await self._changed.wait()
        if self._running:
            return
        deadline = self._waiting[0].queued_at + self.limits.max_wait_s
        while self._waiting and not self._prefill_full() and (left := deadline - time.monotonic()) > 0:
            self._changed.clear()
            try:
                await asyncio.wait_for(self._changed.wait(), left)
            except asyncio.TimeoutError:
                return

    def _prefill_full(self) -> bool:
        tokens = len(self._waiting) * max(len(s.prompt) for s in self._waiting)
        return len(self._waiting) >= self.limits.max_running or tokens >= self.limits.max_prefill_tokens

    def _pick(self) -> list[SequenceState]:
        """The waiting sequences that join now: oldest first, while the batch and the prefill budget have room."""
        picked: list[SequenceState] = []
        longest = 0
        while self._waiting and len(self._running) + len(picked) < self.limits.max_running:
            widest = max(longest, len(self._waiting[0].prompt))
            if picked and (len(picked) + 1) * widest > self.limits.max_prefill_tokens:
                break
            sequence = self._waiting.popleft()
            self.scheduler.take(sequence.ticket)
            picked.append(sequence)
            longest = widest
        self._running.update(picked)
        return picked

    async def _step(self, joining: list[SequenceState]) -> None:
        start = time.perf_counter()
        try:
            results = await self.scheduler.execute(self.runner.step, joining)
        except Exception as err:
            logger.exception("generation step failed (%d sequences)", len(self._running))
            self._fail(list(self._running), err)
            self._running.clear()
            await self.scheduler.execute(self.runner.reset)
            return
        self._deliver(results)
        self._record(joining, len(results), time.perf_counter() - start)

    def _deliver(self, results: list[tuple[SequenceState, GenerationChunk]]) -> None:
        now = time.monotonic()
        first, gaps = [], []
        for sequence, chunk in results:
            if sequence.cancelled:
                continue
            if sequence.last_token_at is None:
                first.append(now - sequence.queued_at)
            else:
                gaps.append(now - sequence.last_token_at)
            sequence.last_token_at = now
            sequence.chunks.put_nowait(chunk)
            if chunk.finish_reason is not None:
                self._running.discard(sequence)
                self._stats = replace(self._stats, finished=self._stats.finished + 1)
        self._observe_times(first, gaps)

    def _observe_times(self, first: list[float], gaps: list[float]) -> None:
        ttft, inter = self._stats.time_to_first_token, self._stats.inter_token
        for seconds in first:
            ttft = ttft.observe(seconds)
        for seconds in gaps:
            inter = inter.observe(seconds)
        self._stats = replace(self._stats, time_to_first_token=ttft, inter_token=inter)

    def _record(self, joining: list[SequenceState], tokens: int, seconds: float) -> None:
        s = self._stats
        if joining:
            s = replace(s, started=s.started + len(joining), prefill_steps=s.prefill_steps + 1,
                        prompt_tokens=s.prompt_tokens + sum(len(q.prompt) for q in joining))
        else:
            s = replace(s, decode_steps=s.decode_steps + 1, decode_batch=s.decode_batch.observe(tokens))
        self._stats = replace(s, generated_tokens=s.generated_tokens + tokens, step_seconds=s.step_seconds + seconds)

    @staticmethod
    def _fail(sequences: list[SequenceState], err: BaseException) -> None:
        for sequence in sequences:
            sequence.chunks.put_nowait(err)


class GenerationStream:
    """The chunks of one generation request, in order; the last one has ``finish_reason`` set.

    Iterate it with ``async for``. Closing it (``aclose()``, leaving ``async with``, or the
    consumer's task being cancelled while it waits) cancels the request and frees its place.
    """

    def __init__(self, chunks: AsyncGenerator[GenerationChunk | None, None]) -> None:
        self._chunks = chunks

    def __aiter__(self) -> AsyncIterator[GenerationChunk]:
        return self

    async def __anext__(self) -> GenerationChunk:
        return await self._chunks.__anext__()

    async def aclose(self) -> None:
        await self._chunks.aclose()

    async def __aenter__(self) -> "GenerationStream":
        return self

    async def __aexit__(self, *exc) -> None:
        await self.aclose()
