"""Checkpoints of the AdapterHub ``adapters`` library (seq_bn, double_seq_bn, par_bn, lora, ia3, unions).

Files: ``adapter_config.json`` ({"config", "model_type", "hidden_size", ...}) with
``pytorch_adapter.bin`` (read with ``weights_only=True``) or ``adapter.safetensors``, and
optionally ``head_config.json`` with ``pytorch_model_head.bin`` / ``model_head.safetensors``.
Weights are mapped by the module they sit on, so AdapterHub's per-architecture placement
(e.g. its Llama ``intermediate_lora`` on ``down_proj``) is reproduced exactly.
"""
from __future__ import annotations

import re
from collections import defaultdict
from pathlib import Path
from typing import Any

import torch

from ..config import AdapterConfigError, make_config, make_union
from ..heads import HeadConfig
from ..interface import ModelInterface
from ..io import AdapterCheckpoint, AdapterLoadError, BaseInfo, read_json, read_weights_file
from . import flags_for_roles, locate, role_of

_SITES = {"attention.output": "attn", "attention_adapters": "attn", "output": "ffn", "output_adapters": "ffn"}
_BN_PARAMS = {"adapter_norm_before": "norm_before", "adapter_up": "up", "adapter_norm_after": "norm_after"}
_BN_FIELDS = ("mh_adapter", "output_adapter", "reduction_factor", "non_linearity", "original_ln_before",
              "original_ln_after", "residual_before_ln", "adapter_residual_before_ln", "ln_before", "ln_after",
              "is_parallel", "scaling", "init_weights", "dropout", "leave_out")
_UNSUPPORTED = {"use_gating": False, "phm_layer": False, "inv_adapter": None, "cross_adapter": False,
                "stochastic_depth": 0.0, "use_dora": False, "vera_d": None}


def read(directory: Path, data: dict[str, Any], interface: ModelInterface, model: BaseInfo) -> AdapterCheckpoint:
    """An AdapterHub checkpoint in Stitch's terms, for the model described by ``model``."""
    what = f"AdapterHub adapter at {directory}"
    name = data.get("name") or directory.name
    base = BaseInfo(data["model_type"], int(data["hidden_size"]), model.num_layers, str(data.get("model_name") or ""))
    base.check_fits(model, what)
    state = read_weights_file(directory, ("adapter.safetensors", "pytorch_adapter.bin"), what)
    bottleneck, linear = _split_weights(state, name, interface, what)
    configs = _translate(_legacy(data), linear, what)
    weights = {**_bottleneck_weights(bottleneck, configs), **_linear_weights(linear, configs)}
    head_config, head_weights = _read_head(directory, name, what)
    config = configs[0] if len(configs) == 1 else make_union(configs)
    return AdapterCheckpoint(name=name, config=config, weights=weights, base=base,
                             metadata={"source_format": "adapterhub", "version": data.get("version")},
                             head_config=head_config, head_weights=head_weights, source=str(directory),
                             format="adapterhub")


def _split_weights(state: dict[str, torch.Tensor], name: str, interface: ModelInterface, what: str):
    """Bottleneck weights by (layer, site) and LoRA/IA3 weights by (layer, role)."""
    bottleneck: dict[tuple[int, str], dict[str, torch.Tensor]] = defaultdict(dict)
    linear: dict[tuple[int, str], dict[str, torch.Tensor]] = defaultdict(dict)
    pattern = re.compile(rf"^(.+)\.(adapters|loras)\.{re.escape(name)}\.(.+)$")
    for key, tensor in state.items():
        match = pattern.match(key)
        if match is None:
            raise AdapterLoadError(f"{what}: unexpected weight {key!r}")
        layer, inner = locate(match.group(1), interface, what)
        if match.group(2) == "adapters":
            if inner not in _SITES:
                raise AdapterLoadError(f"{what}: no bottleneck site for {inner!r} (known: {', '.join(_SITES)})")
            bottleneck[(layer, _SITES[inner])][match.group(3)] = tensor
        else:
            linear[(layer, role_of(inner, interface, what))][match.group(3)] = tensor
    return bottleneck, linear


