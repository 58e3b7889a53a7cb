"""Tile plans: how an AdapterBatch groups its tokens into equal-size tiles of one slot.

A tile is ``C`` tokens of one slot; the torch backend runs one batched matmul over all
tiles. ``plan_tiles`` builds two candidate plans on the host and keeps the cheaper, with
costs counted in token rows of work:

* *sorted*: chunks of the sorted segments, ``C <= MAX_TILE_ROWS`` rows each, the last
  tile of a segment padded. Rows must be gathered and results scattered back.
  cost = (1 + GATHER_ROW_COST) * padded rows + TILE_COST_ROWS * tiles.
* *runs*: when the tokens with an adapter form one contiguous range of runs (stretches
  of one slot in token order) whose lengths share a divisor ``C`` — requests of equal
  length, tokens laid out by slot, one adapter for the whole step — the tiles are the
  consecutive ``C``-row blocks of that range: views of the activations, no gather.
  cost = rows + TILE_COST_ROWS * tiles.

Decode-like batches (many slots, about one token each) end up with C = 1 (gather +
bmm); prefill-like batches with about one tile per request or per slot.
"""
from __future__ import annotations

import math
from typing import NamedTuple

import torch

MAX_TILE_ROWS = 256
"""Largest tile of the sorted plan: bounds the gathered temporaries."""

TILE_COST_ROWS = 32
"""Cost of one tile, in rows: one weight gather (``r * (H_in + H_out)`` values, about r
rows of activations) plus the per-matrix overhead of the batched matmul. Measured on CPU
(2-core EPYC, rank 16, H 768): 32 beat 16, 64 and 128 on mixed-length prefill and decode."""

GATHER_ROW_COST = 1
"""Extra cost of a gathered row (gather in, scatter out) over a row read in place."""


class TilePlan(NamedTuple):
    """Tiles of one step, on the host."""

    rows: int
    """C: tokens per tile (0 when no token has an adapter)."""
    tokens: torch.Tensor
    """[N, C] int64: token of row j of tile i; padding repeats the segment's last token."""
    mask: torch.Tensor
    """[N, C] bool: False on padding rows."""
    slots: torch.Tensor
    """[N] int64: slot of tile i."""
    span: tuple[int, int] | None
    """(first, end) when ``tokens`` is exactly ``arange(first, end).view(N, C)``, else None."""
    cost: int
    """Estimated work, in token rows."""


def plan_tiles(host_slots: torch.Tensor, host_order: torch.Tensor, active: torch.Tensor, counts: torch.Tensor,
               seg_starts: torch.Tensor) -> TilePlan:
    """The cheaper of the sorted and the runs plan (runs on ties), from host tensors.

    Args:
        host_slots: [T] slot of each token.
        host_order: [T] tokens stably sorted by slot.
        active, counts: [K] active slots and their token counts.
        seg_starts: [K+1] segment offsets into host_order.
    """
    if not counts.numel():
        empty = torch.zeros(0, 0, dtype=torch.int64)
        return TilePlan(0, empty, empty.bool(), torch.zeros(0, dtype=torch.int64), None, 0)
    sorted_plan = _sorted_plan(host_order, active, counts, seg_starts)
    runs_plan = _runs_plan(host_slots)
    if runs_plan is not None and runs_plan.cost <= sorted_plan.cost:
        return runs_plan
    return sorted_plan


def _sorted_plan(host_order: torch.Tensor, active: torch.Tensor, counts: torch.Tensor,
                 seg_starts: torch.Tensor) -> TilePlan:
    """Chunks of the sorted segments, padded, to be gathered."""
    rows = min(_candidate_rows(counts), key=lambda c: _sorted_cost(counts, c))
    tiles_per_seg = (counts + rows - 1) // rows                                      # [K]
    tile_seg = torch.repeat_interleave(torch.arange(counts.numel()), tiles_per_seg)  # [N]
    first_tile = torch.cumsum(tiles_per_seg, 0) - tiles_per_seg                      # [K]
    tile_in_seg = torch.arange(tile_seg.numel()) - first_tile[tile_seg]              # [N]
    positions = seg_starts[tile_seg, None] + tile_in_seg[:, None] * rows + torch.arange(rows)  # [N, C]
    seg_end = seg_starts[tile_seg + 1, None]                                         # [N, 1]
    tokens = host_order[torch.minimum(positions, seg_end - 1)]
    return TilePlan(rows, tokens, positions < seg_end, active[tile_seg], None, _sorted_cost(counts, rows))


def _candidate_rows(counts: torch.Tensor) -> list[int]:
    """Powers of two up to the largest segment (capped at MAX_TILE_ROWS), and that size; largest first."""
    largest = min(int(counts.max()), MAX_TILE_ROWS)
    return sorted({largest} | {1 << i for i in range(largest.bit_length())}, reverse=True)


def _sorted_cost(counts: torch.Tensor, rows: int) -> int:
    tiles = int(((counts + rows - 1) // rows).sum())
    return tiles * ((1 + GATHER_ROW_COST) * rows + TILE_COST_ROWS)


def _runs_plan(host_slots: torch.Tensor) -> TilePlan | None:
    """Consecutive C-row blocks of the active range, when it is made of runs C divides; else None."""
    # host_slots: [T]
    values, lengths = torch.unique_consecutive(host_slots, return_counts=True)       # runs
    first_run = 1 if int(values[0]) == -1 else 0
    end_run = values.numel() - 1 if int(values[-1]) == -1 else values.numel()
    values, run_lengths = values[first_run:end_run], lengths[first_run:end_run]
    if bool((values == -1).any()):
        return None  # base-only tokens inside the range: no single view covers it
    rows = math.gcd(*run_lengths.tolist())
    first = int(lengths[:first_run].sum())
    end = first + int(run_lengths.sum())
    tokens = torch.arange(first, end).view(-1, rows)                                 # [N, C]
    return TilePlan(rows, tokens, torch.ones_like(tokens, dtype=torch.bool),
                    values.repeat_interleave(run_lengths // rows), (first, end),
                    (end - first) + TILE_COST_ROWS * tokens.shape[0])
