"""Bottleneck slots of one residual sublayer (seq_bn, double_seq_bn, par_bn, scaled_par_bn).

The weights of every slot are stacked (down/up weights and biases, a per-channel scaling,
the adapter's own layer norms); the options that shape the computation (parallel or
sequential, where the residual is taken, which layer norms apply, the activation) are a
:class:`BottleneckVariant` per slot. A step runs the kernel once per variant among its
active slots, on an AdapterBatch restricted to that variant's slots, and reproduces
``adapters_lib.methods.bottleneck.Bottleneck.forward`` for their tokens.
"""
from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
from torch import nn
from torch.nn import functional as F

from adapters_lib.methods.bottleneck import Bottleneck, adapter_inputs
from kernels import AdapterBatch
from kernels.activations import canonical_activation

from .base import BANKS, BankSpec, LayoutError, SlotBank, grow, host

if TYPE_CHECKING:
    from ..layers import StepContext


@dataclass(frozen=True)
class BottleneckVariant:
    """The options of one adapter's bottleneck, as Bottleneck.forward reads them.

    Options a parallel adapter ignores are normalised (so equal computations compare equal).
    ln_before_eps / ln_after_eps: eps of the adapter's own layer norms; None without them.
    """

    is_parallel: bool
    original_ln_before: bool
    original_ln_after: bool
    residual_before_ln: bool | str
    adapter_residual_before_ln: bool
    activation: str
    ln_before_eps: float | None
    ln_after_eps: float | None


@dataclass(frozen=True)
class BottleneckSite:
    """One adapter's bottleneck at one sublayer. down_w: [m, H]; down_b: [m]; up_w: [H, m];
    up_b: [H]; scale: [H]; ln_before / ln_after: (weight [H], bias [H]) or None."""

    variant: BottleneckVariant
    down_w: torch.Tensor
    down_b: torch.Tensor
    up_w: torch.Tensor
    up_b: torch.Tensor
    scale: torch.Tensor
    ln_before: tuple[torch.Tensor, torch.Tensor] | None
    ln_after: tuple[torch.Tensor, torch.Tensor] | None


def variant_of(module: Bottleneck) -> BottleneckVariant:
    """The variant of a training module; LayoutError for an activation the kernels lack."""
    cfg = module.config
    try:
        activation = canonical_activation(cfg.non_linearity)
    except ValueError as err:
        raise LayoutError(f"{cfg.method}: non_linearity {cfg.non_linearity!r} has no serving kernel ({err})") from None
    eps = (module.norm_before.eps if module.norm_before is not None else None,
           module.norm_after.eps if module.norm_after is not None else None)
    if cfg.is_parallel:
        return BottleneckVariant(True, False, cfg.original_ln_after, True, False, activation, *eps)
    return BottleneckVariant(False, cfg.original_ln_before, cfg.original_ln_after, cfg.residual_before_ln,
                             cfg.adapter_residual_before_ln, activation, *eps)


def _norm_params(norm: nn.LayerNorm | None, dtype: torch.dtype):
    return None if norm is None else (host(norm.weight, dtype), host(norm.bias, dtype))


