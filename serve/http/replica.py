"""Ray Serve deployments behind the ingress: the model replica and the adapter directory.

``ModelReplica`` runs one :class:`~serve.engine.Engine` (one frozen base model) per
replica. Requests reach it with the adapter as Ray Serve's multiplexed model id, so the
router prefers a replica that already holds the adapter; batching across adapters is
the engine's own scheduler (``@serve.batch`` would split batches by model id).

``AdapterDirectory`` (one replica) holds adapters registered at run time; model replicas
copy its entries into their engine's registry at most ``directory_sync_seconds`` after a
change.
"""
from __future__ import annotations

import asyncio
import dataclasses
import time
from typing import Any

from ray import serve

from ..engine import Engine, RegistryEntry
from ..engine.sampling import SamplingParams
from ..engine.sources import AdapterRegistry
from .args import StitchArgs


class AdapterDirectory:
    """Adapters registered through the API: name -> RegistryEntry, with a version counter."""

    def __init__(self) -> None:
        self.entries: dict[str, RegistryEntry] = {}
        self.version = 0

    def snapshot(self) -> tuple[int, list[RegistryEntry]]:
        return self.version, list(self.entries.values())

    def register(self, entry: RegistryEntry) -> int:
        self.entries[entry.name] = entry
        self.version += 1
        return self.version

    def unregister(self, name: str) -> bool:
        found = self.entries.pop(name, None) is not None
        self.version += found
        return found


class ModelReplica:
    """One engine; every answer carries ``replica`` (its id) and ``stats`` (engine counters)."""

    def __init__(self, args: StitchArgs, directory) -> None:
        self.args = args
        self.directory = directory
        self.engine = Engine.from_config(args.engine_config())
        self.replica_id = serve.get_replica_context().replica_id.unique_id
        self._started = asyncio.Lock()
        self._synced_at = 0.0
        self._version = -1
        self._registered: set[str] = set()

    async def _ready(self, min_version: int = -1) -> None:
        """Start the engine once; refresh runtime registrations when stale or older than ``min_version``."""
        async with self._started:
            if not self.engine.scheduler.running:
                await self.engine.start()
        stale = time.monotonic() - self._synced_at > self.args.directory_sync_seconds
        if stale or self._version < min_version:
            await self._sync_directory()

    async def _sync_directory(self) -> None:
        version, entries = await self.directory.snapshot.remote()
        self._synced_at = time.monotonic()
        if version == self._version:
            return
        registry: AdapterRegistry = self.engine.sources.registry
        names = {e.name for e in entries}
        for name in self._registered - names:
            registry.remove(name)
            self.engine.unload(name)
        for entry in entries:
            registry.add(entry)
        self._registered, self._version = names, version

    @serve.multiplexed(max_num_models_per_replica=64)
    async def _adapter(self, name: str) -> str:
        """Ray's multiplexing routing hint: later requests for ``name`` prefer this replica.

        It loads nothing: the request's own lease loads the adapter, so the cache counts
        each request once (a hit or a miss)."""
        return name

    async def _leased_adapter(self) -> str | None:
        name = serve.get_multiplexed_model_id() or None
        if name is not None:
            await self._adapter(name)
        return name

    def _answer(self, **fields: Any) -> dict[str, Any]:
        return {"replica": self.replica_id, "stats": self.snapshot(), **fields}

    def snapshot(self) -> dict[str, Any]:
        stats = self.engine.stats()
        return {**dataclasses.asdict(stats.cache), **dataclasses.asdict(stats.scheduler)}  # Buckets -> dicts

    async def classify(self, texts: list[str]) -> dict[str, Any]:
        await self._ready()
        adapter = await self._leased_adapter()
        result = await self.engine.classify(adapter, texts)
        return self._answer(labels=result.labels, scores=result.scores, label_names=result.label_names,
                            probabilities=result.logits.softmax(-1).tolist(), tokens=result.num_tokens)

    async def embed(self, inputs: list) -> dict[str, Any]:
        await self._ready()
        adapter = await self._leased_adapter()
        result = await self.engine.embed(adapter, inputs)
        return self._answer(vectors=result.vectors.tolist(), tokens=result.num_tokens)

    async def generate(self, prompt, params: dict[str, Any], chat: bool = False) -> dict[str, Any]:
        """Generate to the end. prompt: a text, token ids, or chat messages (``chat``)."""
        await self._ready()
        adapter = await self._leased_adapter()
        text = self.engine.chat_prompt(prompt) if chat else prompt
        result = await self.engine.generate_text(adapter, text, SamplingParams(**params))
        return self._answer(text=result.text, finish_reason=result.finish_reason, prompt_tokens=result.prompt_tokens,
                            completion_tokens=result.completion_tokens, ttft=result.time_to_first_token,
                            seconds=result.seconds)

    async def generate_stream(self, prompt, params: dict[str, Any], chat: bool = False):
        """Stream chunks as dicts; the first item is ``{"started": True, ...}`` once admitted."""
        await self._ready()
        adapter = await self._leased_adapter()
        text = self.engine.chat_prompt(prompt) if chat else prompt
        async with await self.engine.generate(adapter, text, SamplingParams(**params)) as stream:
            yield self._answer(started=True)
            async for chunk in stream:
                yield {"text": chunk.text, "finish_reason": chunk.finish_reason,
                       "prompt_tokens": chunk.prompt_tokens, "completion_tokens": chunk.completion_tokens}

    async def describe(self, name: str, min_version: int = -1) -> dict[str, Any]:
        """Load ``name`` (raising its load error) and describe it, with registrations up to ``min_version``."""
        await self._ready(min_version)
        info = await self.engine.load_adapter(name)
        return self._answer(adapter=_card(info))

    async def stats(self) -> dict[str, Any]:
        return self._answer()

    async def check_health(self) -> None:
        """Ray Serve's health check: once started, the engine's scheduler must be running."""
        if self._synced_at and not self.engine.scheduler.running:
            raise RuntimeError("the engine's scheduler has stopped")


def _card(info) -> dict[str, Any]:
    head = info.head
    return {"name": info.name, "source": info.source, "methods": list(info.methods), "max_rank": info.max_rank,
            "nbytes": info.nbytes, "labels": head.labels() if head is not None else None,
            "metadata": info.metadata}
