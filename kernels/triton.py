"""The Triton backend: segmented-gather matmul kernels for mixed-adapter batches.

Runs on CUDA tensors; under Triton's interpreter (``TRITON_INTERPRET=1`` set before
triton is imported) it also runs on CPU tensors, which is how the tests exercise it.

Kernels
-------
``_segment_matmul_kernel`` is SGMV-style: it walks the AdapterBatch's segments (the tokens
of one slot, contiguous in ``batch.order``) and computes, for the rows of one segment,

    out[rows, n] (+)= epilogue(x[rows, :] @ W[slot, n, :]^T)

with ``W`` stacked as [S, N, K]. The four LoRA/bottleneck matmuls are launches of it:

=============  =====  ======  =====  ========================================
launch         W      N       K      epilogue
=============  =====  ======  =====  ========================================
lora shrink    A      r       H_in   none; split-K partial sums (atomic add)
lora expand    B      H_out   r      * scaling[slot], added into y
bottleneck 1   down   m       H      + down_b[slot], activation
bottleneck 2   up     H       m      + up_b[slot]
=============  =====  ======  =====  ========================================

``_ia3_kernel`` is a gather-scale: one program per (token tile, feature tile) loads each
token's slot, gathers ``vec[slot]`` and scales the row in place (slot -1 rows untouched).

Launch plan
-----------
Grid of the segment matmul: ``(K, cdiv(max_count, BLOCK_M), cdiv(N, BLOCK_N) * SPLIT_K)``
with K the number of active slots and max_count the longest segment. Program
``(k, m, j)`` handles rows ``seg_starts[k] + m * BLOCK_M ...`` of segment k (exiting at
once past the segment's end), output columns ``(j // SPLIT_K) * BLOCK_N ...`` and the
K-slice ``j % SPLIT_K`` of the reduction (``BLOCK_K`` at a time, stepping by
``BLOCK_K * SPLIT_K``). Rows are gathered through ``order``, so tokens of one slot need
not be adjacent; each program reads its slot's weight tile once per K step, so decode
batches (one token per slot) are bound by weight bandwidth, as BGMV is.

Tile sizes come from ``TILE_TABLE``, keyed by CUDA compute capability (or "interpreter"),
not from ``@triton.autotune``, which needs a driver to probe. Per call:

* ``BLOCK_M`` shrinks to 16 when every segment is that short (decode), so a
  single-token segment does not fill a 64-row tile with masked rows;
* ``BLOCK_N`` / ``BLOCK_K`` shrink to the next power of two of N / K (at least 16, the
  smallest ``tl.dot``);
* shrink splits its long reduction (H_in up to 8k) over ``SPLIT_K`` programs when H_in
  has at least ``SPLIT_K * 2`` K-blocks: decode grids are only K programs wide, and
  split-K fills the SMs. Partial sums go to a float32 buffer by atomic add and are cast
  to x's dtype after. Expand's reduction is only r long and never splits.

Precision: products accumulate in float32; fp32 inputs use ``input_precision="ieee"``
(no TF32), bf16/fp16 inputs use tensor cores. Under the interpreter every value is
converted to float32 right after ``tl.load`` (its bf16 support needs that).

The tile sizes for real GPUs below are a starting plan (tensor-core friendly, a few warps
per small-N tile), not yet tuned on hardware; ``benchmarks/kernels/bench_lora.py
--device cuda`` measures them.
"""
from __future__ import annotations

import os
from typing import NamedTuple

import torch
import triton
import triton.language as tl

from kernels.activations import LEAKY_RELU_SLOPE, QUICK_GELU_ALPHA, activation_code
from kernels.batch import AdapterBatch
from kernels.checks import check_bottleneck, check_expand, check_ia3, check_shrink

NAME = "triton"

_MIN_DOT = 16               # smallest tl.dot dimension
_MIN_K_BLOCKS_PER_SPLIT = 2  # shrink splits K only when each split gets this many blocks


class Tiles(NamedTuple):
    """Launch parameters of one kernel on one device kind."""

    block_m: int
    block_n: int
    block_k: int = 0
    split_k: int = 1
    num_warps: int = 4
    num_stages: int = 2