class BottleneckBank(SlotBank):
    """down_w: [S, m, H], down_b: [S, m], up_w: [S, H, m], up_b: [S, H], scale: [S, H],
    ln_before_w/_b and ln_after_w/_b: [S, H]; m grows to the widest bottleneck written."""

    kind = "bottleneck"

    def __init__(self, spec: BankSpec, hidden: int) -> None:
        super().__init__(spec)
        S = spec.num_slots
        self.down_w, self.down_b = self.zeros(S, 0, hidden), self.zeros(S, 0)
        self.up_w, self.up_b = self.zeros(S, hidden, 0), self.zeros(S, hidden)
        self.scale = self.zeros(S, hidden)
        self.ln_before_w, self.ln_before_b = self.zeros(S, hidden), self.zeros(S, hidden)
        self.ln_after_w, self.ln_after_b = self.zeros(S, hidden), self.zeros(S, hidden)
        self.variants: dict[int, BottleneckVariant] = {}

    @classmethod
    def extract(cls, module: Bottleneck, dtype: torch.dtype) -> BottleneckSite:
        hidden = module.up.out_features
        scale = torch.as_tensor(module.scaling, dtype=torch.float32).reshape(-1).expand(hidden)
        return BottleneckSite(
            variant=variant_of(module),
            down_w=host(module.down.weight, dtype), down_b=host(module.down.bias, dtype),
            up_w=host(module.up.weight, dtype), up_b=host(module.up.bias, dtype), scale=host(scale, dtype),
            ln_before=_norm_params(module.norm_before, dtype), ln_after=_norm_params(module.norm_after, dtype))

    @classmethod
    def for_site(cls, spec: BankSpec, site: BottleneckSite) -> "BottleneckBank":
        return cls(spec, site.up_b.shape[0])

    @property
    def width(self) -> int:
        return self.down_w.shape[1]

    def write(self, slot: int, site: BottleneckSite) -> None:
        m = site.down_w.shape[0]
        if m > self.width:
            self.down_w, self.down_b = grow(self.down_w, 1, m), grow(self.down_b, 1, m)
            self.up_w = grow(self.up_w, 2, m)
        self.clear(slot)
        self.down_w[slot, :m].copy_(site.down_w)
        self.down_b[slot, :m].copy_(site.down_b)
        self.up_w[slot, :, :m].copy_(site.up_w)
        self.up_b[slot].copy_(site.up_b)
        self.scale[slot].copy_(site.scale)
        for (weight, bias), params in (((self.ln_before_w, self.ln_before_b), site.ln_before),
                                       ((self.ln_after_w, self.ln_after_b), site.ln_after)):
            if params is not None:
                weight[slot].copy_(params[0])
                bias[slot].copy_(params[1])
        self.variants[slot] = site.variant
        self.slots.add(slot)

    def clear(self, slot: int) -> None:
        for tensor in (self.down_w, self.down_b, self.up_w, self.up_b, self.scale,
                       self.ln_before_w, self.ln_before_b, self.ln_after_w, self.ln_after_b):
            tensor[slot].zero_()
        self.variants.pop(slot, None)
        self.slots.discard(slot)

    def apply(self, h: torch.Tensor, r: torch.Tensor, layer_norm: nn.Module | None,
              step: "StepContext") -> torch.Tensor:
        """h: [T, H] sublayer output; r: [T, H] residual stream; returns h' [T, H] (h for other tokens)."""
        out = h
        for variant, slots in self._groups(step.active).items():
            batch = step.batch_for(slots)
            adapted = self._forward(h, r, layer_norm, variant, batch)  # adapted: [T, H]
            out = torch.where(step.mask_for(slots), adapted, out)
        return out

    def _groups(self, active: frozenset[int]) -> dict[BottleneckVariant, frozenset[int]]:
        groups: dict[BottleneckVariant, set[int]] = defaultdict(set)
        for slot in self.slots & active:
            groups[self.variants[slot]].add(slot)
        return {variant: frozenset(slots) for variant, slots in groups.items()}

    def _forward(self, h: torch.Tensor, r: torch.Tensor, layer_norm: nn.Module | None,
                 v: BottleneckVariant, batch: AdapterBatch) -> torch.Tensor:
        """Bottleneck.forward for the tokens of ``batch``'s slots (other rows are garbage)."""
        index = batch.slots.clamp(min=0)                     # index: [T]
        x, residual = adapter_inputs(h, r, layer_norm, v)           # x, residual: [T, H]
        if v.ln_before_eps is not None:
            x = _slot_norm(x, self.ln_before_w, self.ln_before_b, index, v.ln_before_eps)
        out = self.spec.backend.bottleneck(x, self.down_w, self.down_b, self.up_w, self.up_b, v.activation, batch)
        out = out * self.scale.index_select(0, index)
        if v.adapter_residual_before_ln:
            out = out + residual
        if v.ln_after_eps is not None:
            out = _slot_norm(out, self.ln_after_w, self.ln_after_b, index, v.ln_after_eps)
        if not v.adapter_residual_before_ln:
            out = out + residual
        return out if v.original_ln_after else out - r


def _slot_norm(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, index: torch.Tensor,
               eps: float) -> torch.Tensor:
    """Layer norm with each token's slot's affine parameters. x: [T, H]; weight, bias: [S, H]; index: [T]."""
    normed = F.layer_norm(x, x.shape[-1:], eps=eps)
    return normed * weight.index_select(0, index) + bias.index_select(0, index)


BANKS.register(Bottleneck, BottleneckBank)
