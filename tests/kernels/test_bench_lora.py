"""The LoRA benchmark compares methods that compute the same thing."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from benchmarks.kernels.bench_lora import (Inputs, Scenario, linear_with, lora_with, make_inputs, masking_loop,
                                           segment_loop)
from kernels import AdapterBatch, get_backend


def _fresh_y(inputs: Inputs) -> Inputs:
    return Inputs(**{**vars(inputs), "y": torch.zeros_like(inputs.y)})


@pytest.mark.parametrize("shape, adapters", [("decode", 64), ("prefill", 8), ("prefill-mixed", 32)])
def test_every_method_adds_the_same_lora_delta(shape, adapters):
    inputs = make_inputs(Scenario(shape, adapters, 64, 96), torch.device("cpu"))
    batch = AdapterBatch.from_slots(inputs.slots)
    results = []
    for run in (lambda i: masking_loop(i, batch.active_slots.tolist()), lambda i: segment_loop(i, batch),
                lambda i: lora_with(get_backend(name="torch"))(i, batch)):
        fresh = _fresh_y(inputs)
        run(fresh)
        results.append(fresh.y)
    assert results[0].abs().sum() > 0
    for result in results[1:]:
        torch.testing.assert_close(result, results[0], atol=1e-5, rtol=1e-5)
    adapted = linear_with(get_backend(name="torch"))(inputs, batch)
    torch.testing.assert_close(adapted, F.linear(inputs.x, inputs.W) + results[0], atol=1e-5, rtol=1e-5)


def test_scenarios_have_the_requested_shapes():
    decode = make_inputs(Scenario("decode", 256, 64, 96), torch.device("cpu"))
    assert decode.slots.numel() == 64 and decode.slots.unique().numel() == 64
    prefill = make_inputs(Scenario("prefill", 32, 64, 96), torch.device("cpu"))
    assert prefill.slots.numel() == 2048 and prefill.slots.unique().numel() == 32
    assert prefill.A.shape == (32, 16, 64) and prefill.B.shape == (32, 96, 16)
