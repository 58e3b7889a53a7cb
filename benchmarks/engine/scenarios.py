"""The six scenarios of the engine issue, each returning an :class:`Outcome`.

What is timed is what serving runs:

* prefill / decode / heterogeneous time :class:`serve.engine.decoding.GenerationRunner`
  steps (the engine's own step function: AdapterBatch, the base decoder with the slot
  hooks, the KV cache, the LM head on one position per row, sampling) on adapters the
  engine's cache loaded into slots;
* cold loads go through ``Engine.load_adapter`` (cache -> loader -> slot write);
* the hot-step and generation scenarios drive the started engine through its public
  ``generate`` API, with the scheduler and continuous batching.

The denominators: the plain Hugging Face model (``LlamaForCausalLM`` with its own
``DynamicCache``, the same batch, ``logits_to_keep=1`` as ``generate`` does), and the
engine's own path with every row on slot -1. PEFT runs ``adapter_names=`` mixed batches
over the same LoRA weights.
"""
from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import torch
from torch import nn

from serve.engine import Engine, SamplingParams
from serve.engine.decoding import GenerationRunner
from serve.engine.generation import SequenceState
from serve.engine.textstream import TextStream

from .timing import interleaved, mean, median, percentile
from .workload import Shapes

logger = logging.getLogger(__name__)

FIRST_TOKEN = 5  # random prompts avoid the special low ids
KV_WARM_COLUMNS = 256  # hot-step scenario: above the longest its sequences get (32 + about 100 tokens)


@dataclass
class Measure:
    """One line of a scenario's table."""

    label: str
    value: float
    unit: str
    detail: str = ""


@dataclass
class Outcome:
    """A scenario's measures and its verdict. ratios: label -> throughput ratio vs the HF base (plot)."""

    key: str
    title: str
    measures: list[Measure]
    metric: str
    value: float
    target: str
    passed: bool
    peft: str
    notes: list[str] = field(default_factory=list)
    ratios: dict[str, float] = field(default_factory=dict)
    also: str = ""  # the same measure against another denominator, for the summary


@dataclass
class Bench:
    """Everything the scenarios share."""

    shapes: Shapes
    root: Path
    names: dict[str, list[str]]
    engine: Engine
    base: nn.Module
    peft: nn.Module
    generator: torch.Generator

    def prompts(self, rows: int, length: int) -> torch.Tensor:
        return torch.randint(FIRST_TOKEN, self.shapes.vocab, (rows, length), generator=self.generator)

    def shuffled(self, names: list[str]) -> list[str]:
        return [names[i] for i in torch.randperm(len(names), generator=self.generator).tolist()]

    def runner(self, rows: int) -> GenerationRunner:
        """A fresh step runner over the engine's model and slots (its own KV rows)."""
        engine = self.engine
        return GenerationRunner(engine.model, engine.slots, 0, rows, engine.max_context_tokens)


# -- building blocks ------------------------------------------------------------
def sequence(prompt: list[int], slot: int, max_new_tokens: int = 1, logits: bool = False) -> SequenceState:
    """A greedy sequence as the engine builds it (no tokenizer: no text)."""
    params = SamplingParams(max_new_tokens=max_new_tokens, ignore_eos=True, return_logits=logits)
    return SequenceState(prompt=prompt, params=params, slot=slot, adapter=None, generator=None,
                         text=TextStream(None, prompt), stop_ids=frozenset())


def engine_prefill(runner: GenerationRunner, ids: torch.Tensor, slots: list[int]) -> Callable[[], None]:
    """One engine prefill step of every row; the rows then leave (dropped at the start of the next step)."""
    prompts = ids.tolist()

    def run() -> None:
        joining = [sequence(p, s) for p, s in zip(prompts, slots)]
        runner.step(joining)
        for s in joining:
            s.cancelled = True
    return run


