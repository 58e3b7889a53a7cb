"""PEFT LoRA and IA3 checkpoints: ``adapter_config.json`` (peft_type) + ``adapter_model.safetensors``.

PEFT keys look like ``base_model.model.<module path>.lora_A.weight``; each module path is
mapped through the model's interface to (layer, role), and PEFT's target modules become
a Stitch config whose weights land under ``layers.<i>.<role>.<method>.*``.
"""
from __future__ import annotations

import logging
import math
import re
from collections import defaultdict
from pathlib import Path
from typing import Any

import torch

from ..config import make_config
from ..interface import ModelInterface
from ..io import AdapterCheckpoint, AdapterLoadError, read_weights_file
from . import flags_for_roles, locate, role_of

logger = logging.getLogger(__name__)
_KEY = re.compile(r"^(?:base_model\.model\.)?(.+)\.(lora_A|lora_B|ia3_l)(?:\.[^.]+)?(?:\.weight)?$")


def read(directory: Path, data: dict[str, Any], interface: ModelInterface, num_layers: int) -> AdapterCheckpoint:
    """A PEFT LoRA / IA3 checkpoint in Stitch's terms, for a model with ``num_layers`` layers."""
    what = f"PEFT adapter at {directory}"
    peft_type = str(data.get("peft_type", "")).upper()
    if peft_type not in ("LORA", "IA3"):
        raise AdapterLoadError(f"{what}: peft_type {peft_type!r} is not supported (LORA, IA3)")
    _reject_unsupported(data, what)
    by_site = _weights_by_site(read_weights_file(directory, ("adapter_model.safetensors", "adapter_model.bin"), what), interface, what)
    roles = sorted({role for _, role in by_site})
    layers = {layer for layer, _ in by_site}
    leave_out = tuple(i for i in range(num_layers) if i not in layers)
    if peft_type == "LORA":
        config = _lora_config(data, roles, leave_out)
        weights = {f"layers.{i}.{role}.lora.{name}": t for (i, role), p in by_site.items() for name, t in p.items()}
    else:
        config = _ia3_config(data, roles, leave_out, interface)
        weights = {f"layers.{i}.{role}.ia3.vector": p["ia3_l"].reshape(-1) for (i, role), p in by_site.items()}
    return AdapterCheckpoint(name=directory.name, config=config, weights=weights, base=None,
                             metadata={"source_format": "peft"}, source=str(directory), format="peft")


def _reject_unsupported(data: dict[str, Any], what: str) -> None:
    if data.get("bias", "none") != "none":
        raise AdapterLoadError(f"{what}: bias={data['bias']!r} is not supported (only 'none')")
    for key in ("rank_pattern", "alpha_pattern"):
        if data.get(key):
            raise AdapterLoadError(f"{what}: per-module {key} is not supported")
    if data.get("use_dora"):
        raise AdapterLoadError(f"{what}: DoRA is not supported")
    if data.get("modules_to_save"):
        logger.warning("%s: ignoring modules_to_save %s (whole modules, not adapter weights)", what,
                       data["modules_to_save"])


def _weights_by_site(state: dict[str, torch.Tensor], interface: ModelInterface, what: str):
    """(layer, role) -> {"lora_A"|"lora_B"|"ia3_l": tensor}."""
    by_site: dict[tuple[int, str], dict[str, torch.Tensor]] = defaultdict(dict)
    for key, tensor in state.items():
        match = _KEY.match(key)
        if match is None:
            continue  # modules_to_save copies and the like
        layer, inner = locate(match.group(1), interface, what)
        by_site[(layer, role_of(inner, interface, what))][match.group(2)] = tensor
    if not by_site:
        raise AdapterLoadError(f"{what}: no LoRA or IA3 weights found")
    return by_site


def _lora_config(data: dict[str, Any], roles: list[str], leave_out: tuple[int, ...]):
    r = int(data["r"])
    alpha = float(data.get("lora_alpha", r))
    if data.get("use_rslora"):
        alpha = alpha * math.sqrt(r)  # rsLoRA scales by alpha / sqrt(r)
    return make_config("lora", r=r, alpha=alpha, dropout=float(data.get("lora_dropout", 0.0)),
                       leave_out=leave_out, **flags_for_roles(roles))


def _ia3_config(data: dict[str, Any], roles: list[str], leave_out: tuple[int, ...], interface: ModelInterface):
    inputs = tuple(role for role, path in interface.linears.items()
                   if role in roles and _is_feedforward(f"{interface.layers}.0.{path}", data.get("feedforward_modules") or []))
    return make_config("ia3", scale_inputs_of=inputs, leave_out=leave_out,
                       **flags_for_roles([r for r in roles if r not in inputs]))


def _is_feedforward(module: str, names: str | list[str]) -> bool:
    """PEFT's matching: a string is a regex over the module name, a list matches name suffixes."""
    if isinstance(names, str):
        return re.fullmatch(names, module) is not None
    return any(module == name or module.endswith("." + name) for name in names)
