"""Engine: one frozen base model serving many adapters; the tasks' public API (no HTTP).

    engine = Engine.from_config(EngineConfig(adapter_roots=("adapters",)))
    async with engine:
        result = await engine.classify("sst2", ["a fine film"])
        vectors = (await engine.embed(None, ["a fine film"])).vectors
        text = (await engine.generate_text("chat-lora", "Once upon", SamplingParams(max_new_tokens=32))).text

A call validates and tokenizes its inputs, takes room in the scheduler's queue (or fails
at once with QueueFullError), pins its adapter in the cache (loading it if cold), queues
one row per input and awaits the rows' outputs; the adapter is unpinned when the call
ends, however it ends. A generation request does the same and then streams its chunks
(see :mod:`serve.engine.generation`); it keeps its adapter pinned until it finishes.
"""
from __future__ import annotations

import json
import logging
import time
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, AsyncGenerator, AsyncIterator, Sequence

import torch
from jinja2 import TemplateError
from torch import nn

import kernels
from adapters_lib.interface import INTERFACES
from adapters_lib.io import BaseInfo
from adapters_lib.models import load_base_model, resolve_model_path

from .banks import BankSpec
from .cache import AdapterCache, CacheStats, Lease
from .config import EngineConfig
from .decoding import GenerationRunner
from .errors import EmptyInputError, InputTooLongError, InvalidInputError, UnsupportedTaskError
from .generation import (GenerationChunk, GenerationLimits, GenerationScheduler, GenerationStats, GenerationStream,
                         SequenceState)
from .layers import AdapterSlots
from .loader import AdapterInfo, AdapterLoader, BaseModelSpec
from .runner import ModelRunner
from .sampling import SamplingParams, make_generator
from .scheduler import Row, Scheduler, SchedulerConfig, SchedulerStats
from .sources import AdapterRegistry, AdapterSources
from .textstream import TextStream

logger = logging.getLogger(__name__)

Input = str | Sequence[int]


@dataclass(frozen=True)
class ClassifyResult:
    """labels[i] / scores[i]: input i's most probable label and its softmax probability;
    logits: [N, C] float32; label_names: names by class index; num_tokens: tokens read."""

    labels: list[str]
    scores: list[float]
    logits: torch.Tensor
    label_names: list[str]
    num_tokens: int


@dataclass(frozen=True)
class EmbedResult:
    """vectors: [N, H] float32, one per input; num_tokens: tokens read."""

    vectors: torch.Tensor
    num_tokens: int


@dataclass(frozen=True)
class GenerationResult:
    """A finished generation: its text (stop strings cut), token_ids (generated, a final stop or
    end-of-sequence token included), finish_reason ("stop" or "length"), token counts, and
    seconds from the call to the first token and to the end."""

    text: str
    token_ids: list[int]
    finish_reason: str
    prompt_tokens: int
    completion_tokens: int
    time_to_first_token: float
    seconds: float


@dataclass(frozen=True)
class EngineStats:
    cache: CacheStats
    scheduler: SchedulerStats
    generation: GenerationStats = GenerationStats()


