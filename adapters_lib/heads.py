"""Prediction heads that travel with an adapter: classification, tagging, causal LM.

A head reads the base model's last hidden states ``[B, T, H]``. Classification heads
pool one vector per sequence (``cls``: first token, for encoders; ``last``: last
non-padding token, for causal models; ``mean``: masked mean) and follow AdapterHub's
layout (``Sequential(Dropout, Linear, Tanh, Dropout, Linear)``) so its checkpoints load.
"""
from __future__ import annotations

from typing import Literal

import torch
from pydantic import BaseModel, ConfigDict
from torch import nn

from .methods.base import activation


class HeadConfig(BaseModel):
    """type: classification | tagging | causal_lm. id2label: label names by class index."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    type: Literal["classification", "tagging", "causal_lm"]
    num_labels: int = 2
    layers: int = 2
    activation_function: str = "tanh"
    pooling: Literal["cls", "last", "mean"] = "cls"
    id2label: dict[int, str] | None = None
    dropout: float = 0.1

    def labels(self) -> list[str]:
        """Label names in class-index order (LABEL_i where none were given)."""
        names = self.id2label or {}
        return [names.get(i, f"LABEL_{i}") for i in range(self.num_labels)]


def pool(hidden: torch.Tensor, attention_mask: torch.Tensor | None, how: str) -> torch.Tensor:
    """hidden: [B, T, H], attention_mask: [B, T] -> [B, H]."""
    if how == "cls":
        return hidden[:, 0]
    if attention_mask is None:
        attention_mask = torch.ones(hidden.shape[:2], dtype=torch.long, device=hidden.device)
    mask = attention_mask.to(hidden.dtype)
    if how == "mean":
        return (hidden * mask.unsqueeze(-1)).sum(1) / mask.sum(1, keepdim=True).clamp(min=1)
    rows = torch.arange(hidden.shape[0], device=hidden.device)
    return hidden[rows, _last_index(mask)]


def _last_index(mask: torch.Tensor) -> torch.Tensor:
    """Index of the last non-padding position of each row. mask: [B, T] -> [B]."""
    positions = torch.arange(mask.shape[1], device=mask.device).expand_as(mask)
    return torch.where(mask > 0, positions, torch.zeros_like(positions)).max(1).values


class PredictionHead(nn.Module):
    """A head over last hidden states; ``forward(hidden, attention_mask) -> logits``."""

    def __init__(self, config: HeadConfig, hidden_size: int, vocab_size: int | None = None) -> None:
        super().__init__()
        self.config = config
        out = vocab_size if config.type == "causal_lm" else config.num_labels
        self.layers = self._mlp(config, hidden_size, out)

    @staticmethod
    def _mlp(config: HeadConfig, hidden: int, out: int) -> nn.Sequential:
        if config.type == "causal_lm":
            return nn.Sequential(nn.Linear(hidden, out, bias=False))
        mods: list[nn.Module] = []
        for _ in range(config.layers - 1):
            mods += [nn.Dropout(config.dropout), nn.Linear(hidden, hidden), activation(config.activation_function)]
        return nn.Sequential(*mods, nn.Dropout(config.dropout), nn.Linear(hidden, out))

    def forward(self, hidden: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        """hidden: [B, T, H] -> logits [B, C] (classification) or [B, T, C] (tagging, causal_lm)."""
        if self.config.type == "classification":
            hidden = pool(hidden, attention_mask, self.config.pooling)
        return self.layers(hidden)

    def loss(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        if self.config.type == "causal_lm":
            logits, labels = logits[:, :-1], labels[:, 1:]
        return nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), labels.reshape(-1), ignore_index=-100)