def hf_prefill(model: nn.Module, ids: torch.Tensor, **kwargs) -> Callable[[], None]:
    """The same prefill on a Hugging Face model (KV cache built, last position's logits, argmax)."""
    mask = torch.ones_like(ids)

    def run() -> None:
        with torch.inference_mode():
            out = model(input_ids=ids, attention_mask=mask, use_cache=True, logits_to_keep=1, **kwargs)
            out.logits[:, -1].argmax(-1)
    return run


class HFDecoder:
    """Greedy decode steps of a Hugging Face model with its DynamicCache (as ``generate`` runs them)."""

    def __init__(self, model: nn.Module, ids: torch.Tensor, **kwargs) -> None:
        self.model, self.kwargs = model, kwargs
        self.mask = torch.ones_like(ids)
        with torch.inference_mode():
            out = model(input_ids=ids, attention_mask=self.mask, use_cache=True, logits_to_keep=1, **kwargs)
        self.past, self.tokens = out.past_key_values, out.logits[:, -1].argmax(-1)

    def step(self) -> None:
        self.mask = torch.cat([self.mask, self.mask[:, :1]], dim=1)
        with torch.inference_mode():
            out = self.model(input_ids=self.tokens[:, None], attention_mask=self.mask, past_key_values=self.past,
                             use_cache=True, **self.kwargs)
        self.past, self.tokens = out.past_key_values, out.logits[:, -1].argmax(-1)


def one_token_forward(model: nn.Module, ids: torch.Tensor, **kwargs) -> Callable[[], None]:
    """The issue's PEFT decode reference: a forward of one token per row, no KV cache."""
    def run() -> None:
        with torch.inference_mode():
            model(input_ids=ids[:, -1:], use_cache=False, **kwargs).logits.argmax(-1)
    return run


async def pin(engine: Engine, names: list[str]) -> dict[str, object]:
    """Load and pin the adapters (in this order); name -> lease."""
    return {name: await engine.cache.acquire(name) for name in names}


async def pinned_in_random_order(bench: Bench, names: list[str]) -> tuple[dict[str, object], list[str], list[int]]:
    """Pin the adapters; (leases, the names shuffled, their slots in that order): rows do not follow slots."""
    leases = await pin(bench.engine, names)
    order = bench.shuffled(names)
    return leases, order, [leases[n].slot for n in order]


def unpin(engine: Engine, leases: dict[str, object]) -> None:
    for lease in leases.values():
        engine.cache.release(lease)


def throughput(tokens: int, samples: list[float]) -> float:
    return tokens / median(samples)


def max_logit_diff(bench: Bench, ids: torch.Tensor, slots: list[int], names: list[str]) -> float:
    """Stitch's vs PEFT's last-token logits on the same rows: both hold the same adapters."""
    runner = bench.runner(len(slots))
    chunks = runner.step([sequence(p, s, logits=True) for p, s in zip(ids.tolist(), slots)])
    ours = torch.stack([chunk.logits for _, chunk in chunks])
    with torch.inference_mode():
        theirs = bench.peft(input_ids=ids, adapter_names=names, use_cache=False).logits[:, -1]
    return float((ours - theirs).abs().max())


