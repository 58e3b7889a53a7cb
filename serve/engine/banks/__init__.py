"""Serving-time slot layouts, one module per adapter method family.

A bank holds the stacked ``[S, ...]`` tensors of one method at one site of one layer and
applies them with the kernels. Each bank module registers the training module class it
serves (``adapters_lib.methods``), so the loader turns a checkpoint into per-site host
tensors by building the training modules and asking ``BANKS.for_module(module).extract``.
To serve a new method: write its bank here and register it; no other bank changes.

Linear sites apply their banks in ``order``: LoRA (additive), IA3 input scaling
(additive), IA3 output scaling (multiplicative, last). Sublayer sites hold one bottleneck.
"""
from . import bottleneck, ia3, lora  # noqa: F401  (registration on import)
from .base import BANKS, BankSpec, LayoutError, SlotBank, site_nbytes

__all__ = ["BANKS", "BankSpec", "LayoutError", "SlotBank", "site_nbytes"]
