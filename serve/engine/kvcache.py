"""SequenceKVCache: the keys and values of the running sequences, one row per sequence.

Every layer holds two buffers ``[R, H_kv, C, D]`` (rows x kv heads x columns x head
size). Row r belongs to one running sequence; its tokens sit in columns ``0 .. n_r - 1``
(right padding). Rows ``0 .. B - 1`` are the running batch.

A step computes ``q`` new tokens for a contiguous range of rows (:meth:`begin`):

* prefill: the rows of joining sequences, appended after the running ones; ``q`` is the
  longest prompt and every row starts at column 0;
* decode: every running row, ``q = 1``, row r starting at its own length ``n_r``.

Each layer writes the new keys and values at those columns and attends over columns
``0 .. max(start) + q - 1``; the caller's 2-D attention mask hides each row's columns past
its own tokens, and its position ids give each row its own positions. The model's own
mask code (``create_causal_mask``) reads the sizes from this cache, so the model's attention
runs unchanged (sdpa and eager are tested).

Sliding windows: the causal mask is built for the longest row, so a model whose sliding
window is shorter than a sequence would mask shorter rows wrongly; the engine caps a
sequence's length at the window instead.

Buffers grow (doubling, up to ``max_rows`` x ``max_columns``) and are kept for the next
sequences; :meth:`reset` frees them. Sequences that leave are replaced by the last row
(:meth:`move_row`), so the running rows stay contiguous.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from transformers.cache_utils import Cache, CacheLayerMixin


@dataclass(frozen=True)
class StepRows:
    """The rows a step computes: ``index`` = rows ``first .. end - 1`` ([N] int64); ``starts[i]``:
    the column of row first + i's first new token ([N] int64); ``width``: new tokens per row;
    ``past``: ``max(starts)``. Tensors live on the cache's device."""

    first: int
    end: int
    index: torch.Tensor
    starts: torch.Tensor
    width: int
    past: int


class SequenceKVCache(Cache):
    """A transformers ``Cache`` over rows of running sequences (see the module docstring).

    Args:
        num_layers: decoder layers of the model.
        max_rows: most rows (running sequences) it will hold.
        max_columns: most tokens of one sequence.
    """

    def __init__(self, num_layers: int, max_rows: int, max_columns: int) -> None:
        super().__init__(layers=[RowsLayer(self) for _ in range(num_layers)])
        self.max_rows = max_rows
        self.max_columns = max_columns
        self.rows: StepRows | None = None

    def begin(self, first: int, starts: list[int], width: int, device: torch.device) -> None:
        """Set the rows of the next forward pass (see :class:`StepRows`)."""
        if width > 1 and any(starts):
            raise ValueError("a step of several tokens per row must start every row at column 0")
        if first + len(starts) > self.max_rows or max(starts) + width > self.max_columns:
            raise ValueError(f"rows {first}..{first + len(starts)} / {max(starts) + width} columns exceed the cache "
                             f"({self.max_rows} x {self.max_columns})")
        end = first + len(starts)
        self.rows = StepRows(first, end, torch.arange(first, end, device=device), torch.tensor(starts, device=device),
                             width, max(starts))

    def move_row(self, source: int, target: int, length: int) -> None:
        """Copy the first ``length`` columns of row ``source`` into row ``target``."""
        for layer in self.layers:
            layer.move_row(source, target, length)

    def reset(self) -> None:
        """Free the buffers."""
        for layer in self.layers:
            layer.reset()
        self.rows = None


class RowsLayer(CacheLayerMixin):
    """One layer's buffers of a :class:`SequenceKVCache`."""

    is_sliding = False
    is_compileable = False

    def __init__(self, owner: SequenceKVCache) -> None:
        super().__init__()
        self.owner = owner

    def lazy_initialization(self, key_states: torch.Tensor, value_states: torch.Tensor) -> None:
        self.keys = key_states.new_zeros(0, key_states.shape[1], 0, key_states.shape[3])
        self.values = value_states.new_zeros(0, value_states.shape[1], 0, value_states.shape[3])
        self.is_initialized = True

    def update(self, key_states: torch.Tensor, value_states: torch.Tensor, *args, **kwargs):
        """Write the step's new keys / values ``[N, H_kv, q, D]``; returns the rows' ``[N, H_kv, past + q, D]``."""
        if not self.is_initialized:
            self.lazy_initialization(key_states, value_states)
        rows = self.owner.rows
        self._reserve(rows.end, rows.past + rows.width)
        span = slice(rows.first, rows.end)
        if rows.width == 1:
            self.keys[rows.index, :, rows.starts] = key_states[:, :, 0]    # [N, H_kv, D] at (row, start)
            self.values[rows.index, :, rows.starts] = value_states[:, :, 0]
        else:
            self.keys[span, :, :rows.width] = key_states
            self.values[span, :, :rows.width] = value_states
        columns = rows.past + rows.width
        return self.keys[span, :, :columns], self.values[span, :, :columns]

    def _reserve(self, rows: int, columns: int) -> None:
        """Grow the buffers (doubling, within the owner's limits) to hold ``rows`` x ``columns``."""
        have_rows, _, have_columns, _ = self.keys.shape
        if rows <= have_rows and columns <= have_columns:
            return
        new_rows = min(max(rows, 2 * have_rows), self.owner.max_rows)
        new_columns = min(max(columns, 2 * have_columns, 16), self.owner.max_columns)
        self.keys = _grown(self.keys, new_rows, new_columns)
        self.values = _grown(self.values, new_rows, new_columns)

    def move_row(self, source: int, target: int, length: int) -> None:
        if self.is_initialized and length > 0:
            self.keys[target, :, :length] = self.keys[source, :, :length]
            self.values[target, :, :length] = self.values[source, :, :length]

    def get_mask_sizes(self, query_length: int) -> tuple[int, int]:
        return self.owner.rows.past + query_length, 0

    def get_seq_length(self) -> int:
        rows = self.owner.rows
        return 0 if rows is None else rows.past

    def get_max_length(self) -> int:
        return self.owner.max_columns

    def reset(self) -> None:
        self.keys = self.values = None
        self.is_initialized = False


def _grown(buffer: torch.Tensor, rows: int, columns: int) -> torch.Tensor:
    """buffer: [R, H, C, D] -> [rows, H, columns, D] holding the same values in its corner."""
    grown = buffer.new_zeros(rows, buffer.shape[1], columns, buffer.shape[3])
    grown[:buffer.shape[0], :, :buffer.shape[2]] = buffer
    return grown