# -- scenarios ---------------------------------------------------------------------
async def prefill(bench: Bench) -> Outcome:
    s = bench.shapes
    names = bench.names["lora"][:s.prefill_requests]
    leases, order, slots = await pinned_in_random_order(bench, names)
    ids = bench.prompts(s.prefill_requests, s.prefill_tokens)
    fns = {"hf": hf_prefill(bench.base, ids),
           "stitch_base": engine_prefill(bench.runner(len(slots)), ids, [-1] * len(slots)),
           "stitch": engine_prefill(bench.runner(len(slots)), ids, slots),
           "peft": hf_prefill(bench.peft, ids, adapter_names=order)}
    samples = interleaved(fns, s.warmup, s.repeats)
    diff = max_logit_diff(bench, ids[:4], slots[:4], order[:4])
    unpin(bench.engine, leases)
    tokens = ids.numel()
    tps = {k: throughput(tokens, v) for k, v in samples.items()}
    ratio = tps["stitch"] / tps["hf"]
    return Outcome(
        key="prefill", title=f"Prefill: {s.prefill_requests} requests x {s.prefill_tokens} tokens, "
                             f"{s.prefill_requests} distinct LoRA adapters",
        measures=_throughput_rows(tps, samples, {"hf": "HF base model (no adapter)",
                                                 "stitch_base": "Stitch engine, every row slot -1",
                                                 "stitch": f"Stitch engine, {len(names)} adapters",
                                                 "peft": "PEFT adapter_names= (same batch, same weights)"}),
        metric="Stitch / HF base throughput", value=ratio, target=">= 0.92x", passed=ratio >= 0.92,
        peft=f"{tps['peft'] / tps['hf']:.2f}x",
        notes=[f"Stitch / its own slot -1 path: {tps['stitch'] / tps['stitch_base']:.2f}x",
               _fastest_rounds(samples),
               f"Stitch / PEFT: {tps['stitch'] / tps['peft']:.2f}x",
               f"requests in shuffled order relative to their slots; Stitch vs PEFT last-token logits of 4 rows: "
               f"max |diff| = {diff:.1e}"],
        ratios={"Stitch": ratio, "Stitch / own slot -1 path": tps["stitch"] / tps["stitch_base"],
                "PEFT": tps["peft"] / tps["hf"]},
        also=f"{tps['stitch'] / tps['stitch_base']:.2f}x vs its own slot -1 path")


async def heterogeneous(bench: Bench) -> Outcome:
    s = bench.shapes
    lora, seq_bn, ia3 = s.hetero_mix
    names = bench.names["lora"][:lora] + bench.names["seq_bn"][:seq_bn] + bench.names["ia3"][:ia3]
    leases, order, slots = await pinned_in_random_order(bench, names)
    ids = bench.prompts(len(order), s.prefill_tokens)
    fns = {"hf": hf_prefill(bench.base, ids),
           "stitch_base": engine_prefill(bench.runner(len(slots)), ids, [-1] * len(slots)),
           "stitch": engine_prefill(bench.runner(len(slots)), ids, slots)}
    samples = interleaved(fns, s.warmup, s.repeats)
    unpin(bench.engine, leases)
    tps = {k: throughput(ids.numel(), v) for k, v in samples.items()}
    ratio = tps["stitch"] / tps["hf"]
    return Outcome(
        key="heterogeneous", title=f"Heterogeneous prefill: {len(order)} requests x {s.prefill_tokens} tokens over "
                                   f"{lora} LoRA + {seq_bn} seq_bn + {ia3} IA3 adapters",
        measures=_throughput_rows(tps, samples, {"hf": "HF base model (no adapter)",
                                                 "stitch_base": "Stitch engine, every row slot -1",
                                                 "stitch": "Stitch engine, mixed methods"}),
        metric="Stitch / HF base throughput", value=ratio, target=">= 0.85x", passed=ratio >= 0.85,
        peft="cannot (no bottleneck adapters; no mixed methods in one batch)",
        notes=[f"Stitch / its own slot -1 path: {tps['stitch'] / tps['stitch_base']:.2f}x",
               _fastest_rounds(samples),
               "seq_bn: adapters_lib defaults (reduction factor 16, relu, after the FFN); IA3: defaults "
               "(k, v, FFN input scaling)"],
        ratios={"Stitch": ratio, "Stitch / own slot -1 path": tps["stitch"] / tps["stitch_base"]},
        also=f"{tps['stitch'] / tps['stitch_base']:.2f}x vs its own slot -1 path")


