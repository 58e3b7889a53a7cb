"""(IA)^3 (Liu et al. 2022): learned vectors that rescale projection outputs, y *= alpha * v.

Registered as ``ia3``. Defaults follow AdapterHub: keys and values of attention and the
feed-forward input projection(s). Roles listed in ``scale_inputs_of`` rescale the
projection's input instead, y = W (alpha * v * x) + b, as PEFT does for feed-forward modules.
"""
from __future__ import annotations

from typing import Literal

import torch
from torch import nn

from ..config import METHODS, MethodConfig, MethodSpec
from ..interface import apply_weight
from .base import LayerContext, linear_targets


class IA3Config(MethodConfig):
    """attn_matrices: any of q, k, v, o; alpha multiplies the vectors."""

    method = "ia3"
    alpha: float = 1.0
    attn_matrices: tuple[Literal["q", "k", "v", "o"], ...] = ("k", "v")
    selfattn_lora: bool = True
    intermediate_lora: bool = True
    output_lora: bool = False
    gate_lora: bool | None = None  # gated MLPs: None follows intermediate_lora
    init_weights: Literal["ia3", "bert"] = "ia3"
    scale_inputs_of: tuple[Literal["q", "k", "v", "qkv", "o", "ffn_gate", "ffn_in", "ffn_out"], ...] = ()


class IA3(nn.Module):
    """Rescales one linear's output. vector: [out]."""

    def __init__(self, out_features: int, config: IA3Config) -> None:
        super().__init__()
        self.alpha = config.alpha
        init = torch.ones(out_features) if config.init_weights == "ia3" else torch.randn(out_features) * 0.02
        self.vector = nn.Parameter(init)

    def scale(self) -> torch.Tensor:
        """alpha * vector: [out]."""
        return self.vector * self.alpha

    def forward(self, x: torch.Tensor, y: torch.Tensor, base: nn.Module) -> torch.Tensor:
        """y: linear output [..., out]."""
        return y * self.scale()


class IA3Input(IA3):
    """Rescales one linear's input. vector: [in]. y' = y + W ((alpha * v - 1) * x)."""

    input_scale = True

    def forward(self, x: torch.Tensor, y: torch.Tensor, base: nn.Module) -> torch.Tensor:
        """x: linear input [..., in]; y: linear output [..., out]; base: the linear."""
        return y + apply_weight(base, x * (self.scale() - 1))


def build_layer(config: IA3Config, ctx: LayerContext) -> dict[str, nn.Module]:
    roles = linear_targets(config, ctx) + [r for r in config.scale_inputs_of if r in ctx.linears]
    return {role: IA3Input(ctx.linears[role][0], config) if role in config.scale_inputs_of
            else IA3(ctx.linears[role][1], config) for role in dict.fromkeys(roles)}


METHODS.register(MethodSpec("ia3", IA3Config, build_layer))