class Engine:
    """The serving engine of one replica.

    Args:
        model: a base model (``AutoModel``) of an architecture adapters_lib supports, or a
            causal LM (``AutoModelForCausalLM``: it can also generate); it is frozen, put in
            eval mode and moved to the config's device and dtype.
        tokenizer: its tokenizer; None accepts token-id inputs only.
        config: the engine's settings.
        registry: an adapter registry (overrides ``config.registry``).
        model_path: the model's local directory, for its sentence-transformers pooling files.
    """

    def __init__(self, model: nn.Module, tokenizer=None, config: EngineConfig | None = None, *,
                 registry: AdapterRegistry | None = None, model_path: str | Path | None = None) -> None:
        self.config = config = config or EngineConfig()
        self.device = _device(config.device)
        self.model = _freeze(model, self.device, config.torch_dtype)
        self.tokenizer = tokenizer
        interface = INTERFACES.get(model.config.model_type)
        backend = kernels.get_backend(self.device, config.kernel_backend)
        self.slots = AdapterSlots(self.model, interface, BankSpec(config.max_slots, self.device, config.torch_dtype, backend))
        base = BaseModelSpec(BaseInfo.from_model_config(model.config), interface, self.slots.contexts,
                             getattr(model.config, "vocab_size", None))
        if registry is None and config.registry is not None:
            registry = AdapterRegistry.from_file(config.registry)
        self.sources = AdapterSources(config.adapter_roots, registry, config.allow_hub_ids)
        self.loader = AdapterLoader(self.sources, base, config.torch_dtype, config.max_rank, config.allow_bin_weights)
        self.cache = AdapterCache(self.slots, self.loader, config.max_host_bytes)
        pooling, self.normalize = _embedding_defaults(config, model_path)
        self.runner = ModelRunner(self.model.base_model, self.slots, _pad_token_id(model, tokenizer), pooling)
        self.scheduler = Scheduler(self.runner.run, _scheduler_config(config))
        self.max_input_tokens = min(config.max_input_tokens or config.max_batch_tokens,
                                    _position_limit(model, tokenizer, config))
        self.max_context_tokens = _context_limit(model, config)
        self.eos_token_ids = _eos_token_ids(model, tokenizer)
        self.generation = self._generation(tokenizer) if self.can_generate else None

    @classmethod
    def from_config(cls, config: EngineConfig, registry: AdapterRegistry | None = None) -> "Engine":
        """Load ``config.model`` (packaged name, local directory or Hub id; a causal LM with its LM head)
        and build the engine."""
        model, tokenizer = load_base_model(config.model, lm_head=True)
        return cls(model, tokenizer, config, registry=registry, model_path=resolve_model_path(config.model))

    def _generation(self, tokenizer) -> GenerationScheduler:
        config = self.config
        runner = GenerationRunner(self.model, self.slots, _pad_token_id(self.model, tokenizer), config.max_batch_size,
                                  self.max_context_tokens)
        limits = GenerationLimits(max_running=config.max_batch_size, max_prefill_tokens=config.max_batch_tokens,
                                  max_wait_s=config.max_wait_ms / 1e3)
        return GenerationScheduler(runner, self.scheduler, limits)

    @property
    def can_generate(self) -> bool:
        """Whether the base model is a causal LM with its LM head (the ``generate`` task)."""
        return _is_causal_lm(self.model)

    # -- lifecycle ------------------------------------------------------------
    async def start(self) -> None:
        """Start the scheduler (and the generation loop) on the running event loop."""
        await self.scheduler.start()
        if self.generation is not None:
            await self.generation.start()

    async def stop(self) -> None:
        """Stop the scheduler (queued and running requests fail with EngineClosedError) and cancel loads."""
        if self.generation is not None:
            await self.generation.stop()
        await self.scheduler.stop()
        await self.cache.close()

    async def __aenter__(self) -> "Engine":
        await self.start()
        return self

    async def __aexit__(self, *exc) -> None:
        await self.stop()

    # -- tasks ----------------------------------------------------------------
    async def classify(self, adapter: str, inputs: Sequence[Input]) -> ClassifyResult:
        """Labels and scores of each input from the classification head of ``adapter``."""
        ids = self._encode(inputs)
        with self.scheduler.admit(len(ids)) as ticket:
            async with self._lease(adapter) as lease:
                head = lease.info.head if lease is not None else None
                if head is None or head.type != "classification":
                    raise UnsupportedTaskError(f"adapter {adapter!r} has no classification head")
                logits = torch.stack(await self.scheduler.run(ticket, _rows(ids, lease, "classify")))
        scores, best = logits.softmax(-1).max(-1)
        names = head.labels()
        return ClassifyResult([names[i] for i in best.tolist()], scores.tolist(), logits, names, _tokens(ids))

    async def embed(self, adapter: str | None, inputs: Sequence[Input], normalize: bool | None = None) -> EmbedResult:
        """Pooled last hidden states of each input, with ``adapter`` (None: the base model alone).

        normalize: L2-normalise the vectors (None: the model's default, see EngineConfig)."""
        ids = self._encode(inputs)
        with self.scheduler.admit(len(ids)) as ticket:
            async with self._lease(adapter) as lease:
                vectors = torch.stack(await self.scheduler.run(ticket, _rows(ids, lease, "embed")))
        if self.normalize if normalize is None else normalize:
            vectors = nn.functional.normalize(vectors, dim=-1)
        return EmbedResult(vectors, _tokens(ids))

    async def generate(self, adapter: str | None, prompt: Input,
                       params: SamplingParams | None = None) -> GenerationStream:
        """Start generating from ``prompt`` with ``adapter`` (None: the base model alone).

        Returns once the request is admitted and its adapter is pinned (errors such as
        QueueFullError or UnknownAdapterError raise here); iterate the stream for its
        chunks. Closing the stream cancels the request."""
        params = params or SamplingParams()
        ids = self._encode_prompt(prompt, params)
        chunks = self._chunks(adapter, ids, params)
        await chunks.__anext__()  # admitted and pinned
        return GenerationStream(chunks)

    async def generate_text(self, adapter: str | None, prompt: Input,
                            params: SamplingParams | None = None) -> GenerationResult:
        """Generate to the end; the whole text and token ids."""
        start = time.monotonic()
        first, text, tokens = None, [], []
        async with await self.generate(adapter, prompt, params) as stream:
            async for chunk in stream:
                first = time.monotonic() - start if first is None else first
                text.append(chunk.text)
                tokens.extend(chunk.token_ids)
        return GenerationResult("".join(text), tokens, chunk.finish_reason, chunk.prompt_tokens,
                                chunk.completion_tokens, first, time.monotonic() - start)

    def chat_prompt(self, messages: Sequence[dict[str, Any]]) -> str:
        """The prompt for a chat (``[{"role": ..., "content": ...}, ...]``) from the tokenizer's chat template,
        ending with the assistant's turn. UnsupportedTaskError when the tokenizer has no template."""
        if self.tokenizer is None or not getattr(self.tokenizer, "chat_template", None):
            raise UnsupportedTaskError("this base model's tokenizer has no chat template: send a plain prompt")
        try:
            return self.tokenizer.apply_chat_template(list(messages), tokenize=False, add_generation_prompt=True)
        except (TemplateError, ValueError, TypeError) as err:  # the template's own checks (roles, order)
            raise InvalidInputError(f"the chat template rejected these messages: {err}") from None

    async def _chunks(self, adapter: str | None, ids: list[int],
                      params: SamplingParams) -> AsyncGenerator[GenerationChunk | None, None]:
        """Admission, the adapter's lease and the chunks of one generation; yields None once admitted."""
        with self.scheduler.admit(1) as ticket:
            async with self._lease(adapter) as lease:
                sequence = self._sequence(ids, params, lease, ticket)
                self.generation.submit(sequence)
                try:
                    yield None
                    async for chunk in self.generation.chunks(sequence):
                        yield chunk
                finally:
                    self.generation.cancel(sequence)

    def _sequence(self, ids: list[int], params: SamplingParams, lease: Lease | None, ticket) -> SequenceState:
        slot, name = (lease.slot, lease.name) if lease is not None else (-1, None)
        stop_ids = frozenset(params.stop_token_ids) | (frozenset() if params.ignore_eos else self.eos_token_ids)
        return SequenceState(prompt=ids, params=params, slot=slot, adapter=name,
                             generator=make_generator(params, self.device),
                             text=TextStream(self.tokenizer, ids, params.stop), stop_ids=stop_ids, ticket=ticket)

    async def load_adapter(self, name: str) -> AdapterInfo:
        """Make ``name`` resident (e.g. at startup) and describe it; raises the adapter's load error."""
        async with self.cache.lease(name) as lease:
            return lease.info

    def unload(self, name: str) -> None:
        """Drop adapter ``name`` from the cache; requests in flight with it finish first."""
        self.cache.forget(name)

    def stats(self) -> EngineStats:
        generation = self.generation.stats() if self.generation is not None else GenerationStats()
        return EngineStats(self.cache.stats(), self.scheduler.stats(), generation)

    @asynccontextmanager
    async def _lease(self, adapter: str | None) -> AsyncIterator[Lease | None]:
        if adapter is None:
            yield None
            return
        async with self.cache.lease(adapter) as lease:
            yield lease

    # -- inputs ---------------------------------------------------------------
    def _encode(self, inputs: Sequence[Input]) -> list[list[int]]:
        """Token ids of every input; EmptyInputError / InputTooLongError / InvalidInputError."""
        if isinstance(inputs, str):
            inputs = [inputs]
        if not inputs:
            raise EmptyInputError("no inputs")
        ids = [self._encode_one(i, item) for i, item in enumerate(inputs)]
        for i, row in enumerate(ids):
            if len(row) > self.max_input_tokens:
                raise InputTooLongError(f"input {i} has {len(row)} tokens; the limit is {self.max_input_tokens}")
        return ids

    def _encode_prompt(self, prompt: Input, params: SamplingParams) -> list[int]:
        """A generation prompt's ids; checks the task, the prompt and its room for max_new_tokens."""
        if self.generation is None:
            raise UnsupportedTaskError("this base model cannot generate (it is not a causal LM with an LM head)")
        if params.stop and self.tokenizer is None:
            raise InvalidInputError("stop strings need a tokenizer; this engine has none (use stop_token_ids)")
        ids = self._encode([prompt])[0]
        if len(ids) + params.max_new_tokens > self.max_context_tokens:
            raise InputTooLongError(f"the prompt has {len(ids)} tokens and max_new_tokens is {params.max_new_tokens}; "
                                    f"together they may not exceed {self.max_context_tokens}")
        return ids

    def _encode_one(self, index: int, item: Input) -> list[int]:
        if isinstance(item, str):
            if not item.strip():
                raise EmptyInputError(f"input {index} is empty")
            if self.tokenizer is None:
                raise InvalidInputError("this engine has no tokenizer: pass token ids")
            return list(self.tokenizer(item, add_special_tokens=_adds_special_tokens(self.tokenizer, item),
                                       verbose=False)["input_ids"])
        if not isinstance(item, Sequence) or not all(isinstance(t, int) and not isinstance(t, bool) for t in item):
            raise InvalidInputError(f"input {index} is neither a text nor a list of token ids")
        if not item:
            raise EmptyInputError(f"input {index} has no tokens")
        vocab = getattr(self.model.config, "vocab_size", None)
        if vocab is not None and not all(0 <= t < vocab for t in item):
            raise InvalidInputError(f"input {index} has token ids outside [0, {vocab})")
        return list(item)


