"""Mixed-adapter batch math: reference, torch and Triton backends over one AdapterBatch per step.

Design:

* ``AdapterBatch.from_slots(slots)`` is built once per engine step from the slot of every
  token (-1 = base model only) and passed to every adapter-aware layer.
* Four ops form the contract: ``lora_shrink``, ``lora_expand``, ``bottleneck`` and
  ``ia3_scale`` (shapes and a "Semantics" loop in :mod:`kernels.ops`). ``lora_linear``
  composes a whole LoRA-adapted linear from a backend's shrink and expand.
* Three backends implement them with identical signatures: ``kernels.reference`` (the
  executable spec, a per-token loop), ``kernels.torch`` (batched matmuls; CPU fast path and
  fallback everywhere) and ``kernels.triton`` (CUDA kernels; imported only when selected,
  so this package imports without triton).
* A backend is a module. ``get_backend(device, name)`` returns one: "triton" on CUDA when
  triton imports, "torch" otherwise; ``name`` or ``$STITCH_KERNEL_BACKEND`` forces one.
  The package-level ops dispatch on the device of their first tensor argument; a hot loop
  may hold ``get_backend(device)`` and call its functions directly.
"""
from kernels.activations import ACTIVATION_NAMES
from kernels.backends import BACKEND_ENV_VAR, BACKEND_NAMES, get_backend
from kernels.batch import AdapterBatch
from kernels.ops import bottleneck, ia3_scale, lora_expand, lora_linear, lora_shrink

__all__ = [
    "ACTIVATION_NAMES",
    "AdapterBatch",
    "BACKEND_ENV_VAR",
    "BACKEND_NAMES",
    "bottleneck",
    "get_backend",
    "ia3_scale",
    "lora_expand",
    "lora_linear",
    "lora_shrink",
]
