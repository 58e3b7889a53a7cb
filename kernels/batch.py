"""AdapterBatch: the per-step metadata that maps each token to its adapter slot.

One AdapterBatch is built per engine step, from the slot of every token of the step's
flattened batch, and passed to every adapter-aware layer. Layers never rebuild it.

Coordinates used below:

* a *token* index ``t`` is a row of the step's flattened activations ``x: [T, H]``;
* a *sorted position* ``p`` is an index into ``order``: tokens stably sorted by slot,
  so the base-only tokens (slot -1) come first, then slot ``active_slots[0]``, and so on;
* a *segment* is the run of sorted positions of one active slot;
* a *tile* is ``tile_rows`` tokens of one slot, the unit of the torch backend's batched
  matmuls (see :mod:`kernels.tiling` for how tiles are planned).
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import torch

from kernels.tiling import plan_tiles


@dataclass(frozen=True, eq=False)
class AdapterBatch:
    """Which adapter slot each token of a step uses, sorted and tiled for the kernels.

    Build it with :meth:`AdapterBatch.from_slots`; every tensor lives on the device of
    the slots it was built from (move it with :meth:`to`). The python-side fields
    (``segments``, ``tile_rows``, ``tile_span``, counts, flags) let the backends plan
    without reading the device. The segments serve the Triton kernels; the tiles (planned
    by :func:`kernels.tiling.plan_tiles`, which is where the torch backend's choice between
    decode-like and prefill-like strategies lives) serve the torch backend.
    """

    slots: torch.Tensor
    """[T] int64: slot of token t; -1 means base model only."""
    order: torch.Tensor
    """[T] int64: token indices stably sorted by slot (-1 tokens first, then ascending slot)."""
    sorted_slots: torch.Tensor
    """[T] int64: ``slots[order]``."""
    active_slots: torch.Tensor
    """[K] int64: the distinct slots != -1, ascending."""
    counts: torch.Tensor
    """[K] int64: number of tokens of ``active_slots[k]``."""
    seg_starts: torch.Tensor
    """[K+1] int64: segment k is ``order[seg_starts[k]:seg_starts[k+1]]``.

    ``seg_starts[0]`` is the number of -1 tokens and ``seg_starts[K] == T``."""
    segments: tuple[tuple[int, int, int], ...]
    """(slot, start, end) of each active slot, in sorted positions: ``order[start:end]``."""
    tile_rows: int
    """C: tokens per tile (0 when no token has an adapter)."""
    tile_slots: torch.Tensor
    """[N] int64: slot of tile i."""
    tile_tokens: torch.Tensor
    """[N, C] int64: token index of row j of tile i; padding repeats the segment's last token."""
    tile_mask: torch.Tensor
    """[N, C] bool: False on padding rows."""
    tiles_padded: bool
    """Whether any tile has padding rows."""
    tile_span: tuple[int, int] | None
    """(first, end) when ``tile_tokens`` is exactly ``arange(first, end).view(N, C)``: the
    tiles are then views of the activations' rows first..end (no gather). Happens when the
    tokens with an adapter form one range of equal-length runs, e.g. requests of equal
    length, tokens laid out by slot, or one adapter for the whole step."""
    num_base_tokens: int
    """Number of tokens with slot -1."""
    max_count: int
    """Largest number of tokens of one active slot (0 when none)."""

    @classmethod
    def from_slots(cls, slots: torch.Tensor) -> "AdapterBatch":
        """Build the batch metadata from the slot of every token.

        Args:
            slots: [T] integer tensor; ``slots[t]`` is the adapter slot of token t, -1 for none.

        The sort runs on the device of ``slots``. One device-to-host copy (slots, sorted
        slots and order, stacked) is the only host sync; the plan built on the host goes
        back in one asynchronous copy. Raises ValueError on a slot below -1.
        """
        _check_slots(slots)
        slots = slots.to(torch.int64)
        sorted_slots, order = torch.sort(slots, stable=True)
        host_slots, host_sorted, host_order = torch.stack([slots, sorted_slots, order]).cpu()  # the one host sync
        if host_sorted.numel() and int(host_sorted[0]) < -1:
            raise ValueError(f"slots must be >= -1 (-1 = no adapter); got {int(host_sorted[0])}")
        active, counts, num_base = _run_lengths(host_sorted)
        seg_starts = torch.cat([num_base + torch.cumsum(counts, 0) - counts, torch.tensor([slots.numel()])])
        tiles = plan_tiles(host_slots, host_order, active, counts, seg_starts)
        plan = _to_device(slots.device, active_slots=active, counts=counts, seg_starts=seg_starts,
                          tile_slots=tiles.slots, tile_tokens=tiles.tokens, tile_mask=tiles.mask)
        return cls(
            slots=slots,
            order=order,
            sorted_slots=sorted_slots,
            active_slots=plan["active_slots"],
            counts=plan["counts"],
            seg_starts=plan["seg_starts"],
            segments=tuple(zip(active.tolist(), seg_starts[:-1].tolist(), seg_starts[1:].tolist())),
            tile_rows=tiles.rows,
            tile_slots=plan["tile_slots"],
            tile_tokens=plan["tile_tokens"],
            tile_mask=plan["tile_mask"].bool(),
            tiles_padded=not bool(tiles.mask.all()),
            tile_span=tiles.span,
            num_base_tokens=num_base,
            max_count=int(counts.max()) if counts.numel() else 0,
        )

    def to(self, device: torch.device | str) -> "AdapterBatch":
        """The same batch with every tensor on ``device``."""
        moved = {f.name: getattr(self, f.name).to(device) for f in dataclasses.fields(self)
                 if isinstance(getattr(self, f.name), torch.Tensor)}
        return dataclasses.replace(self, **moved)

    @property
    def device(self) -> torch.device:
        """The device of the batch's tensors."""
        return self.slots.device

    @property
    def num_tokens(self) -> int:
        """T: tokens in the step."""
        return self.slots.numel()

    @property
    def num_active_slots(self) -> int:
        """K: distinct slots != -1."""
        return len(self.segments)

    @property
    def no_adapter(self) -> bool:
        """True when every token is base-only (slot -1), or there are no tokens."""
        return not self.segments

    @property
    def max_slot(self) -> int:
        """The largest slot used (-1 when none): weights need at least max_slot + 1 slots."""
        return self.segments[-1][0] if self.segments else -1

    @property
    def active_tokens(self) -> torch.Tensor:
        """[T - num_base_tokens] int64: tokens with an adapter, sorted by slot (a view of order)."""
        return self.order[self.num_base_tokens:]

    @property
    def active_token_slots(self) -> torch.Tensor:
        """[T - num_base_tokens] int64: slot of each of ``active_tokens``."""
        return self.sorted_slots[self.num_base_tokens:]


def _check_slots(slots: torch.Tensor) -> None:
    if not isinstance(slots, torch.Tensor) or slots.dim() != 1:
        raise ValueError("slots must be a 1-D tensor [T]")
    if slots.dtype.is_floating_point or slots.dtype.is_complex or slots.dtype == torch.bool:
        raise ValueError(f"slots must be an integer tensor, got {slots.dtype}")


def _to_device(device: torch.device, **host: torch.Tensor) -> dict[str, torch.Tensor]:
    """Host int tensors on ``device``, in one asynchronous copy (views of one packed buffer)."""
    packed = torch.cat([t.flatten().to(torch.int64) for t in host.values()]).to(device, non_blocking=True)
    parts = packed.split([t.numel() for t in host.values()])
    return {name: part.view(t.shape) for (name, t), part in zip(host.items(), parts)}


def _run_lengths(host_sorted: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, int]:
    """Active slots, their counts, and the number of -1 tokens, from sorted host slots."""
    # host_sorted: [T] ascending
    values, counts = torch.unique_consecutive(host_sorted, return_counts=True)
    if values.numel() and int(values[0]) == -1:
        return values[1:], counts[1:], int(counts[0])
    return values, counts, 0
