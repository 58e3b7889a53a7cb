"""AdapterBatch: sorting, segments, tiles and flags built once per step."""
from __future__ import annotations

import pytest
import torch

from kernels import AdapterBatch
from kernels.tiling import GATHER_ROW_COST, MAX_TILE_ROWS, TILE_COST_ROWS
from tests.kernels.kernel_cases import PATTERNS, make_slots


def test_order_is_a_stable_sort_with_base_tokens_first():
    batch = AdapterBatch.from_slots(torch.tensor([2, -1, 0, 2, -1, 0, 2]))
    assert batch.order.tolist() == [1, 4, 2, 5, 0, 3, 6]
    assert batch.sorted_slots.tolist() == [-1, -1, 0, 0, 2, 2, 2]
    assert batch.active_slots.tolist() == [0, 2]
    assert batch.counts.tolist() == [2, 3]
    assert batch.seg_starts.tolist() == [2, 4, 7]
    assert batch.segments == ((0, 2, 4), (2, 4, 7))
    assert batch.num_base_tokens == 2 and batch.num_tokens == 7 and batch.num_active_slots == 2
    assert batch.max_count == 3 and batch.max_slot == 2
    assert batch.active_tokens.tolist() == [2, 5, 0, 3, 6]
    assert batch.active_token_slots.tolist() == [0, 0, 2, 2, 2]
    assert not batch.no_adapter and batch.tile_span is None


@pytest.mark.parametrize("pattern", PATTERNS)
def test_segments_partition_the_active_tokens(pattern):
    slots = make_slots(pattern, 57, 60, seed=11)
    batch = AdapterBatch.from_slots(slots)
    assert torch.equal(batch.slots[batch.order], batch.sorted_slots)
    assert sorted(batch.order.tolist()) == list(range(57))
    seen = []
    for slot, start, end in batch.segments:
        tokens = batch.order[start:end]
        assert torch.all(slots[tokens] == slot)
        assert tokens.tolist() == sorted(tokens.tolist())  # stable: original order inside a segment
        seen += tokens.tolist()
    assert sorted(seen) == torch.nonzero(slots != -1).flatten().tolist()
    assert batch.seg_starts.tolist() == [s for _, s, _ in batch.segments] + [57]
    assert batch.counts.tolist() == [e - s for _, s, e in batch.segments]
    assert batch.no_adapter == bool(torch.all(slots == -1))


@pytest.mark.parametrize("pattern", PATTERNS)
def test_tiles_cover_every_active_token_once(pattern):
    slots = make_slots(pattern, 57, 60, seed=12)
    batch = AdapterBatch.from_slots(slots)
    tokens, mask = batch.tile_tokens, batch.tile_mask          # [N, C]
    assert tokens.shape == mask.shape == (batch.tile_slots.numel(), batch.tile_rows)
    assert sorted(tokens[mask].tolist()) == torch.nonzero(slots != -1).flatten().tolist()
    assert torch.all(slots[tokens] == batch.tile_slots[:, None])  # padding repeats a token of the same slot
    assert batch.tiles_padded == (not bool(mask.all()))
    if batch.tile_span is not None:
        first, end = batch.tile_span
        assert tokens.flatten().tolist() == list(range(first, end))
        assert torch.all(slots[:first] == -1) and torch.all(slots[end:] == -1)


def test_decode_batches_get_one_token_tiles_and_prefill_batches_one_tile_per_request():
    decode = AdapterBatch.from_slots(torch.randperm(64))
    assert decode.tile_rows == 1 and decode.tile_slots.numel() == 64 and not decode.tiles_padded
    requests = torch.randperm(32)
    prefill = AdapterBatch.from_slots(requests.repeat_interleave(64))
    assert prefill.tile_rows == 64 and prefill.tile_span == (0, 2048)
    assert prefill.tile_slots.tolist() == requests.tolist()  # tiles follow the requests, no gather
    single = AdapterBatch.from_slots(torch.full((300,), 3))
    assert single.tile_rows == 300 and single.tile_span == (0, 300)


