"""The torch backend: batched matmuls over the AdapterBatch's tiles.

The fast path on CPU and the fallback on every device. Each op gathers the rows of every
tile (``batch.tile_tokens``: ``C`` tokens of one slot per tile), gathers one weight per
tile, runs one ``bmm`` over all tiles and adds the rows back with ``index_add_``. (Cutting
the gather into cache-sized groups of tiles was measured slower on CPU.) When the tiles
are consecutive blocks of rows (``batch.tile_span``: equal-length requests,
tokens laid out by slot, one adapter) they are views of the activations and results land
in place: no gather, no scatter.

The tiles are planned once per step by ``AdapterBatch.from_slots`` (:mod:`kernels.tiling`):
decode-like batches (many slots, about one token each) get C = 1, i.e. gather + bmm;
prefill-like batches get about one tile per request or per slot, a padded per-slot group
matmul. Both beat a loop of one matmul per segment, whose per-call overhead dominates
small segments on CPU (see ``benchmarks/results/kernels_lora.md``).

Math runs in the activations' dtype (bf16 and fp16 included); no op reads the device
(no ``.item()`` or ``.tolist()``).
"""
from __future__ import annotations

import torch

from kernels.activations import activation_function
from kernels.batch import AdapterBatch
from kernels.checks import check_bottleneck, check_expand, check_ia3, check_shrink

NAME = "torch"


def lora_shrink(x: torch.Tensor, A: torch.Tensor, batch: AdapterBatch) -> torch.Tensor:
    """u[t] = A[slot[t]] @ x[t]; zero for slot -1 (see :func:`kernels.ops.lora_shrink`)."""
    # x: [T, H_in]; A: [S, r, H_in]
    check_shrink(x, A, batch)
    u = x.new_zeros(batch.num_tokens, A.shape[1])  # u: [T, r]
    if batch.no_adapter:
        return u
    weights = A.index_select(0, batch.tile_slots).transpose(1, 2)          # [N, H_in, r]
    u_view = _tile_view(u, batch)
    if u_view is not None:
        torch.bmm(_gather_tiles(x, batch), weights, out=u_view)
    else:
        _add_tiles(u, _mask_padding(torch.bmm(_gather_tiles(x, batch), weights), batch), batch)
    return u


def lora_expand(y: torch.Tensor, u: torch.Tensor, B: torch.Tensor, scaling: torch.Tensor,
                batch: AdapterBatch) -> None:
    """y[t] += scaling[slot[t]] * B[slot[t]] @ u[t], in place (see :func:`kernels.ops.lora_expand`)."""
    # y: [T, H_out]; u: [T, r]; B: [S, H_out, r]; scaling: [S]
    check_expand(y, u, B, scaling, batch)
    if batch.no_adapter:
        return
    scale = scaling.to(u.dtype).index_select(0, batch.tile_slots)[:, None, None]  # [N, 1, 1]
    u_tiles = _mask_padding(_gather_tiles(u, batch) * scale, batch)               # [N, C, r]
    weights = B.index_select(0, batch.tile_slots).transpose(1, 2)                # [N, r, H_out]
    y_view = _tile_view(y, batch)
    if y_view is not None:
        y_view.baddbmm_(u_tiles, weights)
    else:
        _add_tiles(y, torch.bmm(u_tiles, weights), batch)


def bottleneck(h: torch.Tensor, down_w: torch.Tensor, down_b: torch.Tensor, up_w: torch.Tensor,
               up_b: torch.Tensor, activation: str, batch: AdapterBatch) -> torch.Tensor:
    """delta[t] = up_w[s] @ act(down_w[s] @ h[t] + down_b[s]) + up_b[s] (see :func:`kernels.ops.bottleneck`)."""
    # h: [T, H]; down_w: [S, m, H]; down_b: [S, m]; up_w: [S, H, m]; up_b: [S, H]
    check_bottleneck(h, down_w, down_b, up_w, up_b, batch)
    act = activation_function(activation)
    delta = torch.zeros_like(h)  # delta: [T, H]
    if batch.no_adapter:
        return delta
    slots = batch.tile_slots
    down = torch.baddbmm(down_b.index_select(0, slots).unsqueeze(1), _gather_tiles(h, batch),
                         down_w.index_select(0, slots).transpose(1, 2))              # [N, C, m]
    up_bias = up_b.index_select(0, slots).unsqueeze(1)                               # [N, 1, H]
    up_weights = up_w.index_select(0, slots).transpose(1, 2)                         # [N, m, H]
    delta_view = _tile_view(delta, batch)
    if delta_view is not None:
        torch.baddbmm(up_bias, act(down), up_weights, out=delta_view)
    else:
        _add_tiles(delta, _mask_padding(torch.baddbmm(up_bias, act(down), up_weights), batch), batch)
    return delta


def ia3_scale(y: torch.Tensor, vec: torch.Tensor, batch: AdapterBatch) -> None:
    """y[t] *= vec[slot[t]], in place (see :func:`kernels.ops.ia3_scale`)."""
    # y: [T, H]; vec: [S, H]
    check_ia3(y, vec, batch)
    if batch.no_adapter:
        return
    y_view = _tile_view(y, batch)
    if y_view is not None:
        y_view.mul_(vec.index_select(0, batch.tile_slots).unsqueeze(1))                # [N, C, H] *= [N, 1, H]
        return
    rows = batch.active_tokens                                              # [T_a]
    y.index_copy_(0, rows, y.index_select(0, rows).mul_(vec.index_select(0, batch.active_token_slots)))


def _tile_view(rows: torch.Tensor, batch: AdapterBatch) -> torch.Tensor | None:
    """[N, C, D] view of rows when the tiles are consecutive rows (``batch.tile_span``), else None."""
    # rows: [T, D]
    if batch.tile_span is None:
        return None
    first, end = batch.tile_span
    return rows[first:end].unflatten(0, (-1, batch.tile_rows))


def _gather_tiles(rows: torch.Tensor, batch: AdapterBatch) -> torch.Tensor:
    """[N, C, D]: the rows of every tile (a view when the tiles are consecutive rows)."""
    # rows: [T, D]
    view = _tile_view(rows, batch)
    if view is not None:
        return view
    return rows.index_select(0, batch.tile_tokens.flatten()).view(-1, batch.tile_rows, rows.shape[1])


def _mask_padding(tiles: torch.Tensor, batch: AdapterBatch) -> torch.Tensor:
    """Zero the padding rows of tiles [N, C, D] (as is without padding)."""
    return tiles * batch.tile_mask.unsqueeze(-1) if batch.tiles_padded else tiles


def _add_tiles(out: torch.Tensor, tiles: torch.Tensor, batch: AdapterBatch) -> None:
    """out[token] += tile row, for every tile row; padding rows must already be zero."""
    # out: [T, D]; tiles: [N, C, D]
    out.index_add_(0, batch.tile_tokens.flatten(), tiles.flatten(0, 1))
