"""Per-architecture model interfaces: where the layers, projections and layer norms live.

Adapters are injected with forward hooks at the places an interface names, so model
classes stay untouched. To support another architecture, describe it with a
:class:`ModelInterface` and register it (see docs/architectures.md for a worked example).
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn

from .config import AdapterConfigError

LINEAR_ROLES = ("q", "k", "v", "qkv", "o", "ffn_gate", "ffn_in", "ffn_out")


@dataclass(frozen=True)
class SublayerSite:
    """One residual sublayer (attention or feed-forward) of a transformer layer.

    output: module whose output (a tensor, or a tuple whose first item is one) is the
        sublayer's output ``h`` before the residual add.
    residual: module that receives the residual stream ``r`` of this sublayer ...
    residual_arg: ... as this argument (name; positional calls are resolved by signature).
    layer_norm: post-LN models: the layer norm the model applies to ``h + r``; None for
        pre-LN models, which only add ``h + r``.
    """

    output: str
    residual: str
    residual_arg: str
    layer_norm: str | None = None


@dataclass(frozen=True)
class ModelInterface:
    """Where adapters attach in one architecture. Paths are dotted attribute paths.

    layers: path from the base model (``model.base_model``) to the list of layers.
    linears: role -> path inside a layer. Roles: q, k, v, o (attention), qkv (a fused
        q/k/v projection, e.g. GPT-2's c_attn), ffn_in, ffn_gate (gated MLPs), ffn_out.
    attn, ffn: the two residual sublayers, where bottleneck adapters sit.
    """

    layers: str
    linears: dict[str, str]
    attn: SublayerSite
    ffn: SublayerSite
    model_types: tuple[str, ...] = field(default=())

    @property
    def post_ln(self) -> bool:
        return self.attn.layer_norm is not None


def get_submodule(root: nn.Module, path: str) -> nn.Module:
    """``root.get_submodule`` with an empty path meaning ``root``."""
    return root.get_submodule(path) if path else root


_BERT_LIKE = ModelInterface(
    layers="encoder.layer",
    linears={"q": "attention.self.query", "k": "attention.self.key", "v": "attention.self.value",
             "o": "attention.output.dense", "ffn_in": "intermediate.dense", "ffn_out": "output.dense"},
    attn=SublayerSite("attention.output.dropout", "attention.output", "input_tensor", "attention.output.LayerNorm"),
    ffn=SublayerSite("output.dropout", "output", "input_tensor", "output.LayerNorm"),
    model_types=("bert", "roberta", "xlm-roberta"),
)

_DISTILBERT = ModelInterface(
    layers="transformer.layer",
    linears={"q": "attention.q_lin", "k": "attention.k_lin", "v": "attention.v_lin",
             "o": "attention.out_lin", "ffn_in": "ffn.lin1", "ffn_out": "ffn.lin2"},
    attn=SublayerSite("attention", "attention", "hidden_states", "sa_layer_norm"),
    ffn=SublayerSite("ffn", "ffn", "input", "output_layer_norm"),
    model_types=("distilbert",),
)

_GPT2 = ModelInterface(
    layers="h",
    linears={"qkv": "attn.c_attn", "o": "attn.c_proj", "ffn_in": "mlp.c_fc", "ffn_out": "mlp.c_proj"},
    attn=SublayerSite("attn", "ln_1", "input"),
    ffn=SublayerSite("mlp", "ln_2", "input"),
    model_types=("gpt2",),
)

_LLAMA_LIKE = ModelInterface(
    layers="layers",
    linears={"q": "self_attn.q_proj", "k": "self_attn.k_proj", "v": "self_attn.v_proj", "o": "self_attn.o_proj",
             "ffn_gate": "mlp.gate_proj", "ffn_in": "mlp.up_proj", "ffn_out": "mlp.down_proj"},
    attn=SublayerSite("self_attn", "input_layernorm", "hidden_states"),
    ffn=SublayerSite("mlp", "post_attention_layernorm", "hidden_states"),
    model_types=("llama", "mistral", "qwen2"),
)


class InterfaceRegistry:
    """model_type -> ModelInterface."""

    def __init__(self, interfaces: list[ModelInterface]) -> None:
        self._by_type = {t: i for i in interfaces for t in i.model_types}

    def register(self, model_type: str, interface: ModelInterface) -> None:
        self._by_type[model_type] = interface

    def get(self, model_type: str) -> ModelInterface:
        if model_type not in self._by_type:
            raise AdapterConfigError(
                f"no adapter interface for model type {model_type!r}; supported: {', '.join(sorted(self._by_type))}. "
                "Describe the architecture with adapters_lib.ModelInterface and adapters_lib.register_interface().")
        return self._by_type[model_type]

    def model_types(self) -> list[str]:
        return sorted(self._by_type)


INTERFACES = InterfaceRegistry([_BERT_LIKE, _DISTILBERT, _GPT2, _LLAMA_LIKE])


def register_interface(model_type: str, interface: ModelInterface) -> None:
    """Make ``adapters_lib.init`` support another architecture."""
    INTERFACES.register(model_type, interface)


def linear_dims(module: nn.Module) -> tuple[int, int]:
    """(in_features, out_features) of an nn.Linear or a GPT-2 style Conv1D."""
    if isinstance(module, nn.Linear):
        return module.in_features, module.out_features
    weight = getattr(module, "weight", None)
    if weight is not None and is_conv1d(module):
        return weight.shape[0], weight.shape[1]
    raise AdapterConfigError(f"cannot attach an adapter to {type(module).__name__}: not a linear layer")


def is_conv1d(module: nn.Module) -> bool:
    """transformers' Conv1D (GPT-2) keeps its weight as [in, out]."""
    return not isinstance(module, nn.Linear) and hasattr(module, "nf")


def linear_weight(linear: nn.Module) -> tuple[torch.Tensor, torch.Tensor | None]:
    """(W as [out, in], bias) of an nn.Linear or a Conv1D (whose W is a transposed view)."""
    return (linear.weight.t() if is_conv1d(linear) else linear.weight), linear.bias


def apply_weight(linear: nn.Module, x):
    """x @ W^T for an nn.Linear, x @ W for a Conv1D; no bias. x: [..., in] -> [..., out]."""
    return nn.functional.linear(x, linear_weight(linear)[0])
