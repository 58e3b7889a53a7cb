"""Readers for other libraries' adapter checkpoints (AdapterHub ``adapters``, PEFT)."""
from __future__ import annotations

import re
from typing import Any

from ..interface import ModelInterface
from ..io import AdapterLoadError


def locate(module_path: str, interface: ModelInterface, what: str) -> tuple[int, str]:
    """Map a full module path (e.g. ``model.layers.3.self_attn.q_proj``) to (layer, path inside it)."""
    match = re.search(rf"(?:^|\.){re.escape(interface.layers)}\.(\d+)\.(.+)$", module_path)
    if match is None:
        raise AdapterLoadError(f"{what}: {module_path!r} is not inside a transformer layer "
                               f"({interface.layers}.<i>.*); Stitch adapts layer projections only")
    return int(match.group(1)), match.group(2)


def role_of(inner_path: str, interface: ModelInterface, what: str) -> str:
    """The linear role at a path inside a layer, e.g. ``self_attn.q_proj`` -> ``q``."""
    for role, path in interface.linears.items():
        if path == inner_path:
            return role
    known = ", ".join(f"{p} ({r})" for r, p in interface.linears.items())
    raise AdapterLoadError(f"{what}: no adapter site for module {inner_path!r}; supported modules: {known}")


def flags_for_roles(roles: list[str]) -> dict[str, Any]:
    """AdapterHub-style LoRA / IA3 flags that select exactly ``roles`` (linear roles of one layer)."""
    attn = ("q", "k", "v") if "qkv" in roles else tuple(r for r in ("q", "k", "v") if r in roles)
    attn += ("o",) if "o" in roles else ()
    return dict(attn_matrices=attn or ("q",), selfattn_lora=bool(attn), intermediate_lora="ffn_in" in roles,
                gate_lora="ffn_gate" in roles, output_lora="ffn_out" in roles)
