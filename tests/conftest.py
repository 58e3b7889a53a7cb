"""Shared fixtures: seeded tiny models for every supported architecture, data paths."""
from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch
import transformers

os.environ.setdefault("HF_HUB_OFFLINE", "1")
# Tiny models: a second intra-op thread costs more in synchronisation than it gains here.
torch.set_num_threads(1)
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

SHARED_DATA = Path(os.environ.get("STITCH_DATA", Path(__file__).resolve().parents[2] / "shared" / "data"))

VOCAB = 128
_COMMON = dict(vocab_size=VOCAB, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64)

# model_type -> (config class, kwargs). Dropout off so that train-mode outputs are deterministic.
TINY_CONFIGS = {
    "bert": (transformers.BertConfig, dict(_COMMON, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0, max_position_embeddings=64)),
    "roberta": (transformers.RobertaConfig, dict(_COMMON, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0, max_position_embeddings=72, pad_token_id=1)),
    "xlm-roberta": (transformers.XLMRobertaConfig, dict(_COMMON, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0, max_position_embeddings=72, pad_token_id=1)),
    "distilbert": (transformers.DistilBertConfig, dict(vocab_size=VOCAB, dim=32, n_layers=2, n_heads=4, hidden_dim=64, dropout=0.0, attention_dropout=0.0, max_position_embeddings=64)),
    "gpt2": (transformers.GPT2Config, dict(vocab_size=VOCAB, bos_token_id=1, eos_token_id=2, n_embd=32, n_layer=2, n_head=4, n_positions=64, resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0)),
    "llama": (transformers.LlamaConfig, dict(_COMMON, num_key_value_heads=2, max_position_embeddings=64)),
    "mistral": (transformers.MistralConfig, dict(_COMMON, num_key_value_heads=2, max_position_embeddings=64)),
    "qwen2": (transformers.Qwen2Config, dict(_COMMON, num_key_value_heads=2, max_position_embeddings=64)),
}
ARCHITECTURES = sorted(TINY_CONFIGS)
CAUSAL = {"gpt2", "llama", "mistral", "qwen2"}


def tiny_config(model_type: str, **overrides):
    """The tiny config of an architecture (hidden 32, 2 layers, vocab 128)."""
    cls, kwargs = TINY_CONFIGS[model_type]
    return cls(**{**kwargs, **overrides})


def tiny_model(model_type: str, seed: int = 0, head: str = "base", **overrides):
    """A seeded tiny model: head is 'base' (AutoModel), 'lm' (causal LM) or 'cls' (sequence classification)."""
    torch.manual_seed(seed)
    config = tiny_config(model_type, **overrides)
    auto = {"base": transformers.AutoModel, "lm": transformers.AutoModelForCausalLM,
            "cls": transformers.AutoModelForSequenceClassification}[head]
    return auto.from_config(config).eval()


def tiny_inputs(batch: int = 2, seq: int = 7, seed: int = 1) -> dict:
    """Random token ids (avoiding special low ids) and a full attention mask."""
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(5, VOCAB, (batch, seq), generator=g)
    return {"input_ids": ids, "attention_mask": torch.ones_like(ids)}


@pytest.fixture(params=ARCHITECTURES)
def model_type(request) -> str:
    return request.param


@pytest.fixture
def shared_data() -> Path:
    if not (SHARED_DATA / "sst2" / "train.tsv").exists():
        pytest.skip(f"shared data not found at {SHARED_DATA} (set STITCH_DATA)")
    return SHARED_DATA
