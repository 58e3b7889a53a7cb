"""GenerationRunner: the prefill and decode steps of causal-LM generation (runs in the step thread).

The runner owns the running batch: ``rows[r]`` is the sequence in row r of the
:class:`~serve.engine.kvcache.SequenceKVCache`. A step first drops the rows of sequences
that finished or were cancelled (the last row moves into the hole), then either

* prefills joining sequences: their prompts, right-padded to the longest, run as new rows
  after the running ones (positions 0..n-1, padding masked and given slot -1); or
* decodes: each running row's last token at its own position ``n_r``, attending to its
  columns ``0..n_r``.

Both run the base model (``model.base_model``) with the slot layers and one AdapterBatch
built from each token's sequence, then the base model's LM head on one position per row,
then sampling. Adapters' own ``causal_lm`` heads are not used: every sequence uses the base
LM head.
"""
from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

from kernels import AdapterBatch

from .generation import GenerationChunk, SequenceState
from .kvcache import SequenceKVCache
from .layers import AdapterSlots
from .sampling import next_tokens


class GenerationRunner:
    """Steps of the running batch.

    Args:
        model: a causal LM (``model.base_model`` is the decoder; its output embeddings are the LM head).
        slots: the serving layers installed on ``model.base_model``.
        pad_token_id: token id of padding positions.
        max_rows: most running sequences.
        max_columns: most tokens of one sequence (prompt and generated).
    """

    def __init__(self, model: nn.Module, slots: AdapterSlots, pad_token_id: int, max_rows: int,
                 max_columns: int) -> None:
        self.decoder = model.base_model
        self.lm_head = model.get_output_embeddings()
        self.slots = slots
        self.device = slots.spec.device
        self.pad_token_id = pad_token_id
        self.cache = SequenceKVCache(len(slots.contexts), max_rows, max_columns)
        self.rows: list[SequenceState] = []

    def reset(self) -> None:
        """Forget every row and free the KV buffers."""
        self.rows = []
        self.cache.reset()

    def step(self, joining: Sequence[SequenceState]) -> list[tuple[SequenceState, GenerationChunk]]:
        """Drop finished rows, then prefill ``joining`` (if any) or decode every row; one chunk per sequence."""
        with self.slots.lock, torch.inference_mode():
            self._drop_done()
            if joining:
                return self._prefill(list(joining))
            if self.rows:
                return self._decode()
            return []

    def _drop_done(self) -> None:
        """Remove finished and cancelled rows; the last row fills each hole, so rows stay contiguous."""
        for row in reversed(range(len(self.rows))):
            if self.rows[row].done:
                last = len(self.rows) - 1
                if row != last:
                    self.cache.move_row(last, row, self.rows[last].cached)
                    self.rows[row] = self.rows[last]
                self.rows.pop()

    def _prefill(self, joining: list[SequenceState]) -> list[tuple[SequenceState, GenerationChunk]]:
        lengths = torch.tensor([len(s.prompt) for s in joining])
        width = int(lengths.max())
        ids = torch.full((len(joining), width), self.pad_token_id, dtype=torch.long)
        token_slots = torch.full((len(joining), width), -1, dtype=torch.long)
        for i, sequence in enumerate(joining):
            ids[i, :len(sequence.prompt)] = torch.tensor(sequence.prompt)
            token_slots[i, :len(sequence.prompt)] = sequence.slot
        mask = torch.arange(width) < lengths[:, None]                  # mask: [N, L]
        positions = torch.arange(width).expand(len(joining), width)    # positions: [N, L]
        first = len(self.rows)
        self.rows.extend(joining)
        logits = self._forward(ids, mask, positions, token_slots.flatten(), first, [0] * len(joining), lengths - 1)
        return self._sample(joining, logits)

    def _decode(self) -> list[tuple[SequenceState, GenerationChunk]]:
        starts = [s.cached for s in self.rows]
        at = torch.tensor(starts)
        ids = torch.tensor([[s.tokens[-1]] for s in self.rows])         # ids: [B, 1]
        mask = torch.arange(max(starts) + 1) <= at[:, None]              # mask: [B, max(n) + 1]
        token_slots = torch.tensor([s.slot for s in self.rows])
        logits = self._forward(ids, mask, at[:, None], token_slots, 0, starts, torch.zeros_like(at))
        return self._sample(self.rows, logits)

    def _forward(self, ids: torch.Tensor, mask: torch.Tensor, positions: torch.Tensor, token_slots: torch.Tensor,
                 first: int, starts: list[int], last: torch.Tensor) -> torch.Tensor:
        """One pass over rows ``first..``: ids / positions [N, q], mask [N, past + q], token_slots [N * q],
        last [N] (the position whose logits each row needs) -> logits [N, V] float32."""
        batch = AdapterBatch.from_slots(token_slots).to(self.device)
        self.cache.begin(first, starts, ids.shape[1], self.device)
        with self.slots.step(batch, token_slots):
            hidden = self.decoder(input_ids=ids.to(self.device), attention_mask=mask.to(self.device),
                                  position_ids=positions.to(self.device), past_key_values=self.cache,
                                  use_cache=True)[0]                     # hidden: [N, q, H]
        rows = hidden[torch.arange(hidden.shape[0], device=self.device), last.to(self.device)]  # rows: [N, H]
        return self.lm_head(rows).float()

    def _sample(self, sequences: list[SequenceState],
                logits: torch.Tensor) -> list[tuple[SequenceState, GenerationChunk]]:
        """logits: [N, V] -> each sequence's next token, accepted, with its chunk."""
        tokens = next_tokens(logits, [s.params for s in sequences], [s.generator for s in sequences])
        host = logits.cpu() if any(s.params.return_logits for s in sequences) else None
        return [(s, s.accept(token, host[i] if s.params.return_logits else None))
                for i, (s, token) in enumerate(zip(sequences, tokens))]
