"""The four mixed-adapter ops: the public contract, dispatched to a backend; and
:func:`lora_linear`, a whole LoRA-adapted linear composed from two of them.

Each function picks the backend for the device of its first tensor argument
(:func:`kernels.backends.get_backend`) and runs it. An engine that wants to skip the
per-call lookup takes ``backend = kernels.get_backend(device)`` once and calls the same
four functions on it; every backend module has exactly these signatures.

Shapes: T tokens in the step, S stacked slots, r the layer's largest LoRA rank (slots
with a smaller rank are zero-padded up to r), m the bottleneck size. ``slot[t]`` is
``batch.slots[t]``; -1 means the token uses the base model only.
"""
from __future__ import annotations

from types import ModuleType

import torch

from kernels.backends import get_backend
from kernels.batch import AdapterBatch


def lora_shrink(x: torch.Tensor, A: torch.Tensor, batch: AdapterBatch) -> torch.Tensor:
    """LoRA down-projection of every token with its own slot's A.

    Args:
        x: [T, H_in] activations entering the adapted linear.
        A: [S, r, H_in] stacked LoRA A matrices (rows past a slot's rank are zero).
        batch: the step's AdapterBatch (on x's device).

    Returns:
        u: [T, r], in x's dtype.

    Semantics:
        for t in range(T):
            s = slot[t]
            u[t] = A[s] @ x[t] if s != -1 else 0
    """
    return get_backend(x.device).lora_shrink(x, A, batch)


def lora_expand(y: torch.Tensor, u: torch.Tensor, B: torch.Tensor, scaling: torch.Tensor,
                batch: AdapterBatch) -> None:
    """LoRA up-projection of every token with its own slot's B, added into y in place.

    Args:
        y: [T, H_out] base layer output; updated in place.
        u: [T, r] output of :func:`lora_shrink`.
        B: [S, H_out, r] stacked LoRA B matrices (columns past a slot's rank are zero).
        scaling: [S] per-slot scale (alpha / rank, or as the adapter defines it).
        batch: the step's AdapterBatch (on y's device).

    Semantics:
        for t in range(T):
            s = slot[t]
            if s != -1:
                y[t] += scaling[s] * (B[s] @ u[t])
    """
    get_backend(y.device).lora_expand(y, u, B, scaling, batch)


def lora_linear(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, A: torch.Tensor,
                B: torch.Tensor, scaling: torch.Tensor, batch: AdapterBatch,
                backend: ModuleType | None = None) -> torch.Tensor:
    """A linear layer with every token's own LoRA: the base matmul and the adapters in one pass over y.

    The LoRA delta is computed first (shrink, then expand into a y that holds only the bias),
    and the base matmul accumulates onto it (``addmm_``, i.e. GEMM with beta = 1). Adding
    the delta to a finished base output instead costs one more read and write of y; on CPU
    that pass is about a third of what LoRA adds to a prefill (``benchmarks/results/kernels_lora.md``).

    Args:
        x: [T, H_in] activations.
        weight: [H_out, H_in] base weight (any strides: a GPT-2 Conv1D passes ``weight.t()``).
        bias: [H_out] base bias, or None.
        A, B, scaling, batch: as for :func:`lora_shrink` and :func:`lora_expand`.
        backend: the backend module computing shrink and expand (default: the one for x's device).

    Returns:
        y: [T, H_out], in x's dtype.

    Semantics:
        y = x @ weight.T + bias
        lora_expand(y, lora_shrink(x, A, batch), B, scaling, batch)
    """
    backend = backend or get_backend(x.device)
    if batch.no_adapter:
        return torch.nn.functional.linear(x, weight, bias)
    if bias is None:
        y = x.new_zeros(x.shape[0], weight.shape[0])       # y: [T, H_out]
    else:
        y = bias.repeat(x.shape[0], 1)                     # a copy even for T = 1
    backend.lora_expand(y, backend.lora_shrink(x, A, batch), B, scaling, batch)
    return y.addmm_(x, weight.t())


def bottleneck(h: torch.Tensor, down_w: torch.Tensor, down_b: torch.Tensor, up_w: torch.Tensor,
               up_b: torch.Tensor, activation: str, batch: AdapterBatch) -> torch.Tensor:
    """Bottleneck adapter (down, activation, up) of every token with its own slot's weights.

    The caller applies the residual, the scaling and any layer norm.

    Args:
        h: [T, H] hidden states entering the adapter.
        down_w: [S, m, H] down-projection weights.
        down_b: [S, m] down-projection biases.
        up_w: [S, H, m] up-projection weights.
        up_b: [S, H] up-projection biases.
        activation: one of ``kernels.ACTIVATION_NAMES`` (AdapterHub names, case-insensitive).
        batch: the step's AdapterBatch (on h's device).

    Returns:
        delta: [T, H], in h's dtype; zero rows for slot -1.

    Semantics:
        for t in range(T):
            s = slot[t]
            if s == -1:
                delta[t] = 0
            else:
                delta[t] = up_w[s] @ act(down_w[s] @ h[t] + down_b[s]) + up_b[s]
    """
    return get_backend(h.device).bottleneck(h, down_w, down_b, up_w, up_b, activation, batch)


def ia3_scale(y: torch.Tensor, vec: torch.Tensor, batch: AdapterBatch) -> None:
    """IA3: scale every token's features by its own slot's vector, in place.

    Args:
        y: [T, H] activations (keys, values or feed-forward); updated in place.
        vec: [S, H] stacked IA3 vectors.
        batch: the step's AdapterBatch (on y's device).

    Semantics:
        for t in range(T):
            s = slot[t]
            if s != -1:
                y[t] *= vec[s]
    """
    get_backend(y.device).ia3_scale(y, vec, batch)