async def decode(bench: Bench) -> Outcome:
    s = bench.shapes
    names = bench.names["lora"][:s.decode_sequences]
    leases, order, slots = await pinned_in_random_order(bench, names)
    ids = bench.prompts(len(order), s.decode_context)
    fns = {"hf": HFDecoder(bench.base, ids).step,
           "stitch_base": _engine_decoder(bench, ids, [-1] * len(slots)),
           "stitch": _engine_decoder(bench, ids, slots),
           "peft": HFDecoder(bench.peft, ids, adapter_names=order).step,
           "hf_nocache": one_token_forward(bench.base, ids),
           "peft_nocache": one_token_forward(bench.peft, ids, adapter_names=order)}
    samples = interleaved(fns, s.warmup, s.decode_repeats)
    unpin(bench.engine, leases)
    tps = {k: throughput(len(order), v) for k, v in samples.items()}
    ratio = tps["stitch"] / tps["hf"]
    peft_cache, peft_nocache = tps["peft"] / tps["hf"], tps["peft_nocache"] / tps["hf_nocache"]
    return Outcome(
        key="decode", title=f"Decode: {len(order)} sequences x 1 new token with KV cache "
                            f"({s.decode_context}+ cached tokens each), {len(order)} distinct LoRA adapters",
        measures=_throughput_rows(tps, samples, {
            "hf": "HF base model, DynamicCache", "stitch_base": "Stitch engine, every row slot -1",
            "stitch": f"Stitch engine, {len(order)} adapters", "peft": "PEFT adapter_names=, DynamicCache",
            "hf_nocache": "HF base, one-token forward, no KV cache",
            "peft_nocache": "PEFT adapter_names=, one-token forward, no KV cache"}, unit="tokens/s"),
        metric="Stitch / HF base throughput", value=ratio, target=">= 0.60x", passed=ratio >= 0.60,
        peft=f"{peft_cache:.2f}x with KV cache; {peft_nocache:.2f}x one-token forward without (vs HF base without)",
        notes=[f"Stitch / its own slot -1 path: {tps['stitch'] / tps['stitch_base']:.2f}x",
               _fastest_rounds(samples),
               f"Stitch / PEFT (both with KV cache): {tps['stitch'] / tps['peft']:.2f}x",
               f"every variant's context grows by one token per round ({s.warmup + s.decode_repeats} rounds)"],
        ratios={"Stitch": ratio, "Stitch / own slot -1 path": tps["stitch"] / tps["stitch_base"], "PEFT": peft_cache,
                "PEFT, no KV cache": peft_nocache},
        also=f"{tps['stitch'] / tps['stitch_base']:.2f}x vs its own slot -1 path")


def _engine_decoder(bench: Bench, ids: torch.Tensor, slots: list[int]) -> Callable[[], None]:
    """A runner whose rows were prefilled; each call is one decode step of every row."""
    runner = bench.runner(len(slots))
    runner.step([sequence(p, slot, max_new_tokens=1 << 20) for p, slot in zip(ids.tolist(), slots)])
    return lambda: runner.step(())


async def cold_load(bench: Bench) -> Outcome:
    s, engine = bench.shapes, bench.engine
    names = bench.names["lora"]
    total, read = [], []
    for i in range(s.cold_loads + s.warmup):
        name = names[i % len(names)]
        engine.unload(name)
        start = time.perf_counter()
        await engine.load_adapter(name)
        total.append(time.perf_counter() - start)
        start = time.perf_counter()
        engine.loader.load(name)
        read.append(time.perf_counter() - start)
    total, read = total[s.warmup:], read[s.warmup:]
    p50 = median(total) * 1e3
    nbytes = engine.stats().cache.bytes_loaded / max(engine.stats().cache.loads, 1)
    return Outcome(
        key="cold_load", title="Cold load of one LoRA adapter (rank 16, 7 linears x "
                               f"{s.layers} layers) from local safetensors into a slot",
        measures=[Measure("Engine.load_adapter (unloaded first): p50", p50, "ms"),
                  Measure("Engine.load_adapter: p90", percentile(total, 0.9) * 1e3, "ms"),
                  Measure("of which AdapterLoader.load (read, validate, lay out): p50", median(read) * 1e3, "ms"),
                  Measure("adapter size", nbytes / 2**20, "MiB")],
        metric="p50 load latency", value=p50, target="<= 10 ms", passed=p50 <= 10.0, peft="",
        also=f"p90 {percentile(total, 0.9) * 1e3:.1f} ms",
        notes=[f"{len(total)} loads, each of an adapter just dropped from both tiers (the OS page cache is warm)"])


