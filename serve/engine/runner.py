"""ModelRunner: one engine step, from rows to per-row outputs (runs in the scheduler's worker thread).

A step pads its rows (right padding; rows grouped by slot so each adapter's tokens are
contiguous), builds the step's AdapterBatch from the slot of every token (-1 for padding
and base-only rows), runs the base model once with the slot layers, and computes each
row's output: ``classify`` rows go through their adapter's head (one call per adapter),
``embed`` rows are pooled. Outputs are float32 CPU tensors: logits [C] or a vector [H].
"""
from __future__ import annotations

import inspect
from collections import defaultdict
from typing import Sequence

import torch
from torch import nn

from adapters_lib.heads import pool
from kernels import AdapterBatch

from .errors import UnsupportedTaskError
from .layers import AdapterSlots
from .scheduler import Row


class ModelRunner:
    """Runs steps of the frozen base model with adapter slots.

    Args:
        model: the base model (eval, frozen), on the slots' device.
        slots: the serving layers installed on it.
        pad_token_id: token id of padding positions.
        pooling: how ``embed`` rows are pooled: "mean", "cls" or "last".
    """

    def __init__(self, model: nn.Module, slots: AdapterSlots, pad_token_id: int, pooling: str) -> None:
        self.model = model
        self.slots = slots
        self.pad_token_id = pad_token_id
        self.pooling = pooling
        self.device = slots.spec.device
        # Encoder tasks need no KV cache: skip building one where the model offers it.
        self.forward_options = {"use_cache": False} if "use_cache" in inspect.signature(model.forward).parameters else {}

    def run(self, rows: Sequence[Row]) -> list[torch.Tensor]:
        """One step: the output of every row, in the order given."""
        order = sorted(range(len(rows)), key=lambda i: rows[i].slot)
        grouped = [rows[i] for i in order]
        input_ids, mask, token_slots = self._pad(grouped)  # [B, L], [B, L], [B * L]
        batch = AdapterBatch.from_slots(token_slots).to(self.device)
        with self.slots.lock, self.slots.step(batch, token_slots), torch.inference_mode():
            hidden = self.model(input_ids=input_ids, attention_mask=mask, **self.forward_options)[0]  # [B, L, H]
            outputs = self._outputs(grouped, hidden, mask)
        result: list[torch.Tensor] = [torch.empty(0)] * len(rows)
        for position, index in enumerate(order):
            result[index] = outputs[position]
        return result

    def _pad(self, rows: Sequence[Row]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        longest = max(len(row) for row in rows)
        input_ids = torch.full((len(rows), longest), self.pad_token_id, dtype=torch.long)
        mask = torch.zeros(len(rows), longest, dtype=torch.long)
        slots = torch.full((len(rows), longest), -1, dtype=torch.long)
        for i, row in enumerate(rows):
            input_ids[i, :len(row)] = torch.tensor(row.input_ids)
            mask[i, :len(row)] = 1
            slots[i, :len(row)] = row.slot
        return input_ids.to(self.device), mask.to(self.device), slots.flatten()

    def _outputs(self, rows: Sequence[Row], hidden: torch.Tensor, mask: torch.Tensor) -> list[torch.Tensor]:
        """Per-row outputs, one head or pooling call per (task, slot)."""
        # hidden: [B, L, H]; mask: [B, L]
        groups: dict[tuple[str, int], list[int]] = defaultdict(list)
        for i, row in enumerate(rows):
            groups[(row.task, row.slot)].append(i)
        outputs: list[torch.Tensor] = [torch.empty(0)] * len(rows)
        for (task, slot), members in groups.items():
            index = torch.tensor(members, device=self.device)
            values = self._task(task, slot, hidden.index_select(0, index), mask.index_select(0, index))
            for i, value in zip(members, values.float().cpu()):
                outputs[i] = value
        return outputs

    def _task(self, task: str, slot: int, hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """hidden: [N, L, H], mask: [N, L] -> logits [N, C] (classify) or pooled [N, H] (embed)."""
        if task == "embed":
            return pool(hidden, mask, self.pooling)
        head = self.slots.heads.get(slot)
        if task != "classify" or head is None or head.config.type != "classification":
            raise UnsupportedTaskError(f"task {task!r} cannot run on slot {slot}")
        return head(hidden, mask)
