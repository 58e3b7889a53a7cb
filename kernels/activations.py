"""Activation functions of bottleneck adapters, by name.

The names follow the AdapterHub `adapters` library (``Activation_Function_Class``): it
accepts ``"leakyrelu"`` itself and hands every other name, lower-cased, to transformers'
``get_activation``. Stitch accepts the subset below, case-insensitive, and maps each name
to a canonical one; the Triton backend uses the canonical name's integer code.
"""
from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F

# accepted name (lower case) -> canonical name
_ALIASES = {
    "relu": "relu",
    "gelu": "gelu",
    "gelu_new": "gelu_tanh",
    "gelu_fast": "gelu_tanh",
    "gelu_pytorch_tanh": "gelu_tanh",
    "quick_gelu": "quick_gelu",
    "swish": "silu",
    "silu": "silu",
    "tanh": "tanh",
    "sigmoid": "sigmoid",
    "leakyrelu": "leakyrelu",
    "leaky_relu": "leakyrelu",
    "linear": "linear",
    "identity": "linear",
}

ACTIVATION_NAMES = tuple(sorted(_ALIASES))
"""Every accepted activation name (matched case-insensitively)."""

LEAKY_RELU_SLOPE = 0.01
"""Negative slope of "leakyrelu", as in ``torch.nn.functional.leaky_relu``'s default."""

QUICK_GELU_ALPHA = 1.702
"""x * sigmoid(1.702 x), as in transformers' QuickGELUActivation."""

# canonical name -> integer code used as a Triton constexpr
ACTIVATION_CODES = {
    "linear": 0,
    "relu": 1,
    "gelu": 2,
    "gelu_tanh": 3,
    "quick_gelu": 4,
    "silu": 5,
    "tanh": 6,
    "sigmoid": 7,
    "leakyrelu": 8,
}


def _quick_gelu(x: torch.Tensor) -> torch.Tensor:
    return x * torch.sigmoid(QUICK_GELU_ALPHA * x)


_FUNCTIONS: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
    "linear": lambda x: x,
    "relu": torch.relu,
    "gelu": F.gelu,
    "gelu_tanh": lambda x: F.gelu(x, approximate="tanh"),
    "quick_gelu": _quick_gelu,
    "silu": F.silu,
    "tanh": torch.tanh,
    "sigmoid": torch.sigmoid,
    "leakyrelu": lambda x: F.leaky_relu(x, LEAKY_RELU_SLOPE),
}


def canonical_activation(name: str) -> str:
    """The canonical name of an activation ("Swish" -> "silu"); ValueError lists valid names."""
    canonical = _ALIASES.get(str(name).lower())
    if canonical is None:
        raise ValueError(f"unknown activation {name!r}; valid names (case-insensitive): {', '.join(ACTIVATION_NAMES)}")
    return canonical


def activation_function(name: str) -> Callable[[torch.Tensor], torch.Tensor]:
    """The elementwise torch function of an activation name (any accepted alias)."""
    return _FUNCTIONS[canonical_activation(name)]


def activation_code(name: str) -> int:
    """The integer code of an activation name, for the Triton kernels."""
    return ACTIVATION_CODES[canonical_activation(name)]