async def hot_steps(bench: Bench) -> Outcome:
    """Decode steps of hot adapters, undisturbed and while cold loads run (engine started)."""
    s, engine = bench.shapes, bench.engine
    hot = bench.names["lora"][:s.hot_sequences]
    cold = bench.names["lora"][s.hot_sequences:s.hot_sequences + s.hot_cold_loads]
    for name in hot:
        await engine.load_adapter(name)
    await _grow_kv(bench, len(hot), min(KV_WARM_COLUMNS, s.max_context))
    ends = _record_step_ends(engine)
    streams = [asyncio.create_task(_drain(engine, name, p)) for name, p in
               zip(hot, bench.prompts(len(hot), 32).tolist())]
    windows = []
    await _steps(ends, 2 * s.warmup + 4)
    for _ in range(s.hot_windows):
        for name in cold:
            engine.unload(name)
        await _steps(ends, 6)
        start = time.perf_counter()
        await asyncio.gather(*(engine.load_adapter(name) for name in cold))
        windows.append((start, time.perf_counter()))
    await _steps(ends, 6)
    for task in streams:
        task.cancel()
    await asyncio.gather(*streams, return_exceptions=True)
    del engine.generation.runner.step  # the class's method again
    return _hot_outcome(s, ends, windows)


async def _grow_kv(bench: Bench, rows: int, columns: int) -> None:
    """One prefill of ``rows`` x ``columns`` tokens, so the runner's KV buffers already have that size.

    The engine keeps its KV buffers between sequences and grows them by doubling; the first
    growth to a size touches fresh memory (one step several times slower than the others,
    once per size in an engine's life). Growing them first keeps that one-time cost out of a measure
    of what cold loads do to hot steps.
    """
    params = SamplingParams(max_new_tokens=1, ignore_eos=True)
    prompts = bench.prompts(rows, columns - 1).tolist()
    await asyncio.gather(*(bench.engine.generate_text(None, p, params) for p in prompts))


def _record_step_ends(engine: Engine) -> list[float]:
    """Wrap the generation runner's step (an instance attribute) to record when each decode step ends."""
    runner, ends = engine.generation.runner, []
    step = runner.step

    def timed(joining):
        result = step(joining)
        if not joining:
            ends.append(time.perf_counter())
        return result
    runner.step = timed
    return ends


async def _steps(ends: list[float], count: int) -> None:
    target = len(ends) + count
    while len(ends) < target:
        await asyncio.sleep(0.005)


async def _drain(engine: Engine, adapter: str, prompt: list[int]) -> None:
    params = SamplingParams(max_new_tokens=engine.max_context_tokens - len(prompt), ignore_eos=True)
    async with await engine.generate(adapter, prompt, params) as stream:
        async for _ in stream:
            pass