def test_few_slots_over_many_tokens_share_sorted_tiles():
    slots = torch.tensor([5, 2, 5, 5, 2, 2, 5, 2] * 8)  # interleaved: runs of 1-2 tokens
    batch = AdapterBatch.from_slots(slots)
    assert batch.tile_span is None and batch.tile_rows == 32
    assert batch.tile_slots.tolist() == [2, 5]


def test_tiles_that_need_a_gather_are_bounded():
    slots = torch.full((300,), 3)
    slots[150] = -1  # no longer grouped by slot
    batch = AdapterBatch.from_slots(slots)
    assert batch.tile_span is None
    assert batch.tile_rows <= MAX_TILE_ROWS and batch.tile_slots.tolist() == [3] * batch.tile_slots.numel()


def test_tile_size_minimises_padding_plus_per_tile_cost():
    counts = [40, 3, 3, 3]
    slots = torch.cat([torch.full((n,), s) for s, n in enumerate(counts)])
    batch = AdapterBatch.from_slots(slots)

    def cost(rows):
        tiles = sum(-(-n // rows) for n in counts)
        return tiles * ((1 + GATHER_ROW_COST) * rows + TILE_COST_ROWS)

    assert cost(batch.tile_rows) == min(cost(c) for c in (1, 2, 4, 8, 16, 32, 40))
    assert batch.tile_rows not in (1, 40)  # neither extreme is best for a skewed batch


def test_tokens_laid_out_by_slot_become_views():
    batch = AdapterBatch.from_slots(torch.tensor([-1, -1, 1, 1, 1, 1, 4, 4, 4, 4, -1]))
    assert batch.tile_span == (2, 10) and batch.tile_rows == 4
    assert batch.tile_tokens.flatten().tolist() == list(range(2, 10))
    base_inside = AdapterBatch.from_slots(torch.tensor([1, 1, -1, 4, 4]))
    assert base_inside.tile_span is None  # no single view skips the -1 row


@pytest.mark.parametrize("slots", [torch.full((6,), -1), torch.zeros(0, dtype=torch.int64)], ids=["all_base", "empty"])
def test_no_adapter_batches(slots):
    batch = AdapterBatch.from_slots(slots)
    assert batch.no_adapter and batch.segments == () and batch.max_slot == -1
    assert batch.seg_starts.tolist() == [slots.numel()]
    assert batch.tile_rows == 0 and batch.tile_tokens.shape == (0, 0)


def test_int32_slots_become_int64():
    batch = AdapterBatch.from_slots(torch.tensor([3, -1, 3], dtype=torch.int32))
    assert batch.slots.dtype == batch.order.dtype == batch.tile_tokens.dtype == torch.int64
    assert batch.segments == ((3, 1, 3),)


@pytest.mark.parametrize("bad, message", [
    (torch.tensor([0, -2]), "slots must be >= -1"),
    (torch.tensor([0.0, 1.0]), "integer"),
    (torch.zeros(2, 2, dtype=torch.int64), "1-D"),
])
def test_invalid_slots_are_rejected(bad, message):
    with pytest.raises(ValueError, match=message):
        AdapterBatch.from_slots(bad)


def test_to_moves_every_tensor_and_keeps_the_plan():
    batch = AdapterBatch.from_slots(torch.tensor([2, -1, 0, 2]))
    moved = batch.to("meta")
    assert moved.device.type == "meta"
    assert all(t.device.type == "meta" for t in (moved.order, moved.active_slots, moved.seg_starts,
                                                   moved.tile_tokens, moved.tile_mask, moved.tile_slots))
    assert moved.segments == batch.segments and moved.tile_rows == batch.tile_rows
    assert batch.device.type == "cpu"  # frozen: the original is unchanged


def test_batch_is_frozen():
    batch = AdapterBatch.from_slots(torch.tensor([0]))
    with pytest.raises(AttributeError):
        batch.tile_rows = 4