def _adds_special_tokens(tokenizer, text: str) -> bool:
    """False for a text that already starts with the BOS token (a chat template's output)."""
    bos = getattr(tokenizer, "bos_token", None)
    return not (isinstance(bos, str) and bos and text.startswith(bos))


def _rows(ids: list[list[int]], lease: Lease | None, task: str) -> list[Row]:
    slot, name = (lease.slot, lease.name) if lease is not None else (-1, None)
    return [Row(input_ids=row, slot=slot, adapter=name, task=task) for row in ids]


def _tokens(ids: list[list[int]]) -> int:
    return sum(map(len, ids))


def _device(name: str) -> torch.device:
    device = torch.device(name)
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(f"device {name!r} requested but CUDA is not available")
        return torch.device("cuda", device.index if device.index is not None else torch.cuda.current_device())
    return device


def _freeze(model: nn.Module, device: torch.device, dtype: torch.dtype) -> nn.Module:
    model.requires_grad_(False)
    return model.to(device=device, dtype=dtype).eval()


def _scheduler_config(config: EngineConfig) -> SchedulerConfig:
    return SchedulerConfig(max_batch_size=config.max_batch_size, max_batch_tokens=config.max_batch_tokens,
                           max_rows_per_adapter=config.max_rows_per_adapter, max_wait_s=config.max_wait_ms / 1e3,
                           max_queue=config.max_queue)