# device key -> kernel -> tiles. Keys: (major, minor) compute capability, "interpreter", "default".
TILE_TABLE: dict[object, dict[str, Tiles]] = {
    "interpreter": {
        "shrink": Tiles(16, 16, 32, split_k=2, num_warps=1, num_stages=1),
        "expand": Tiles(16, 64, 16, num_warps=1, num_stages=1),
        "down": Tiles(16, 32, 64, num_warps=1, num_stages=1),
        "up": Tiles(16, 64, 32, num_warps=1, num_stages=1),
        "ia3": Tiles(16, 64, num_warps=1, num_stages=1),
    },
    (8, 0): {  # A100
        "shrink": Tiles(64, 16, 128, split_k=8, num_warps=4, num_stages=3),
        "expand": Tiles(64, 128, 16, num_warps=4, num_stages=2),
        "down": Tiles(64, 64, 64, num_warps=4, num_stages=3),
        "up": Tiles(64, 128, 32, num_warps=4, num_stages=2),
        "ia3": Tiles(16, 256, num_warps=4),
    },
    (9, 0): {  # H100 / H200
        "shrink": Tiles(64, 16, 256, split_k=8, num_warps=4, num_stages=3),
        "expand": Tiles(64, 128, 16, num_warps=4, num_stages=3),
        "down": Tiles(64, 64, 128, num_warps=4, num_stages=3),
        "up": Tiles(64, 128, 64, num_warps=8, num_stages=3),
        "ia3": Tiles(16, 256, num_warps=4),
    },
    "default": {
        "shrink": Tiles(32, 16, 64, split_k=4, num_warps=4, num_stages=2),
        "expand": Tiles(32, 64, 16, num_warps=4, num_stages=2),
        "down": Tiles(32, 32, 64, num_warps=4, num_stages=2),
        "up": Tiles(32, 64, 32, num_warps=4, num_stages=2),
        "ia3": Tiles(16, 128, num_warps=4),
    },
}

_LEAKY_SLOPE: tl.constexpr = tl.constexpr(LEAKY_RELU_SLOPE)
_QUICK_GELU_ALPHA: tl.constexpr = tl.constexpr(QUICK_GELU_ALPHA)


# ----------------------------------------------------------------------------- kernels


@triton.jit
def _tanh(x):
    return 2.0 * tl.sigmoid(2.0 * x) - 1.0


@triton.jit
def _activate(x, ACTIVATION: tl.constexpr):
    """Apply the activation of code ACTIVATION (kernels.activations.ACTIVATION_CODES)."""
    if ACTIVATION == 1:  # relu
        x = tl.maximum(x, 0.0)
    elif ACTIVATION == 2:  # gelu (erf)
        x = 0.5 * x * (1.0 + tl.math.erf(x * 0.7071067811865476))
    elif ACTIVATION == 3:  # gelu, tanh approximation
        x = 0.5 * x * (1.0 + _tanh(0.7978845608028654 * (x + 0.044715 * x * x * x)))
    elif ACTIVATION == 4:  # quick_gelu
        x = x * tl.sigmoid(x * _QUICK_GELU_ALPHA)
    elif ACTIVATION == 5:  # silu / swish
        x = x * tl.sigmoid(x)
    elif ACTIVATION == 6:  # tanh
        x = _tanh(x)
    elif ACTIVATION == 7:  # sigmoid
        x = tl.sigmoid(x)
    elif ACTIVATION == 8:  # leaky relu
        x = tl.where(x >= 0.0, x, x * _LEAKY_SLOPE)
    return x


@triton.jit
def _segment_matmul_kernel(
    x_ptr, w_ptr, bias_ptr, scale_ptr, out_ptr,   # x: [T, K], w: [S, N, K], bias: [S, N], scale: [S], out: [T, N]
    order_ptr, seg_slots_ptr, seg_starts_ptr,     # order: [T], seg_slots: [num_segments], seg_starts: [num_segments + 1]
    N, K,
    stride_xt, stride_xk, stride_ws, stride_wn, stride_wk, stride_bs, stride_ot, stride_on,
    ACTIVATION: tl.constexpr, HAS_BIAS: tl.constexpr, HAS_SCALE: tl.constexpr, ACCUMULATE: tl.constexpr,
    SPLIT_K: tl.constexpr, UPCAST: tl.constexpr, DOT_PRECISION: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
):
    """out[rows] (+)= epilogue(x[rows] @ w[slot]^T) for one (segment, row tile, column tile, K-split)."""
    segment = tl.program_id(0)
    end = tl.load(seg_starts_ptr + segment + 1)
    first = tl.load(seg_starts_ptr + segment) + tl.program_id(1) * BLOCK_M
    if first >= end:
        return
    slot = tl.load(seg_slots_ptr + segment)
    tile_n = tl.program_id(2) // SPLIT_K
    split = tl.program_id(2) % SPLIT_K

    offs_m = first + tl.arange(0, BLOCK_M)
    mask_m = offs_m < end
    rows = tl.load(order_ptr + offs_m, mask=mask_m, other=0)          # [BLOCK_M] token indices
    offs_n = tile_n * BLOCK_N + tl.arange(0, BLOCK_N)
    mask_n = offs_n < N
    w_slot = w_ptr + slot * stride_ws

    acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
    for k_start in range(split * BLOCK_K, K, BLOCK_K * SPLIT_K):
        offs_k = k_start + tl.arange(0, BLOCK_K)
        mask_k = offs_k < K
        a = tl.load(x_ptr + rows[:, None] * stride_xt + offs_k[None, :] * stride_xk,
                    mask=mask_m[:, None] & mask_k[None, :], other=0.0)    # [BLOCK_M, BLOCK_K]
        b = tl.load(w_slot + offs_n[None, :] * stride_wn + offs_k[:, None] * stride_wk,
                    mask=mask_k[:, None] & mask_n[None, :], other=0.0)    # [BLOCK_K, BLOCK_N]
        if UPCAST:
            a = a.to(tl.float32)
            b = b.to(tl.float32)
        acc += tl.dot(a, b, input_precision=DOT_PRECISION)

    if HAS_BIAS:
        acc += tl.load(bias_ptr + slot * stride_bs + offs_n, mask=mask_n, other=0.0).to(tl.float32)[None, :]
    acc = _activate(acc, ACTIVATION)
    if HAS_SCALE:
        acc *= tl.load(scale_ptr + slot).to(tl.float32)

    out_ptrs = out_ptr + rows[:, None] * stride_ot + offs_n[None, :] * stride_on
    mask = mask_m[:, None] & mask_n[None, :]
    if SPLIT_K > 1:
        tl.atomic_add(out_ptrs, acc, mask=mask)
    else:
        if ACCUMULATE:
            acc += tl.load(out_ptrs, mask=mask, other=0.0).to(tl.float32)
        tl.store(out_ptrs, acc.to(out_ptr.dtype.element_ty), mask=mask)


