"""LoRA slots of one linear: y += scaling[s] * B[s] @ (A[s] @ x) for every token of slot s.

A is stored as [S, r, H_in], B as [S, H_out, r]; r is the largest rank written so far at
this site (smaller ranks are zero-padded), so a bank grows only as far as its adapters need.

When the bank serves a step, the layers run the whole linear through :meth:`LoRABank.linear`
(:func:`kernels.lora_linear`: the delta first, the base matmul accumulating onto it) instead
of adding the delta to a finished base output.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from adapters_lib.methods.lora import LoRA
from adapters_lib.interface import linear_weight
from kernels import AdapterBatch, lora_linear

from .base import BANKS, BankSpec, SlotBank, grow, host


@dataclass(frozen=True)
class LoRASite:
    """One adapter's LoRA at one linear. A: [r, H_in]; B: [H_out, r]; scaling: alpha / r."""

    A: torch.Tensor
    B: torch.Tensor
    scaling: float


class LoRABank(SlotBank):
    """A: [S, r, H_in], B: [S, H_out, r], scaling: [S]."""

    kind = "lora"
    order = 0
    fuses_linear = True

    def __init__(self, spec: BankSpec, in_features: int, out_features: int) -> None:
        super().__init__(spec)
        self.A = self.zeros(spec.num_slots, 0, in_features)
        self.B = self.zeros(spec.num_slots, out_features, 0)
        self.scaling = self.zeros(spec.num_slots)

    @classmethod
    def extract(cls, module: LoRA, dtype: torch.dtype) -> LoRASite:
        return LoRASite(host(module.lora_A, dtype), host(module.lora_B, dtype), float(module.scaling))

    @classmethod
    def for_site(cls, spec: BankSpec, site: LoRASite) -> "LoRABank":
        return cls(spec, site.A.shape[1], site.B.shape[0])

    @property
    def rank(self) -> int:
        return self.A.shape[1]

    def write(self, slot: int, site: LoRASite) -> None:
        r = site.A.shape[0]
        if r > self.rank:
            self.A, self.B = grow(self.A, 1, r), grow(self.B, 2, r)
        self.A[slot, :r].copy_(site.A)
        self.B[slot, :, :r].copy_(site.B)
        if r < self.rank:  # ranks below the bank's: zero padding
            self.A[slot, r:].zero_()
            self.B[slot, :, r:].zero_()
        self.scaling[slot] = site.scaling
        self.slots.add(slot)

    def clear(self, slot: int) -> None:
        self.A[slot].zero_()
        self.B[slot].zero_()
        self.scaling[slot] = 0
        self.slots.discard(slot)

    def linear(self, x: torch.Tensor, batch: AdapterBatch, module: nn.Module) -> torch.Tensor:
        """The adapted output [T, H_out] of the base linear ``module`` for x: [T, H_in]."""
        weight, bias = linear_weight(module)
        return lora_linear(x, weight, bias, self.A, self.B, self.scaling, batch, backend=self.spec.backend)


BANKS.register(LoRA, LoRABank)