def _pad_token_id(model: nn.Module, tokenizer) -> int:
    for value in (getattr(tokenizer, "pad_token_id", None), getattr(model.config, "pad_token_id", None)):
        if isinstance(value, int):
            return value
    return 0


def _position_limit(model: nn.Module, tokenizer, config: EngineConfig) -> int:
    """The longest input the model takes: its position limit, the tokenizer's, the batch budget."""
    positions = getattr(model.config, "max_position_embeddings", None)
    if isinstance(positions, int) and model.config.model_type in ("roberta", "xlm-roberta"):
        positions -= (model.config.pad_token_id or 0) + 1  # their position ids start after the padding id
    limits = [config.max_batch_tokens, positions, getattr(tokenizer, "model_max_length", None)]
    return min(int(limit) for limit in limits if isinstance(limit, int) and 0 < limit < 1_000_000)


def _is_causal_lm(model: nn.Module) -> bool:
    """A generative model with an LM head around its base model (``XForCausalLM``, ``GPT2LMHeadModel``)."""
    return (model.base_model is not model and getattr(model, "can_generate", lambda: False)()
            and model.get_output_embeddings() is not None)


def _context_limit(model: nn.Module, config: EngineConfig) -> int:
    """Most tokens of a generated sequence: the config's limit, the model's positions, its sliding window."""
    options = model.config
    window = getattr(options, "sliding_window", None)
    layer_types = getattr(options, "layer_types", None)
    if layer_types is not None and "sliding_attention" not in layer_types:
        window = None  # see serve.engine.kvcache: a window shorter than a sequence is not served
    limits = [config.max_context_tokens, getattr(options, "max_position_embeddings", None), window]
    return min(int(limit) for limit in limits if isinstance(limit, int) and limit > 0)


