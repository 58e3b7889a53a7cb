"""(IA)^3 slots of one linear: output scaling (y *= v[s]) and input scaling (y = W (v[s] * x) + b).

Both store ``alpha * vector`` per slot; empty slots hold ones (the identity).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from adapters_lib.interface import apply_weight
from adapters_lib.methods.ia3 import IA3, IA3Input
from kernels import AdapterBatch

from .base import BANKS, BankSpec, SlotBank, host


@dataclass(frozen=True)
class IA3Site:
    """One adapter's IA3 vector at one linear, alpha included. vector: [D]."""

    vector: torch.Tensor


class IA3Bank(SlotBank):
    """Output scaling. vector: [S, H_out]."""

    kind = "ia3"
    order = 2

    def __init__(self, spec: BankSpec, features: int) -> None:
        super().__init__(spec)
        self.vector = self.zeros(spec.num_slots, features) + 1

    @classmethod
    def extract(cls, module: IA3, dtype: torch.dtype) -> IA3Site:
        return IA3Site(host(module.scale(), dtype))

    @classmethod
    def for_site(cls, spec: BankSpec, site: IA3Site) -> "IA3Bank":
        return cls(spec, site.vector.shape[0])

    def write(self, slot: int, site: IA3Site) -> None:
        self.vector[slot].copy_(site.vector)
        self.slots.add(slot)

    def clear(self, slot: int) -> None:
        self.vector[slot].fill_(1)
        self.slots.discard(slot)

    def apply(self, x: torch.Tensor, y: torch.Tensor, batch: AdapterBatch, linear: nn.Module) -> None:
        """y: [T, H_out] linear output, scaled in place."""
        self.spec.backend.ia3_scale(y, self.vector, batch)


class IA3InputBank(IA3Bank):
    """Input scaling. vector: [S, H_in]; y += W ((v[s] - 1) * x), as adapters_lib's IA3Input."""

    kind = "ia3_input"
    order = 1

    def apply(self, x: torch.Tensor, y: torch.Tensor, batch: AdapterBatch, linear: nn.Module) -> None:
        """x: [T, H_in] linear input (not modified); y: [T, H_out] linear output, updated in place."""
        scaled = x.clone()                          # scaled: [T, H_in]
        self.spec.backend.ia3_scale(scaled, self.vector, batch)
        y += apply_weight(linear, scaled - x)       # zero rows for tokens of other slots


BANKS.register(IA3, IA3Bank)
BANKS.register(IA3Input, IA3InputBank)
