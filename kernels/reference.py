"""The reference backend: the executable spec of the four ops, one token at a time.

Every op loops over the tokens in python and computes each row in float32, rounding once
into the activations' dtype. It is slow on purpose: readable, and what the tests hold the
torch and Triton backends to. The contracts (shapes, semantics) are documented on the
public functions in :mod:`kernels.ops`.
"""
from __future__ import annotations

import torch

from kernels.activations import activation_function
from kernels.batch import AdapterBatch
from kernels.checks import check_bottleneck, check_expand, check_ia3, check_shrink

NAME = "reference"


def lora_shrink(x: torch.Tensor, A: torch.Tensor, batch: AdapterBatch) -> torch.Tensor:
    """u[t] = A[slot[t]] @ x[t]; zero for slot -1 (see :func:`kernels.ops.lora_shrink`)."""
    # x: [T, H_in]; A: [S, r, H_in]
    check_shrink(x, A, batch)
    u = x.new_zeros(batch.num_tokens, A.shape[1])  # u: [T, r]
    for t, slot in enumerate(batch.slots.tolist()):
        if slot != -1:
            u[t] = A[slot].float() @ x[t].float()
    return u


def lora_expand(y: torch.Tensor, u: torch.Tensor, B: torch.Tensor, scaling: torch.Tensor,
                batch: AdapterBatch) -> None:
    """y[t] += scaling[slot[t]] * B[slot[t]] @ u[t], in place (see :func:`kernels.ops.lora_expand`)."""
    # y: [T, H_out]; u: [T, r]; B: [S, H_out, r]; scaling: [S]
    check_expand(y, u, B, scaling, batch)
    for t, slot in enumerate(batch.slots.tolist()):
        if slot != -1:
            y[t] = y[t].float() + scaling[slot].float() * (B[slot].float() @ u[t].float())


def bottleneck(h: torch.Tensor, down_w: torch.Tensor, down_b: torch.Tensor, up_w: torch.Tensor,
               up_b: torch.Tensor, activation: str, batch: AdapterBatch) -> torch.Tensor:
    """delta[t] = up_w[s] @ act(down_w[s] @ h[t] + down_b[s]) + up_b[s] (see :func:`kernels.ops.bottleneck`)."""
    # h: [T, H]; down_w: [S, m, H]; down_b: [S, m]; up_w: [S, H, m]; up_b: [S, H]
    check_bottleneck(h, down_w, down_b, up_w, up_b, batch)
    act = activation_function(activation)
    delta = torch.zeros_like(h)  # delta: [T, H]
    for t, slot in enumerate(batch.slots.tolist()):
        if slot != -1:
            hidden = act(down_w[slot].float() @ h[t].float() + down_b[slot].float())  # hidden: [m]
            delta[t] = up_w[slot].float() @ hidden + up_b[slot].float()
    return delta


def ia3_scale(y: torch.Tensor, vec: torch.Tensor, batch: AdapterBatch) -> None:
    """y[t] *= vec[slot[t]], in place (see :func:`kernels.ops.ia3_scale`)."""
    # y: [T, H]; vec: [S, H]
    check_ia3(y, vec, batch)
    for t, slot in enumerate(batch.slots.tolist()):
        if slot != -1:
            y[t] = y[t].float() * vec[slot].float()