@triton.jit
def _ia3_kernel(
    y_ptr, vec_ptr, slots_ptr,   # y: [T, H], vec: [S, H], slots: [T]
    T, H,
    stride_yt, stride_yh, stride_vs, stride_vh,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
):
    """y[t, cols] *= vec[slot[t], cols] for one (token tile, feature tile); slot -1 rows untouched."""
    offs_m = tl.program_id(0) * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_n = tl.program_id(1) * BLOCK_N + tl.arange(0, BLOCK_N)
    slots = tl.load(slots_ptr + offs_m, mask=offs_m < T, other=-1)       # [BLOCK_M]
    mask = (slots >= 0)[:, None] & (offs_n < H)[None, :]
    y_ptrs = y_ptr + offs_m[:, None] * stride_yt + offs_n[None, :] * stride_yh
    y = tl.load(y_ptrs, mask=mask, other=0.0).to(tl.float32)
    v = tl.load(vec_ptr + slots[:, None] * stride_vs + offs_n[None, :] * stride_vh, mask=mask, other=0.0)
    tl.store(y_ptrs, (y * v.to(tl.float32)).to(y_ptr.dtype.element_ty), mask=mask)


# ----------------------------------------------------------------------------- ops


def lora_shrink(x: torch.Tensor, A: torch.Tensor, batch: AdapterBatch) -> torch.Tensor:
    """u[t] = A[slot[t]] @ x[t]; zero for slot -1 (see :func:`kernels.ops.lora_shrink`)."""
    # x: [T, H_in]; A: [S, r, H_in]
    check_shrink(x, A, batch)
    _check_device(x)
    tiles = _tiles("shrink", x.device)
    split_k = _split_k(tiles, A.shape[2])
    u = x.new_zeros(batch.num_tokens, A.shape[1], dtype=torch.float32 if split_k > 1 else x.dtype)  # u: [T, r]
    if not batch.no_adapter:
        _segment_matmul(x, A, u, batch, tiles, split_k=split_k)
    return u.to(x.dtype)


def lora_expand(y: torch.Tensor, u: torch.Tensor, B: torch.Tensor, scaling: torch.Tensor,
                batch: AdapterBatch) -> None:
    """y[t] += scaling[slot[t]] * B[slot[t]] @ u[t], in place (see :func:`kernels.ops.lora_expand`)."""
    # y: [T, H_out]; u: [T, r]; B: [S, H_out, r]; scaling: [S]
    check_expand(y, u, B, scaling, batch)
    _check_device(y)
    if not batch.no_adapter:
        _segment_matmul(u, B, y, batch, _tiles("expand", y.device), scale=scaling, accumulate=True)


def bottleneck(h: torch.Tensor, down_w: torch.Tensor, down_b: torch.Tensor, up_w: torch.Tensor,
               up_b: torch.Tensor, activation: str, batch: AdapterBatch) -> torch.Tensor:
    """delta[t] = up_w[s] @ act(down_w[s] @ h[t] + down_b[s]) + up_b[s] (see :func:`kernels.ops.bottleneck`).

    Two launches: down-projection with bias and activation fused into [T, m], then the
    up-projection with bias into delta."""
    # h: [T, H]; down_w: [S, m, H]; down_b: [S, m]; up_w: [S, H, m]; up_b: [S, H]
    check_bottleneck(h, down_w, down_b, up_w, up_b, batch)
    _check_device(h)
    code = activation_code(activation)
    delta = torch.zeros_like(h)  # delta: [T, H]
    if batch.no_adapter:
        return delta
    hidden = h.new_zeros(batch.num_tokens, down_w.shape[1])  # hidden: [T, m]
    _segment_matmul(h, down_w, hidden, batch, _tiles("down", h.device), bias=down_b, activation=code)
    _segment_matmul(hidden, up_w, delta, batch, _tiles("up", h.device), bias=up_b)
    return delta


