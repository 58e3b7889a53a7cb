"""Sampling: a request's decoding options and the choice of each next token.

Greedy rows take the argmax. Sampled rows scale the logits by 1 / temperature, keep the
``top_k`` largest, keep the smallest set whose probability reaches ``top_p`` (the most
probable token is always kept), and draw from the softmax with the request's own
``torch.Generator``. A seeded request therefore draws the same tokens whatever else
shares its steps.
"""
from __future__ import annotations

import math
import secrets
from dataclasses import dataclass
from typing import Sequence

import torch

from .errors import InvalidInputError


@dataclass(frozen=True)
class SamplingParams:
    """How one request generates.

    max_new_tokens: tokens to generate at most (finish reason "length" when reached).
    temperature: 0 is greedy; above 0 samples. top_p: nucleus mass in (0, 1] (1: off).
    top_k: keep the k most probable tokens (0: off). seed: the request's generator seed
    (None: a random seed). stop: strings that end the text; the text stops before the
    first one and never contains it. stop_token_ids: tokens that end the generation (the
    token is kept in ``token_ids``, its text is not added). ignore_eos: go on past the
    model's end-of-sequence tokens. return_logits: every chunk carries the raw logits of
    its token (float32 [V]; for tests and analysis).
    """

    max_new_tokens: int = 16
    temperature: float = 0.0
    top_p: float = 1.0
    top_k: int = 0
    seed: int | None = None
    stop: tuple[str, ...] = ()
    stop_token_ids: tuple[int, ...] = ()
    ignore_eos: bool = False
    return_logits: bool = False

    def __post_init__(self) -> None:
        object.__setattr__(self, "stop", tuple(self.stop))
        object.__setattr__(self, "stop_token_ids", tuple(self.stop_token_ids))
        problems = [message for failed, message in (
            (self.max_new_tokens < 1, f"max_new_tokens must be at least 1, got {self.max_new_tokens}"),
            (not (self.temperature >= 0 and math.isfinite(self.temperature)),
             f"temperature must be a finite number >= 0, got {self.temperature}"),
            (not 0 < self.top_p <= 1, f"top_p must be in (0, 1], got {self.top_p}"),
            (self.top_k < 0, f"top_k must be >= 0, got {self.top_k}"),
            (any(not isinstance(s, str) or not s for s in self.stop), "stop strings must be non-empty strings"),
            (any(not isinstance(t, int) or t < 0 for t in self.stop_token_ids), "stop_token_ids must be token ids"),
        ) if failed]
        if problems:
            raise InvalidInputError("; ".join(problems))

    @property
    def greedy(self) -> bool:
        return self.temperature == 0 or self.top_k == 1


def make_generator(params: SamplingParams, device: torch.device) -> torch.Generator | None:
    """The request's own generator (None for greedy requests), seeded by ``params.seed`` or at random."""
    if params.greedy:
        return None
    seed = params.seed if params.seed is not None else secrets.randbits(62)
    return torch.Generator(device=device).manual_seed(seed)


def next_tokens(logits: torch.Tensor, params: Sequence[SamplingParams],
                generators: Sequence[torch.Generator | None]) -> list[int]:
    """The next token of every row. logits: [N, V] float32; params / generators: one per row."""
    tokens = logits.argmax(-1)  # tokens: [N]
    for row, (options, generator) in enumerate(zip(params, generators)):
        if not options.greedy:
            tokens[row] = _sample(logits[row], options, generator)
    return tokens.tolist()


def _sample(logits: torch.Tensor, params: SamplingParams, generator: torch.Generator) -> torch.Tensor:
    """One draw from the filtered distribution. logits: [V] -> a 1-element tensor."""
    scores = logits / params.temperature
    if 0 < params.top_k < scores.shape[-1]:
        kth = torch.topk(scores, params.top_k).values[-1]
        scores = scores.masked_fill(scores < kth, -math.inf)
    if params.top_p < 1:
        scores = _nucleus(scores, params.top_p)
    return torch.multinomial(scores.softmax(-1), 1, generator=generator)


def _nucleus(scores: torch.Tensor, top_p: float) -> torch.Tensor:
    """scores: [V]; -inf outside the smallest set of most probable tokens whose mass reaches top_p."""
    ordered, order = scores.sort(descending=True)
    probs = ordered.softmax(-1)
    outside = (probs.cumsum(-1) - probs) >= top_p  # the mass before a token already reaches top_p
    return scores.index_fill(0, order[outside], -math.inf)
