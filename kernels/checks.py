"""Argument checks shared by every backend, so that all of them fail the same way."""
from __future__ import annotations

import torch

from kernels.batch import AdapterBatch


def check_rows(batch: AdapterBatch, **tensors: torch.Tensor) -> None:
    """Each named tensor is 2-D with one row per token of the batch, on the batch's device."""
    for name, tensor in tensors.items():
        if tensor.dim() != 2 or tensor.shape[0] != batch.num_tokens:
            raise ValueError(f"{name} must be [T={batch.num_tokens}, ...], got {tuple(tensor.shape)}")
        if tensor.device != batch.device:
            raise ValueError(f"{name} is on {tensor.device} but the AdapterBatch is on {batch.device}; "
                             "use AdapterBatch.to(device)")


def check_weights(batch: AdapterBatch, dims: int, **weights: torch.Tensor) -> int:
    """Each named weight is stacked by slot, [S, ...] with ``dims`` dims, and has room for every slot used.

    Returns S."""
    sizes = set()
    for name, weight in weights.items():
        if weight.dim() != dims:
            raise ValueError(f"{name} must have {dims} dims [S, ...], got {tuple(weight.shape)}")
        if weight.device != batch.device:
            raise ValueError(f"{name} is on {weight.device} but the AdapterBatch is on {batch.device}")
        sizes.add(weight.shape[0])
    if len(sizes) != 1:
        raise ValueError(f"stacked weights disagree on the number of slots: {sorted(sizes)}")
    num_slots = sizes.pop()
    if batch.max_slot >= num_slots:
        raise ValueError(f"slot {batch.max_slot} used but {', '.join(weights)} hold(s) only {num_slots} slots")
    return num_slots


def check_dtype(reference: torch.Tensor, **tensors: torch.Tensor) -> None:
    """Each named tensor has the dtype of the activations (backends do not cast weights per call)."""
    for name, tensor in tensors.items():
        if tensor.dtype != reference.dtype:
            raise ValueError(f"{name} is {tensor.dtype} but the activations are {reference.dtype}")


def check_dim(name: str, actual: int, expected: int) -> None:
    """A named size matches the size it must equal."""
    if actual != expected:
        raise ValueError(f"{name} is {actual}, expected {expected}")


def check_shrink(x: torch.Tensor, A: torch.Tensor, batch: AdapterBatch) -> None:
    """x: [T, H_in], A: [S, r, H_in]."""
    check_rows(batch, x=x)
    check_weights(batch, 3, A=A)
    check_dim("A.shape[2] (H_in)", A.shape[2], x.shape[1])
    check_dtype(x, A=A)


def check_expand(y: torch.Tensor, u: torch.Tensor, B: torch.Tensor, scaling: torch.Tensor,
                 batch: AdapterBatch) -> None:
    """y: [T, H_out], u: [T, r], B: [S, H_out, r], scaling: [S]."""
    check_rows(batch, y=y, u=u)
    num_slots = check_weights(batch, 3, B=B)
    check_dim("B.shape[1] (H_out)", B.shape[1], y.shape[1])
    check_dim("B.shape[2] (r)", B.shape[2], u.shape[1])
    check_weights(batch, 1, scaling=scaling)
    check_dim("scaling.numel() (S)", scaling.numel(), num_slots)
    check_dtype(y, u=u, B=B)


def check_bottleneck(h: torch.Tensor, down_w: torch.Tensor, down_b: torch.Tensor, up_w: torch.Tensor,
                     up_b: torch.Tensor, batch: AdapterBatch) -> None:
    """h: [T, H], down_w: [S, m, H], down_b: [S, m], up_w: [S, H, m], up_b: [S, H]."""
    check_rows(batch, h=h)
    check_weights(batch, 3, down_w=down_w, up_w=up_w)
    check_weights(batch, 2, down_b=down_b, up_b=up_b)
    hidden, bottleneck = h.shape[1], down_w.shape[1]
    check_dim("down_w.shape[2] (H)", down_w.shape[2], hidden)
    check_dim("down_b.shape[1] (m)", down_b.shape[1], bottleneck)
    check_dim("up_w.shape[1] (H)", up_w.shape[1], hidden)
    check_dim("up_w.shape[2] (m)", up_w.shape[2], bottleneck)
    check_dim("up_b.shape[1] (H)", up_b.shape[1], hidden)
    check_dtype(h, down_w=down_w, down_b=down_b, up_w=up_w, up_b=up_b)


def check_ia3(y: torch.Tensor, vec: torch.Tensor, batch: AdapterBatch) -> None:
    """y: [T, H], vec: [S, H]."""
    check_rows(batch, y=y)
    check_weights(batch, 2, vec=vec)
    check_dim("vec.shape[1] (H)", vec.shape[1], y.shape[1])
    check_dtype(y, vec=vec)