def ia3_scale(y: torch.Tensor, vec: torch.Tensor, batch: AdapterBatch) -> None:
    """y[t] *= vec[slot[t]], in place (see :func:`kernels.ops.ia3_scale`)."""
    # y: [T, H]; vec: [S, H]
    check_ia3(y, vec, batch)
    _check_device(y)
    if batch.no_adapter:
        return
    tiles = _tiles("ia3", y.device)
    block_n = min(tiles.block_n, _pow2_at_least(y.shape[1], _MIN_DOT))
    grid = (triton.cdiv(batch.num_tokens, tiles.block_m), triton.cdiv(y.shape[1], block_n))
    _ia3_kernel[grid](
        y, vec, batch.slots, batch.num_tokens, y.shape[1],
        y.stride(0), y.stride(1), vec.stride(0), vec.stride(1),
        BLOCK_M=tiles.block_m, BLOCK_N=block_n, num_warps=tiles.num_warps,
    )


# ----------------------------------------------------------------------------- launch helpers


def _segment_matmul(x: torch.Tensor, w: torch.Tensor, out: torch.Tensor, batch: AdapterBatch, tiles: Tiles, *,
                    bias: torch.Tensor | None = None, scale: torch.Tensor | None = None, activation: int = 0,
                    accumulate: bool = False, split_k: int = 1) -> None:
    """Launch _segment_matmul_kernel over the batch's segments: out[rows] (+)= epilogue(x[rows] @ w[slot]^T)."""
    # x: [T, K]; w: [S, N, K]; out: [T, N]; bias: [S, N]; scale: [S]
    n, k = w.shape[1], w.shape[2]
    block_m = min(tiles.block_m, _pow2_at_least(batch.max_count, _MIN_DOT))
    block_n = min(tiles.block_n, _pow2_at_least(n, _MIN_DOT))
    block_k = min(tiles.block_k, _pow2_at_least(k, _MIN_DOT))
    grid = (batch.num_active_slots, triton.cdiv(batch.max_count, block_m), triton.cdiv(n, block_n) * split_k)
    bias = bias.contiguous() if bias is not None else None
    _segment_matmul_kernel[grid](
        x, w, w if bias is None else bias, w if scale is None else scale, out,
        batch.order, batch.active_slots, batch.seg_starts,
        n, k,
        x.stride(0), x.stride(1), w.stride(0), w.stride(1), w.stride(2),
        0 if bias is None else bias.stride(0), out.stride(0), out.stride(1),
        ACTIVATION=activation, HAS_BIAS=bias is not None, HAS_SCALE=scale is not None,
        ACCUMULATE=accumulate, SPLIT_K=split_k, UPCAST=_interpreting(),
        DOT_PRECISION="ieee" if x.dtype == torch.float32 or _interpreting() else "tf32",
        BLOCK_M=block_m, BLOCK_N=block_n, BLOCK_K=block_k,
        num_warps=tiles.num_warps, num_stages=tiles.num_stages,
    )


def _interpreting() -> bool:
    return os.environ.get("TRITON_INTERPRET", "0") == "1"


def _check_device(tensor: torch.Tensor) -> None:
    if tensor.device.type != "cuda" and not _interpreting():
        raise ValueError(f"the triton backend needs CUDA tensors (got {tensor.device}); "
                         "set TRITON_INTERPRET=1 before importing triton to run it on CPU")


def _tiles(kernel: str, device: torch.device) -> Tiles:
    """The tile sizes of a kernel on a device, from TILE_TABLE."""
    if _interpreting():
        return TILE_TABLE["interpreter"][kernel]
    capability = torch.cuda.get_device_capability(device)
    table = TILE_TABLE.get(capability) or TILE_TABLE.get((capability[0], 0)) or TILE_TABLE["default"]
    return table[kernel]


def _split_k(tiles: Tiles, k: int) -> int:
    """Shrink's split-K factor: the table's, unless K is too short to give each split enough blocks."""
    k_blocks = triton.cdiv(k, min(tiles.block_k, _pow2_at_least(k, _MIN_DOT)))
    return max(1, min(tiles.split_k, k_blocks // _MIN_K_BLOCKS_PER_SPLIT))


def _pow2_at_least(value: int, floor: int) -> int:
    return max(floor, triton.next_power_of_2(max(value, 1)))