def _hot_outcome(s: Shapes, ends: list[float], windows: list[tuple[float, float]]) -> Outcome:
    quiet, busy = [], []
    for before, after in zip(ends[s.warmup:], ends[s.warmup + 1:]):
        overlaps = any(before < stop and after > start for start, stop in windows)
        (busy if overlaps else quiet).append(after - before)
    ratio = mean(busy) / mean(quiet)
    ms = [(w[1] - w[0]) * 1e3 for w in windows]
    return Outcome(
        key="hot_steps", title=f"Hot-adapter decode steps ({s.hot_sequences} sequences over {s.hot_sequences} "
                               f"resident adapters) while {s.hot_cold_loads} cold loads run",
        measures=[Measure("undisturbed step interval: mean", mean(quiet) * 1e3, "ms", f"{len(quiet)} steps"),
                  Measure("during the cold loads: mean", mean(busy) * 1e3, "ms", f"{len(busy)} steps"),
                  Measure("undisturbed: median", median(quiet) * 1e3, "ms"),
                  Measure("during the cold loads: median", median(busy) * 1e3, "ms",
                          f"ratio {median(busy) / median(quiet):.2f}x"),
                  Measure("undisturbed: p90", percentile(quiet, 0.9) * 1e3, "ms"),
                  Measure("during the cold loads: p90", percentile(busy, 0.9) * 1e3, "ms",
                          f"ratio {percentile(busy, 0.9) / percentile(quiet, 0.9):.2f}x"),
                  Measure("during the cold loads: max", max(busy) * 1e3, "ms"),
                  Measure(f"{s.hot_cold_loads} loads together (Engine.load_adapter, gathered): median",
                          median(ms), "ms", f"{len(windows)} rounds")],
        metric="mean step interval during loads / undisturbed", value=ratio, target="<= 1.2x",
        passed=ratio <= 1.2, peft="",
        also=f"median {median(busy) / median(quiet):.2f}x, p90 {percentile(busy, 0.9) / percentile(quiet, 0.9):.2f}x",
        notes=["step interval = time between the ends of consecutive decode steps in the step thread (what every "
               "running sequence waits per token), counted as disturbed when it overlaps a round of loads (from "
               "starting the loads to the last one in its slot); the verdict uses the mean, i.e. the hot "
               "sequences' token rate during the loads (the median hides the one or two stretched steps per round)"])


async def generation(bench: Bench) -> Outcome:
    """Continuous batching with staggered arrivals vs PEFT generate on one static batch (engine started)."""
    s = bench.shapes
    names = bench.names["lora"][:s.gen_requests]
    for name in names:
        await bench.engine.load_adapter(name)
    lengths = torch.randint(s.gen_prompt[0], s.gen_prompt[1] + 1, (len(names),), generator=bench.generator)
    prompts = [bench.prompts(1, int(n))[0].tolist() for n in lengths]
    ids, mask = _left_padded(prompts)
    runs = {"stitch": lambda: _staggered(bench, names, prompts),
            "stitch_base": lambda: _staggered(bench, [None] * len(names), prompts),
            "peft": lambda: _static(bench.peft, ids, mask, s.gen_new_tokens, adapter_names=names),
            "hf": lambda: _static(bench.base, ids, mask, s.gen_new_tokens)}
    seconds, outputs, steps = {k: [] for k in runs}, {}, None
    for round_index in range(1 + s.gen_repeats):
        for key, run in runs.items():
            before = bench.engine.stats().generation
            elapsed, outputs[key] = await run()
            if round_index:
                seconds[key].append(elapsed)
            if key == "stitch":
                steps = _step_counts(before, bench.engine.stats().generation)
    tokens = len(names) * s.gen_new_tokens
    tps = {k: throughput(tokens, v) for k, v in seconds.items()}
    same = sum(a == b for a, b in zip(outputs["stitch"], outputs["peft"]))
    ratio = tps["stitch"] / tps["peft"]
    return Outcome(
        key="generation", title=f"Generation: {len(names)} requests over {len(names)} LoRA adapters, prompts of "
                                f"{s.gen_prompt[0]}-{s.gen_prompt[1]} tokens, {s.gen_new_tokens} new tokens each",
        measures=_throughput_rows(tps, seconds, {
            "stitch": f"Stitch Engine.generate, arrivals every {s.gen_gap_s * 1e3:.0f} ms",
            "stitch_base": "Stitch Engine.generate, no adapter, same arrivals",
            "peft": "PEFT generate(adapter_names=...), one static batch of all requests",
            "hf": "HF base generate, same static batch"}, unit="new tokens/s"),
        metric="Stitch / PEFT generated tokens per second", value=ratio, target=">= 2x", passed=ratio >= 2.0,
        peft=f"{tps['peft']:.0f} tokens/s",
        notes=["wall time: first arrival to last token (Stitch) / the generate call (static batches, which start "
               "with every request present: this favours PEFT and HF)",
               f"greedy outputs identical to PEFT's for {same} of {len(names)} requests",
               f"Stitch / HF base generate: {tps['stitch'] / tps['hf']:.2f}x; HF base generate / PEFT: "
               f"{tps['hf'] / tps['peft']:.2f}x (what the plain base model, with no adapter and every request "
               "present at once, reaches over PEFT)",
               f"Stitch's last run: {steps}"],
        ratios={"Stitch / PEFT": ratio},
        also=f"Stitch without adapters {tps['stitch_base'] / tps['peft']:.2f}x, HF base generate "
             f"{tps['hf'] / tps['peft']:.2f}x PEFT")


