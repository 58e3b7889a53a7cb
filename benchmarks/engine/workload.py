"""The benchmark's model, adapters and competitors, all built from seeds (no download).

* ``Shapes``: the model geometry and the size of every scenario (``FULL`` is the issue's,
  ``QUICK`` a tiny version that checks the harness in seconds).
* ``write_adapters``: random non-zero adapters saved with adapters_lib (Stitch's format).
* ``build_engine``: the Stitch engine over its own copy of the base model.
* ``build_peft``: a PEFT ``PeftModel`` over another copy, holding the same LoRA weights.
* ``build_base``: the plain Hugging Face causal LM (the honest denominator).

Every copy of the base model comes from the same config and seed, so all three hold the
same weights; each competitor gets its own instance because PEFT rewrites its model's
linears and the engine hooks its model's.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import torch
import transformers
from safetensors.torch import load_file

import adapters_lib
from adapters_lib.interface import INTERFACES
from serve.engine import Engine, EngineConfig

logger = logging.getLogger(__name__)

LORA_CONFIG = "lora[r=16,alpha=32,attn_matrices=['q','k','v','o'],intermediate_lora=True,output_lora=True]"
METHOD_CONFIGS = {"lora": LORA_CONFIG, "seq_bn": "seq_bn", "ia3": "ia3"}
PEFT_TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
ADAPTER_STD = 0.02
MODEL_SEED = 0


@dataclass(frozen=True)
class Shapes:
    """Model geometry (Llama) and scenario sizes."""

    hidden: int
    layers: int
    ffn: int
    heads: int
    vocab: int
    prefill_requests: int       # prefill / heterogeneous: requests x tokens, one adapter per request
    prefill_tokens: int
    decode_sequences: int       # decode: sequences (one adapter each) x one new token
    decode_context: int         # tokens already in each sequence's KV cache
    hetero_mix: tuple[int, int, int]  # heterogeneous: LoRA, seq_bn, IA3 adapters (sum = prefill_requests)
    cold_loads: int             # cold-load samples
    hot_sequences: int          # hot-step scenario: running sequences over that many hot adapters
    hot_cold_loads: int         # cold loads started together while they decode
    hot_windows: int            # times the cold loads are repeated
    gen_requests: int           # generation: requests over as many adapters
    gen_new_tokens: int
    gen_prompt: tuple[int, int]  # prompt length range (inclusive)
    gen_gap_s: float            # arrival gap between consecutive requests
    warmup: int
    repeats: int
    decode_repeats: int
    gen_repeats: int
    rank: int = 16
    max_context: int = 512

    @property
    def adapter_slots(self) -> int:
        return max(self.decode_sequences, self.prefill_requests, self.gen_requests)

    def llama_config(self) -> transformers.LlamaConfig:
        return transformers.LlamaConfig(vocab_size=self.vocab, hidden_size=self.hidden, num_hidden_layers=self.layers,
                                        intermediate_size=self.ffn, num_attention_heads=self.heads,
                                        num_key_value_heads=self.heads, max_position_embeddings=self.max_context,
                                        attn_implementation="sdpa")


FULL = Shapes(hidden=768, layers=6, ffn=2048, heads=12, vocab=8000, prefill_requests=32, prefill_tokens=64,
              decode_sequences=64, decode_context=64, hetero_mix=(11, 11, 10), cold_loads=30, hot_sequences=16,
              hot_cold_loads=8, hot_windows=6, gen_requests=16, gen_new_tokens=64, gen_prompt=(16, 64),
              gen_gap_s=0.02, warmup=2, repeats=11, decode_repeats=25, gen_repeats=4)
QUICK = Shapes(hidden=64, layers=2, ffn=128, heads=4, vocab=512, prefill_requests=8, prefill_tokens=16,
               decode_sequences=16, decode_context=16, hetero_mix=(3, 3, 2), cold_loads=5, hot_sequences=4,
               hot_cold_loads=4, hot_windows=2, gen_requests=4, gen_new_tokens=8, gen_prompt=(4, 12),
               gen_gap_s=0.005, warmup=1, repeats=3, decode_repeats=3, gen_repeats=1, max_context=128)


def base_model(shapes: Shapes, lm_head: bool = True) -> torch.nn.Module:
    """A fresh seeded copy of the base model, fp32, eval."""
    torch.manual_seed(MODEL_SEED)
    auto = transformers.AutoModelForCausalLM if lm_head else transformers.AutoModel
    return auto.from_config(shapes.llama_config()).eval().requires_grad_(False)


def adapter_names(method: str, count: int) -> list[str]:
    return [f"{method}-{i:02d}" for i in range(count)]


def write_adapters(root: Path, shapes: Shapes, counts: dict[str, int]) -> dict[str, list[str]]:
    """Write ``counts[method]`` random adapters of each method under ``root``; their names by method."""
    model = adapters_lib.init(base_model(shapes, lm_head=False))
    names = {method: adapter_names(method, count) for method, count in counts.items()}
    for method, method_names in names.items():
        for seed, name in enumerate(method_names):
            randomize(model.add_adapter(name, METHOD_CONFIGS[method]), seed=1000 * len(method) + seed)
            model.save_adapter(root / name, name)
            model.delete_adapter(name)
    logger.info("wrote %s adapters under %s", {m: len(n) for m, n in names.items()}, root)
    return names


def randomize(module: torch.nn.Module, seed: int) -> None:
    """Non-zero weights near a trained adapter's scale; vectors and norm weights near 1 (identity)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in module.named_parameters():
            offset = 1.0 if name.endswith(("vector", "scaling", "weight")) and p.dim() == 1 else 0.0
            p.copy_(torch.randn(p.shape, generator=g) * ADAPTER_STD + offset)


def build_engine(shapes: Shapes, root: Path) -> Engine:
    """The engine over its own base model copy; adapters are read from ``root``."""
    config = EngineConfig(adapter_roots=(root,), max_slots=shapes.adapter_slots, max_rank=shapes.rank,
                          max_batch_size=max(64, shapes.decode_sequences), max_batch_tokens=16384,
                          max_context_tokens=shapes.max_context, max_queue=4096)
    return Engine(base_model(shapes), None, config)


def build_base(shapes: Shapes) -> torch.nn.Module:
    """The plain Hugging Face causal LM: no hooks, no adapters."""
    return base_model(shapes)


def build_peft(shapes: Shapes, root: Path, names: list[str]):
    """A PeftModel holding one LoRA adapter per name, with the weights of ``root / name`` (Stitch's files)."""
    from peft import LoraConfig, get_peft_model

    config = LoraConfig(r=shapes.rank, lora_alpha=2 * shapes.rank, target_modules=list(PEFT_TARGETS),
                        lora_dropout=0.0, bias="none")
    model = get_peft_model(base_model(shapes), config, adapter_name=names[0])
    for name in names[1:]:
        model.add_adapter(name, config)
    layers = model.base_model.model.model.layers
    linears = INTERFACES.get("llama").linears
    with torch.no_grad():
        for name in names:
            for key, tensor in load_file(root / name / "adapter.safetensors").items():
                _, layer, role, _, matrix = key.split(".")  # layers.<i>.<role>.lora.lora_A|lora_B
                module = layers[int(layer)].get_submodule(linears[role])
                getattr(module, matrix)[name].weight.copy_(tensor)
    return model.eval()
