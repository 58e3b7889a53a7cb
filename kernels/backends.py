"""Backend selection: which module computes the ops for a device.

A backend is a module exposing the four ops with the signatures of :mod:`kernels.ops`
(``lora_shrink``, ``lora_expand``, ``bottleneck``, ``ia3_scale``) and a ``NAME``.
"""
from __future__ import annotations

import importlib
import logging
import os
from types import ModuleType

import torch

logger = logging.getLogger(__name__)

BACKEND_NAMES = ("reference", "torch", "triton")
"""Valid backend names."""

BACKEND_ENV_VAR = "STITCH_KERNEL_BACKEND"
"""Environment variable that forces a backend for every device (one of BACKEND_NAMES)."""


def get_backend(device: torch.device | str | None = None, name: str | None = None) -> ModuleType:
    """The backend module for tensors on ``device``.

    Args:
        device: where the tensors live; None means CUDA when available, else CPU.
        name: force a backend ("reference", "torch" or "triton"). Without it the
            ``STITCH_KERNEL_BACKEND`` environment variable forces one; without both,
            CUDA devices get "triton" when triton imports, everything else "torch".

    Raises ValueError for an unknown name, listing the valid ones, and ImportError when
    "triton" is forced but triton is not installed.
    """
    forced = name or os.environ.get(BACKEND_ENV_VAR) or None
    if forced is None:
        return _default_backend(_device_type(device))
    if forced.lower() not in BACKEND_NAMES:
        source = "name" if name else BACKEND_ENV_VAR
        raise ValueError(f"unknown kernel backend {forced!r} (from {source}); valid: {', '.join(BACKEND_NAMES)}")
    return _import_backend(forced.lower())


def _device_type(device: torch.device | str | None) -> str:
    if device is None:
        return "cuda" if torch.cuda.is_available() else "cpu"
    return torch.device(device).type


def _default_backend(device_type: str) -> ModuleType:
    if device_type != "cuda":
        return _import_backend("torch")
    try:
        return _import_backend("triton")
    except ImportError as err:
        logger.warning("triton unavailable (%s); using the torch kernel backend on CUDA", err)
        return _import_backend("torch")


def _import_backend(name: str) -> ModuleType:
    try:
        return importlib.import_module(f"kernels.{name}")
    except ImportError as err:
        if name != "triton":
            raise
        raise ImportError("the triton kernel backend needs the `triton` package "
                          "(pip install 'stitch-serve[triton]')") from err
