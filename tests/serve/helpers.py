"""Helpers of the engine tests: adapters written with adapters_lib (the oracle), tiny engines, a tiny tokenizer."""
from __future__ import annotations

import asyncio
from pathlib import Path

import torch
import transformers
from tokenizers import Tokenizer, models, pre_tokenizers, processors

import adapters_lib
from serve.engine import Engine, EngineConfig
from tests.conftest import VOCAB, tiny_model

# Every serving layout at least once, with non-default options where a layout has them.
METHOD_CONFIGS = {
    "lora": "lora[r=4,alpha=8,attn_matrices=['q','k','v','o'],intermediate_lora=True,output_lora=True]",
    "seq_bn": "seq_bn[reduction_factor=4]",
    "double_seq_bn": "double_seq_bn[reduction_factor=4]",
    "par_bn": "par_bn",
    "scaled_par_bn": "scaled_par_bn[reduction_factor=8]",
    "ia3": "ia3[output_lora=True]",
    "ia3_input": "ia3[intermediate_lora=False,scale_inputs_of=('ffn_out',)]",
    "seq_bn_ln": "seq_bn[reduction_factor=8,ln_before=True,ln_after=True,residual_before_ln=False,"
                 "adapter_residual_before_ln=True,scaling='channel',non_linearity='gelu']",
    "seq_bn_post_add": "seq_bn[reduction_factor=2,residual_before_ln='post_add',non_linearity='tanh']",
    "union": "seq_bn[reduction_factor=4]|lora[r=2,alpha=4]|ia3",
}


def randomize(module: torch.nn.Module, seed: int) -> None:
    """Non-identity weights (LoRA B, parallel up-projections and IA3 vectors start as identities)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in module.named_parameters():
            offset = 1.0 if name.endswith(("vector", "scaling", "weight")) and p.dim() == 1 else 0.0
            p.copy_(torch.randn(p.shape, generator=g) * 0.2 + offset)


def oracle_model(model_type: str, name: str, config: str, seed: int = 0, num_labels: int | None = None):
    """adapters_lib's model with adapter ``name`` (random weights) active, and a head when num_labels is set."""
    model = adapters_lib.init(tiny_model(model_type))
    randomize(model.add_adapter(name, config), seed)
    if num_labels is not None:
        head = model.add_classification_head(name, num_labels=num_labels,
                                             id2label={i: f"{name}-{i}" for i in range(num_labels)})
        randomize(head, seed + 100)
    model.set_active_adapters(name)
    return model.eval()


def write_adapter(root: Path, model_type: str, name: str, config: str, seed: int = 0,
                  num_labels: int | None = None):
    """Save adapter ``name`` under ``root`` in Stitch's format; returns the oracle model."""
    model = oracle_model(model_type, name, config, seed, num_labels)
    model.save_adapter(root / name, name)
    return model


def oracle_embedding(model, ids: list[int]) -> torch.Tensor:
    """Mean of the last hidden states of one unpadded input: [H]."""
    with torch.no_grad():
        return model(input_ids=torch.tensor([ids]), attention_mask=torch.ones(1, len(ids), dtype=torch.long))[0][0].mean(0)


def make_engine(model_type: str, root: Path | None = None, **config) -> Engine:
    roots = (root,) if root is not None else ()
    return Engine(tiny_model(model_type), None, EngineConfig(adapter_roots=roots, **config))


def token_rows(count: int, seed: int = 0, lengths=(7, 4, 9, 5)) -> list[list[int]]:
    """``count`` inputs of varied lengths, token ids avoiding the special low ids."""
    g = torch.Generator().manual_seed(seed)
    return [torch.randint(5, VOCAB, (lengths[i % len(lengths)],), generator=g).tolist() for i in range(count)]


def run(coro):
    return asyncio.run(coro)


def tiny_tokenizer() -> transformers.PreTrainedTokenizerFast:
    """Word-level tokenizer over the tiny vocab: "w5 w17" -> [CLS] w5 w17 [SEP]."""
    vocab = {"[PAD]": 0, "[UNK]": 1, "[CLS]": 2, "[SEP]": 3, **{f"w{i}": i for i in range(4, VOCAB)}}
    tokenizer = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    tokenizer.pre_tokenizer = pre_tokenizers.Whitespace()
    tokenizer.post_processor = processors.TemplateProcessing(single="[CLS] $A [SEP]",
                                                             special_tokens=[("[CLS]", 2), ("[SEP]", 3)])
    return transformers.PreTrainedTokenizerFast(tokenizer_object=tokenizer, pad_token="[PAD]", unk_token="[UNK]",
                                                cls_token="[CLS]", sep_token="[SEP]")