def _legacy(data: dict[str, Any]) -> dict[str, Any]:
    """Configs saved before AdapterHub versioned them meant the tanh GELU by "gelu"."""
    config = data["config"]
    if "version" not in data and config.get("non_linearity") == "gelu":
        return {**config, "non_linearity": "gelu_new"}
    return config


def _translate(config: dict[str, Any], linear: dict, what: str) -> list:
    """AdapterHub config dict -> Stitch method configs (a union gives several)."""
    if config.get("architecture") == "union":
        return [c for part in config["configs"] for c in _translate(part, linear, what)]
    for key, default in _UNSUPPORTED.items():
        if config.get(key, default) not in (default, None, False, 0.0):
            raise AdapterLoadError(f"{what}: {key}={config[key]!r} is not supported by Stitch")
    try:
        if config.get("architecture") == "lora":
            return [_linear_config(config, linear)]
        if "reduction_factor" in config:
            return [_bottleneck_config(config)]
    except AdapterConfigError as err:
        raise AdapterLoadError(f"{what}: {err}") from None
    raise AdapterLoadError(f"{what}: method {config.get('architecture')!r} is not supported")


def _bottleneck_config(config: dict[str, Any]):
    method = "par_bn" if config.get("is_parallel") else "seq_bn"
    return make_config(method, **{k: config[k] for k in _BN_FIELDS if k in config})


def _linear_config(config: dict[str, Any], linear: dict):
    ia3 = config.get("composition_mode") == "scale"
    roles = sorted({role for (_, role), params in linear.items() if ("lora_A" in params) != ia3})
    common = dict(alpha=config["alpha"], leave_out=tuple(config.get("leave_out") or ()), **flags_for_roles(roles))
    if ia3:
        return make_config("ia3", **common)
    return make_config("lora", r=config["r"], dropout=config.get("dropout", 0.0), **common)


def _bottleneck_weights(bottleneck: dict, configs: list) -> dict[str, torch.Tensor]:
    method = next((c.method for c in configs if hasattr(c, "is_parallel")), None)
    out = {}
    for (layer, site), params in bottleneck.items():
        down = "adapter_down.1." if any(k.startswith("adapter_down.1.") for k in params) else "adapter_down.0."
        for key, tensor in params.items():
            if key.startswith(down):
                out[f"layers.{layer}.{site}.{method}.down.{key[len(down):]}"] = tensor
            elif key.split(".")[0] in _BN_PARAMS:
                prefix, _, rest = key.partition(".")
                out[f"layers.{layer}.{site}.{method}.{_BN_PARAMS[prefix]}.{rest}"] = tensor
            elif key == "scaling":
                out[f"layers.{layer}.{site}.{method}.scaling"] = tensor
    return out


def _linear_weights(linear: dict, configs: list) -> dict[str, torch.Tensor]:
    out = {}
    for (layer, role), params in linear.items():
        if "lora_A" in params:
            out[f"layers.{layer}.{role}.lora.lora_A"] = params["lora_A"]
            out[f"layers.{layer}.{role}.lora.lora_B"] = params["lora_B"]
        else:
            out[f"layers.{layer}.{role}.ia3.vector"] = params["lora_B"].reshape(-1)
    return out


def _read_head(directory: Path, name: str, what: str):
    if not (directory / "head_config.json").exists():
        return None, None
    head = read_json(directory / "head_config.json", what)["config"]
    if head.get("head_type") not in ("classification", "tagging") or head.get("use_pooler"):
        raise AdapterLoadError(f"{what}: head type {head.get('head_type')!r} (use_pooler={head.get('use_pooler')}) "
                               "is not supported; Stitch reads classification and tagging heads")
    id2label = {int(i): label for label, i in (head.get("label2id") or {}).items()}
    config = HeadConfig(type=head["head_type"], num_labels=head["num_labels"], layers=head.get("layers", 2),
                        activation_function=head.get("activation_function") or "tanh", id2label=id2label or None)
    state = read_weights_file(directory, ("model_head.safetensors", "pytorch_model_head.bin"), what)
    prefix = f"heads.{name}."
    return config, {f"layers.{k[len(prefix):]}": v for k, v in state.items() if k.startswith(prefix)}
