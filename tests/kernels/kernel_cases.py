"""Inputs shared by the kernel tests: slot patterns, stacked weights, tolerances.

Every helper is seeded so that a failing case reproduces.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

# dtype -> (atol, rtol) for a backend against the float32-accumulating reference.
# Values are O(1) by construction (weights scaled by 1/sqrt(fan_in)).
TOLERANCES = {
    torch.float32: (2e-5, 2e-5),
    torch.bfloat16: (4e-2, 3e-2),
    torch.float16: (4e-3, 4e-3),
}

PATTERNS = ("distinct", "uniform", "zipf", "identical", "skewed", "with_base", "all_base", "sparse",
            "grouped", "runs", "requests")


def make_slots(pattern: str, tokens: int, num_slots: int, seed: int = 0) -> torch.Tensor:
    """[T] int64 slots following a popularity pattern over num_slots stacked slots.

    distinct: every token its own slot (needs T <= S); uniform: slots drawn uniformly;
    zipf: slot k drawn with weight 1/(k+1)^1.2; identical: one slot for all; skewed: ~90%
    one slot, the rest uniform; with_base: uniform with about a third -1; all_base: all -1;
    sparse: only slots {1, 4, 9} of S (slot index != adapter count) plus -1; grouped: runs
    sorted by slot with a -1 run first (tokens laid out by slot); runs: requests of varying
    length in arrival order (prefill-like); requests: requests of 3 tokens in arrival order,
    the first one base-only (equal-length prefill: tiles become views).
    """
    g = torch.Generator().manual_seed(seed)
    if pattern == "distinct":
        return torch.randperm(num_slots, generator=g)[:tokens]
    if pattern == "uniform":
        return torch.randint(0, num_slots, (tokens,), generator=g)
    if pattern == "zipf":
        weights = 1.0 / torch.arange(1, num_slots + 1).double() ** 1.2
        return torch.multinomial(weights, tokens, replacement=True, generator=g)
    if pattern == "identical":
        return torch.full((tokens,), num_slots - 1)
    if pattern == "skewed":
        slots = torch.randint(0, num_slots, (tokens,), generator=g)
        return torch.where(torch.rand(tokens, generator=g) < 0.9, torch.full_like(slots, 2), slots)
    if pattern == "with_base":
        slots = torch.randint(0, num_slots, (tokens,), generator=g)
        return torch.where(torch.rand(tokens, generator=g) < 0.34, torch.full_like(slots, -1), slots)
    if pattern == "all_base":
        return torch.full((tokens,), -1)
    if pattern == "sparse":
        choices = torch.tensor([-1, 1, 4, 9])
        return choices[torch.randint(0, 4, (tokens,), generator=g)]
    if pattern == "grouped":
        return torch.randint(-1, num_slots, (tokens,), generator=g).sort().values
    if pattern == "runs":
        return _request_runs(tokens, num_slots, g)
    if pattern == "requests":
        per_request = torch.randint(0, num_slots, (tokens // 3 + 1,), generator=g)
        per_request[0] = -1
        return per_request.repeat_interleave(3)[:tokens]
    raise ValueError(pattern)


def _request_runs(tokens: int, num_slots: int, g: torch.Generator) -> torch.Tensor:
    """Requests of 1..12 tokens, each with one slot (or -1), in arrival order."""
    slots = []
    while len(slots) < tokens:
        length = int(torch.randint(1, 13, (1,), generator=g))
        slots += [int(torch.randint(-1, num_slots, (1,), generator=g))] * length
    return torch.tensor(slots[:tokens])


@dataclass
class LoraCase:
    """Inputs of one shrink/expand case. ranks[s] <= r; weights past a slot's rank are zero."""

    x: torch.Tensor        # [T, H_in]
    A: torch.Tensor        # [S, r, H_in]
    B: torch.Tensor        # [S, H_out, r]
    scaling: torch.Tensor  # [S] float32
    y: torch.Tensor        # [T, H_out]
    ranks: list[int]


def make_lora(tokens: int, num_slots: int, h_in: int, h_out: int, rank: int, dtype: torch.dtype,
              ranks: list[int] | None = None, seed: int = 0) -> LoraCase:
    """Random LoRA inputs; ``ranks`` zero-pads each slot's A rows / B columns past its own rank."""
    g = torch.Generator().manual_seed(seed)
    ranks = ranks or [rank] * num_slots
    A = torch.randn(num_slots, rank, h_in, generator=g) / h_in ** 0.5
    B = torch.randn(num_slots, h_out, rank, generator=g) / rank ** 0.5
    for slot, slot_rank in enumerate(ranks):
        A[slot, slot_rank:] = 0
        B[slot, :, slot_rank:] = 0
    return LoraCase(
        x=torch.randn(tokens, h_in, generator=g).to(dtype),
        A=A.to(dtype),
        B=B.to(dtype),
        scaling=torch.rand(num_slots, generator=g) + 0.5,
        y=torch.randn(tokens, h_out, generator=g).to(dtype),
        ranks=ranks,
    )


@dataclass
class BottleneckCase:
    """Inputs of one bottleneck case."""

    h: torch.Tensor       # [T, H]
    down_w: torch.Tensor  # [S, m, H]
    down_b: torch.Tensor  # [S, m]
    up_w: torch.Tensor    # [S, H, m]
    up_b: torch.Tensor    # [S, H]


def make_bottleneck(tokens: int, num_slots: int, hidden: int, size: int, dtype: torch.dtype,
                    seed: int = 0) -> BottleneckCase:
    """Random bottleneck adapter inputs."""
    g = torch.Generator().manual_seed(seed)
    return BottleneckCase(
        h=torch.randn(tokens, hidden, generator=g).to(dtype),
        down_w=(torch.randn(num_slots, size, hidden, generator=g) / hidden ** 0.5).to(dtype),
        down_b=(0.5 * torch.randn(num_slots, size, generator=g)).to(dtype),
        up_w=(torch.randn(num_slots, hidden, size, generator=g) / size ** 0.5).to(dtype),
        up_b=(0.5 * torch.randn(num_slots, hidden, generator=g)).to(dtype),
    )


def make_ia3(tokens: int, num_slots: int, hidden: int, dtype: torch.dtype, seed: int = 0):
    """Random activations y: [T, H] and IA3 vectors vec: [S, H] around 1."""
    g = torch.Generator().manual_seed(seed)
    y = torch.randn(tokens, hidden, generator=g).to(dtype)
    vec = (1.0 + 0.5 * torch.randn(num_slots, hidden, generator=g)).to(dtype)
    return y, vec


def assert_close(actual: torch.Tensor, expected: torch.Tensor) -> None:
    """Compare with the dtype's tolerance from TOLERANCES."""
    atol, rtol = TOLERANCES[expected.dtype]
    assert actual.dtype == expected.dtype
    torch.testing.assert_close(actual, expected, atol=atol, rtol=rtol)
