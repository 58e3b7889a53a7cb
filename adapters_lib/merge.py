"""Folding adapters into base weights (export) and averaging adapters' parameters."""
from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

from .config import AdapterConfigError
from .injection import AdapterInstance
from .interface import get_submodule, is_conv1d


@torch.no_grad()
def _merge_module(base: nn.Module, part: nn.Module) -> None:
    if hasattr(part, "delta_weight"):  # LoRA: W += scaling * B @ A
        delta = part.delta_weight().to(base.weight.dtype)
        base.weight += delta.T if is_conv1d(base) else delta
        return
    scale = part.scale().to(base.weight.dtype)
    if getattr(part, "input_scale", False):  # IA3 on inputs: columns of W scale by alpha * v
        base.weight *= scale[:, None] if is_conv1d(base) else scale[None, :]
        return
    base.weight *= scale[None, :] if is_conv1d(base) else scale[:, None]  # IA3: rows of W and b scale
    if base.bias is not None:
        base.bias *= scale


def merge_into_base(model: nn.Module, instance: AdapterInstance) -> None:
    """Fold every LoRA / IA3 module of ``instance`` into the model's linear weights, in order."""
    interface = model.stitch.interface
    for sites in instance.layers:
        for site, parts in sites.items():
            if site not in interface.linears:
                raise AdapterConfigError(f"adapter {instance.name!r}: {', '.join(parts)} at the {site} site "
                                         "cannot be merged into base weights (only LoRA and IA3 can)")
    layers = get_submodule(model.base_model, interface.layers)
    for index, sites in enumerate(instance.layers):
        for role, parts in sites.items():
            for part in parts.values():
                _merge_module(get_submodule(layers[index], interface.linears[role]), part)
    instance.merged = True


def average_state(sources: Sequence[AdapterInstance], weights: Sequence[float]) -> dict[str, torch.Tensor]:
    """sum_i weights[i] * params_i, over adapters that share one config."""
    if len(sources) != len(weights) or not sources:
        raise AdapterConfigError(f"average_adapter needs one weight per adapter, got {len(weights)} for {len(sources)}")
    configs = {s.config.model_dump_json() for s in sources}
    if len(configs) != 1:
        raise AdapterConfigError(f"average_adapter needs adapters of one config, got {[s.name for s in sources]}")
    states = [s.state_dict() for s in sources]
    return {key: sum(w * state[key] for w, state in zip(weights, states)) for key in states[0]}
