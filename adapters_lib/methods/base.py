"""What a method builder sees of one layer, and helpers shared by methods."""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn
from transformers.activations import get_activation


@dataclass(frozen=True)
class LayerContext:
    """One transformer layer as a method builder sees it.

    index: layer number (0-based). hidden_size: width of the residual stream.
    linears: role -> (in_features, out_features) of the layer's projections.
    post_ln: True when the model applies its own layer norm after each residual add.
    """

    index: int
    hidden_size: int
    linears: dict[str, tuple[int, int]]
    post_ln: bool

    def attention_roles(self, matrices: tuple[str, ...]) -> list[str]:
        """Attention roles for q/k/v/o names; fused q/k/v models map any of q, k, v to 'qkv'."""
        roles = []
        for m in matrices:
            role = "qkv" if m in "qkv" and "qkv" in self.linears else m
            if role in self.linears and role not in roles:
                roles.append(role)
        return roles


class LeakyReLU(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return nn.functional.leaky_relu(x)


def activation(name: str) -> nn.Module:
    """AdapterHub's non-linearity names: relu, gelu, swish, tanh, leakyrelu, ... (case-insensitive)."""
    name = name.lower()
    return LeakyReLU() if name == "leakyrelu" else get_activation(name)


def linear_targets(config, ctx: LayerContext) -> list[str]:
    """Linear roles selected by AdapterHub-style flags: selfattn_lora (with attn_matrices),
    intermediate_lora (feed-forward input projection; on gated MLPs also the gate, unless
    gate_lora says otherwise) and output_lora (the feed-forward output projection)."""
    roles = ctx.attention_roles(config.attn_matrices) if config.selfattn_lora else []
    roles += ["ffn_in"] if config.intermediate_lora and "ffn_in" in ctx.linears else []
    gate = config.intermediate_lora if config.gate_lora is None else config.gate_lora
    roles += ["ffn_gate"] if gate and "ffn_gate" in ctx.linears else []
    roles += ["ffn_out"] if config.output_lora else []
    return roles