def _eos_token_ids(model: nn.Module, tokenizer) -> frozenset[int]:
    """The end-of-sequence tokens of the model's generation config and of its tokenizer."""
    ids = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
    ids = set(ids if isinstance(ids, (list, tuple)) else [ids] if isinstance(ids, int) else [])
    eos = getattr(tokenizer, "eos_token_id", None)
    return frozenset(ids | ({eos} if isinstance(eos, int) else set()))


def _embedding_defaults(config: EngineConfig, model_path: str | Path | None) -> tuple[str, bool]:
    """(pooling, normalize): the config's, else the sentence-transformers files', else (mean, False)."""
    pooling, normalize = "mean", False
    if model_path is not None:
        pooling, normalize = _sentence_transformers_pooling(Path(model_path), pooling, normalize)
    pooling = config.embed_pooling or pooling
    normalize = normalize if config.embed_normalize is None else config.embed_normalize
    return pooling, normalize


def _sentence_transformers_pooling(path: Path, pooling: str, normalize: bool) -> tuple[str, bool]:
    try:
        modules = json.loads((path / "modules.json").read_text())
        pooling_dir = next(m["path"] for m in modules if m["type"].endswith("Pooling"))
        options = json.loads((path / pooling_dir / "config.json").read_text())
    except (OSError, ValueError, KeyError, StopIteration):
        return pooling, normalize
    normalize = any(m["type"].endswith("Normalize") for m in modules)
    for key, name in (("pooling_mode_cls_token", "cls"), ("pooling_mode_lasttoken", "last"),
                      ("pooling_mode_mean_tokens", "mean")):
        if options.get(key):
            pooling = name
    return pooling, normalize
