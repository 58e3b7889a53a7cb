"""Bottleneck adapters (Houlsby et al. 2019; Pfeiffer et al. 2020; He et al. 2021).

Registered as ``seq_bn`` (alias ``pfeiffer``), ``double_seq_bn`` (``houlsby``),
``par_bn`` (``parallel``) and ``scaled_par_bn``; defaults follow the AdapterHub library.

A bottleneck sits at the output ``h`` of a residual sublayer (``attn`` site for
``mh_adapter``, ``ffn`` site for ``output_adapter``) whose residual stream is ``r``.
It returns ``h'`` such that the model's own ``LN(h' + r)`` (post-LN models) or
``h' + r`` (pre-LN models) equals AdapterHub's result.
"""
from __future__ import annotations

import math
from typing import Literal

import torch
from pydantic import field_validator
from torch import nn

from ..config import METHODS, AdapterConfigError, MethodConfig, MethodSpec
from .base import LayerContext, activation


class BottleneckConfig(MethodConfig):
    """Fields as in AdapterHub's BnConfig.

    reduction_factor: hidden_size // reduction_factor is the bottleneck width; a map
        {"<layer>": factor, "default": factor} sets it per layer.
    original_ln_before: add the residual and apply the model's layer norm before the adapter.
    original_ln_after: add the residual and apply the model's layer norm after the adapter.
    residual_before_ln: adapter residual taken before the original layer norm (True),
        after it (False), or right after the residual add ("post_add").
    ln_before / ln_after: the adapter's own layer norms; adapter_residual_before_ln: add
        the adapter residual before ln_after. scaling: a float, "learned" (a scalar) or
        "channel" (a vector). init_weights: "bert", "mam_adapter" or "houlsby".
    """

    method = "seq_bn"
    mh_adapter: bool = False
    output_adapter: bool = True
    reduction_factor: float | dict[str, float] = 16.0
    non_linearity: str = "relu"
    original_ln_before: bool = True
    original_ln_after: bool = True
    residual_before_ln: bool | Literal["post_add"] = True
    adapter_residual_before_ln: bool = False
    ln_before: bool = False
    ln_after: bool = False
    is_parallel: bool = False
    scaling: float | Literal["learned", "channel"] = 1.0
    init_weights: Literal["bert", "mam_adapter", "houlsby"] = "bert"
    dropout: float = 0.0

    @field_validator("reduction_factor", "scaling", mode="before")
    @classmethod
    def _ints_as_floats(cls, value):
        return float(value) if isinstance(value, int) and not isinstance(value, bool) else value

    @field_validator("non_linearity")
    @classmethod
    def _known_activation(cls, name: str) -> str:
        try:
            activation(name)
        except KeyError:
            raise ValueError(f"unknown non_linearity {name!r}") from None
        return name

    def bottleneck_size(self, layer: int, hidden_size: int) -> int:
        factor = self.reduction_factor
        if isinstance(factor, dict):
            if str(layer) not in factor and "default" not in factor:
                raise AdapterConfigError(f"reduction_factor map has no entry for layer {layer} and no 'default'")
            factor = factor.get(str(layer), factor.get("default"))
        return max(1, int(hidden_size // factor))


class SeqBnConfig(BottleneckConfig):
    """Pfeiffer et al. (2020): one adapter after the feed-forward sublayer."""

    method = "seq_bn"


class DoubleSeqBnConfig(BottleneckConfig):
    """Houlsby et al. (2019): adapters after both the attention and the feed-forward sublayers."""

    method = "double_seq_bn"
    mh_adapter: bool = True
    original_ln_before: bool = False
    non_linearity: str = "swish"


class ParBnConfig(BottleneckConfig):
    """He et al. (2021): a parallel adapter on the feed-forward sublayer's input."""

    method = "par_bn"
    original_ln_before: bool = False
    reduction_factor: float | dict[str, float] = 2.0
    is_parallel: bool = True
    scaling: float | Literal["learned", "channel"] = 4.0
    init_weights: Literal["bert", "mam_adapter", "houlsby"] = "mam_adapter"


class ScaledParBnConfig(ParBnConfig):
    """A parallel adapter with a learned scalar scaling."""

    method = "scaled_par_bn"
    scaling: float | Literal["learned", "channel"] = "learned"


class Bottleneck(nn.Module):
    """One bottleneck at one sublayer site. Parameters: norm_before, down, up, scaling, norm_after."""

    def __init__(self, hidden_size: int, bottleneck_size: int, config: BottleneckConfig) -> None:
        super().__init__()
        self.config = config
        self.norm_before = nn.LayerNorm(hidden_size) if config.ln_before else None
        self.down = nn.Linear(hidden_size, bottleneck_size)
        self.act = activation(config.non_linearity)
        self.up = nn.Linear(bottleneck_size, hidden_size)
        self.norm_after = nn.LayerNorm(hidden_size) if config.ln_after else None
        self.dropout = nn.Dropout(config.dropout)
        if isinstance(config.scaling, float | int):
            self.scaling = float(config.scaling)
        else:
            self.scaling = nn.Parameter(torch.ones(1 if config.scaling == "learned" else hidden_size))
        self._init_weights(config.init_weights)

    def _init_weights(self, scheme: str) -> None:
        with torch.no_grad():
            for lin in (self.down, self.up):
                nn.init.zeros_(lin.bias)
            if scheme == "bert":
                self.down.weight.normal_(0.0, 0.02)
                self.up.weight.normal_(0.0, 0.02)
            elif scheme == "mam_adapter":
                nn.init.kaiming_uniform_(self.down.weight, a=math.sqrt(5))
                nn.init.zeros_(self.up.weight)
            else:
                for lin in (self.down, self.up):
                    nn.init.trunc_normal_(lin.weight, std=1e-2, a=-2e-2, b=2e-2)

    def branch(self, x: torch.Tensor) -> torch.Tensor:
        """dropout(up(act(down(ln_before(x)))) * scaling). x: [..., H] -> [..., H]."""
        if self.norm_before is not None:
            x = self.norm_before(x)
        return self.dropout(self.up(self.act(self.down(x))) * self.scaling)

    def forward(self, h: torch.Tensor, r: torch.Tensor, layer_norm: nn.Module | None) -> torch.Tensor:
        """h: sublayer output [..., H]; r: residual stream [..., H]; returns h' [..., H]."""
        cfg = self.config
        x, residual = adapter_inputs(h, r, layer_norm, cfg)
        residual_first = cfg.adapter_residual_before_ln and not cfg.is_parallel
        out = self.branch(x)
        if residual_first:
            out = out + residual
        if self.norm_after is not None:
            out = self.norm_after(out)
        if not residual_first:
            out = out + residual
        if cfg.original_ln_after:
            return out  # the model adds r (and applies its layer norm), as AdapterHub's post_forward would
        return out - r  # pre-LN model: cancel the residual add it is about to do


def adapter_inputs(h: torch.Tensor, r: torch.Tensor, layer_norm: nn.Module | None, cfg) -> tuple[torch.Tensor, torch.Tensor]:
    """(adapter input, adapter residual) at a site with sublayer output h and residual stream r.

    A parallel adapter reads r and its output is added to h. A sequential one reads h, or
    LN(h + r) with original_ln_before; its residual is taken as residual_before_ln says.
    ``cfg``: anything with is_parallel, original_ln_before and residual_before_ln.
    """
    if cfg.is_parallel:
        return r, h
    x, residual = h, h
    if cfg.original_ln_before:
        x = h + r
        if cfg.residual_before_ln == "post_add":
            residual = x
        if layer_norm is not None:
            x = layer_norm(x)
    if cfg.residual_before_ln is False:
        residual = x
    return x, residual


def build_layer(config: BottleneckConfig, ctx: LayerContext) -> dict[str, nn.Module]:
    """Bottlenecks at the ``attn`` (mh_adapter) and ``ffn`` (output_adapter) sites."""
    if ctx.post_ln and not config.original_ln_after:
        raise AdapterConfigError(
            f"{config.method}: original_ln_after=False is not supported on post-LN models "
            "(the model's own layer norm always follows the residual add)")
    size = config.bottleneck_size(ctx.index, ctx.hidden_size)
    sites = [s for s, on in (("attn", config.mh_adapter), ("ffn", config.output_adapter)) if on]
    return {site: Bottleneck(ctx.hidden_size, size, config) for site in sites}


for _cfg, _aliases in ((SeqBnConfig, ("pfeiffer",)), (DoubleSeqBnConfig, ("houlsby",)),
                       (ParBnConfig, ("parallel",)), (ScaledParBnConfig, ())):
    METHODS.register(MethodSpec(_cfg.method, _cfg, build_layer, _aliases))
