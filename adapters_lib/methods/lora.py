"""LoRA (Hu et al. 2021): y += scaling * B(A(dropout(x))), scaling = alpha / r.

Registered as ``lora``. Targets: the attention matrices named in ``attn_matrices``
(with ``selfattn_lora``), the feed-forward input projection(s) (``intermediate_lora``:
up and, on gated MLPs, gate) and the feed-forward output projection (``output_lora``).
"""
from __future__ import annotations

import math
from typing import Literal

import torch
from pydantic import Field
from torch import nn

from ..config import METHODS, MethodConfig, MethodSpec
from .base import LayerContext, linear_targets


class LoRAConfig(MethodConfig):
    """r: rank; alpha: scaling numerator; attn_matrices: any of q, k, v, o."""

    method = "lora"
    r: int = Field(8, ge=1)
    alpha: float = 8
    dropout: float = Field(0.0, ge=0.0, lt=1.0)
    attn_matrices: tuple[Literal["q", "k", "v", "o"], ...] = ("q", "v")
    selfattn_lora: bool = True
    intermediate_lora: bool = False
    output_lora: bool = False
    gate_lora: bool | None = None  # gated MLPs: None follows intermediate_lora
    init_weights: Literal["lora", "bert"] = "lora"

    @property
    def scaling(self) -> float:
        return self.alpha / self.r



class LoRA(nn.Module):
    """Low-rank update of one linear. lora_A: [r, in], lora_B: [out, r]."""

    def __init__(self, in_features: int, out_features: int, config: LoRAConfig) -> None:
        super().__init__()
        self.scaling = config.scaling
        self.dropout = nn.Dropout(config.dropout)
        self.lora_A = nn.Parameter(torch.zeros(config.r, in_features))
        self.lora_B = nn.Parameter(torch.zeros(out_features, config.r))
        if config.init_weights == "lora":
            nn.init.kaiming_uniform_(self.lora_A, a=math.sqrt(5))
        else:
            nn.init.normal_(self.lora_A, std=0.02)
            nn.init.normal_(self.lora_B, std=0.02)

    def delta_weight(self) -> torch.Tensor:
        """scaling * B @ A: [out, in]."""
        return self.scaling * (self.lora_B @ self.lora_A)

    def forward(self, x: torch.Tensor, y: torch.Tensor, base: nn.Module) -> torch.Tensor:
        """x: linear input [..., in]; y: linear output [..., out]; base: the linear (unused)."""
        return y + (self.dropout(x) @ self.lora_A.T @ self.lora_B.T) * self.scaling


def build_layer(config: LoRAConfig, ctx: LayerContext) -> dict[str, nn.Module]:
    return {role: LoRA(*ctx.linears[role], config) for role in linear_targets(config, ctx)}


METHODS.register(MethodSpec("lora", LoRAConfig, build_layer))