def _step_counts(before, after) -> str:
    """What the engine's generation loop did between two stats snapshots."""
    prefills, decodes = after.prefill_steps - before.prefill_steps, after.decode_steps - before.decode_steps
    rows = after.decode_batch.sum - before.decode_batch.sum
    busy = after.step_seconds - before.step_seconds
    return (f"{prefills} prefill steps, {decodes} decode steps of {rows / max(decodes, 1):.1f} sequences on "
            f"average, {busy:.2f} s inside steps")


async def _staggered(bench: Bench, adapters: list[str | None], prompts: list[list[int]]):
    """(seconds from the first arrival to the last token, each request's tokens)."""
    s, start = bench.shapes, time.perf_counter()
    params = SamplingParams(max_new_tokens=s.gen_new_tokens, ignore_eos=True)

    async def one(i: int) -> list[int]:
        await asyncio.sleep(i * s.gen_gap_s)
        return (await bench.engine.generate_text(adapters[i], prompts[i], params)).token_ids

    tokens = await asyncio.gather(*(one(i) for i in range(len(prompts))))
    return time.perf_counter() - start, tokens


async def _static(model: nn.Module, ids: torch.Tensor, mask: torch.Tensor, new_tokens: int, **kwargs):
    """(seconds of one generate call over the whole batch, each request's new tokens)."""
    start = time.perf_counter()
    with torch.inference_mode():
        out = model.generate(input_ids=ids, attention_mask=mask, max_new_tokens=new_tokens, min_new_tokens=new_tokens,
                             do_sample=False, pad_token_id=0, **kwargs)
    return time.perf_counter() - start, out[:, ids.shape[1]:].tolist()


def _left_padded(prompts: list[list[int]]) -> tuple[torch.Tensor, torch.Tensor]:
    width = max(map(len, prompts))
    ids = torch.zeros(len(prompts), width, dtype=torch.long)
    mask = torch.zeros_like(ids)
    for i, prompt in enumerate(prompts):
        ids[i, width - len(prompt):] = torch.tensor(prompt)
        mask[i, width - len(prompt):] = 1
    return ids, mask


def _fastest_rounds(samples: dict[str, list[float]]) -> str:
    """The verdict's ratio from each variant's fastest round: a check against other jobs' load."""
    return (f"from each variant's fastest round instead of the median: Stitch / HF base "
            f"{min(samples['hf']) / min(samples['stitch']):.2f}x, Stitch / own slot -1 path "
            f"{min(samples['stitch_base']) / min(samples['stitch']):.2f}x")


def _throughput_rows(tps: dict[str, float], samples: dict[str, list[float]], labels: dict[str, str],
                     unit: str = "tokens/s") -> list[Measure]:
    return [Measure(label, tps[key], unit, f"median {median(samples[key]) * 1e3:.1f} ms of {len(samples[key])}, "
                                          f"fastest {min(samples[key]) * 1e3:.1f} ms")
            for key, label in labels.items()]
