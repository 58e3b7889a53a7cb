"""The Triton backend against the reference. Not collected by a plain `pytest tests`.

Triton reads TRITON_INTERPRET when it is imported, so these cases run in their own
process: ``test_triton_interpreter.py`` launches

    TRITON_INTERPRET=1 python -m pytest tests/kernels/triton_interpreter_cases.py

which runs the kernels on CPU tensors through the interpreter. Without the variable, on
a machine with CUDA, the same command runs them on the GPU.
"""
from __future__ import annotations

import os

import pytest
import torch

triton = pytest.importorskip("triton")

import kernels  # noqa: E402
import kernels.reference as reference  # noqa: E402
from kernels import AdapterBatch, get_backend  # noqa: E402
from kernels.activations import ACTIVATION_NAMES  # noqa: E402
from tests.kernels.kernel_cases import (TOLERANCES, assert_close, make_bottleneck, make_ia3, make_lora,  # noqa: E402
                                        make_slots)

INTERPRETING = os.environ.get("TRITON_INTERPRET") == "1"
if not INTERPRETING and not torch.cuda.is_available():
    pytest.skip("needs TRITON_INTERPRET=1 or a CUDA device", allow_module_level=True)

DEVICE = "cpu" if INTERPRETING else "cuda"
backend = get_backend(DEVICE, name="triton")
H_IN, H_OUT, RANK, BOTTLENECK = 130, 40, 8, 12   # H_IN: 5 K-blocks, so shrink splits K in two
PATTERNS = ("distinct", "uniform", "zipf", "identical", "skewed", "with_base", "all_base", "sparse", "grouped", "runs",
            "requests")


def _on_device(*tensors):
    return [t.to(DEVICE) for t in tensors]


def _lora(module, case, batch):
    x, A, B, scaling, y = _on_device(case.x, case.A, case.B, case.scaling, case.y)
    u = module.lora_shrink(x, A, batch)
    module.lora_expand(y, u, B, scaling, batch)
    return u.cpu(), y.cpu()


@pytest.mark.parametrize("pattern", ["requests", "with_base"])
def test_lora_linear_on_triton_matches_the_reference(pattern):
    batch = AdapterBatch.from_slots(make_slots(pattern, 19, 12, seed=3))
    case = make_lora(19, 12, H_IN, H_OUT, RANK, torch.float32, seed=3)
    weight, bias = torch.randn(H_OUT, H_IN) / H_IN ** 0.5, torch.randn(H_OUT)
    expected = kernels.lora_linear(case.x, weight, bias, case.A, case.B, case.scaling, batch, backend=reference)
    x, w, b, A, B, scaling = _on_device(case.x, weight, bias, case.A, case.B.mT.contiguous().mT, case.scaling)
    y = kernels.lora_linear(x, w, b, A, B, scaling, batch.to(DEVICE), backend=backend)
    assert_close(y.cpu(), expected)


def test_the_interpreter_shapes_exercise_split_k():
    from kernels.triton import TILE_TABLE, _split_k
    if INTERPRETING:
        assert _split_k(TILE_TABLE["interpreter"]["shrink"], H_IN) == 2


@pytest.mark.parametrize("tokens", [1, 19])
@pytest.mark.parametrize("pattern", PATTERNS)
def test_lora_matches_reference_fp32(pattern, tokens):
    num_slots = max(12, tokens)
    batch = AdapterBatch.from_slots(make_slots(pattern, tokens, num_slots))
    case = make_lora(tokens, num_slots, H_IN, H_OUT, RANK, torch.float32, ranks=([8, 3, 8, 1] * num_slots)[:num_slots])
    u_ref, y_ref = _lora(reference, case, batch)
    u, y = _lora(backend, case, batch.to(DEVICE))
    assert_close(u, u_ref)
    assert_close(y, y_ref)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16], ids=str)
@pytest.mark.parametrize("pattern", PATTERNS)
def test_lora_matches_reference_half_precision(pattern, dtype):
    batch = AdapterBatch.from_slots(make_slots(pattern, 19, 20, seed=1))
    case = make_lora(19, 20, H_IN, H_OUT, RANK, dtype, seed=1)
    u_ref, y_ref = _lora(reference, case, batch)
    u, y = _lora(backend, case, batch.to(DEVICE))
    assert_close(u, u_ref)
    assert_close(y, y_ref)


def test_lora_with_many_tokens_per_slot_spans_several_row_tiles():
    batch = AdapterBatch.from_slots(make_slots("skewed", 70, 12, seed=2))
    assert batch.max_count > 32  # more than two 16-row tiles in one segment
    case = make_lora(70, 12, H_IN, 70, 16, torch.float32, seed=2)  # H_out 70 > one 64-column tile
    u_ref, y_ref = _lora(reference, case, batch)
    u, y = _lora(backend, case, batch.to(DEVICE))
    assert_close(u, u_ref)
    assert_close(y, y_ref)


@pytest.mark.parametrize("dtype", list(TOLERANCES), ids=str)
@pytest.mark.parametrize("pattern", ["with_base", "sparse", "identical"])
def test_bottleneck_and_ia3_match_reference(pattern, dtype):
    batch = AdapterBatch.from_slots(make_slots(pattern, 19, 12, seed=3))
    case = make_bottleneck(19, 12, H_OUT, BOTTLENECK, dtype, seed=3)
    tensors = _on_device(case.h, case.down_w, case.down_b, case.up_w, case.up_b)
    expected = reference.bottleneck(case.h, case.down_w, case.down_b, case.up_w, case.up_b, "gelu_new", batch)
    assert_close(backend.bottleneck(*tensors, "gelu_new", batch.to(DEVICE)).cpu(), expected)

    y, vec = make_ia3(19, 12, H_OUT, dtype, seed=3)
    expected = y.clone()
    reference.ia3_scale(expected, vec, batch)
    y_dev, vec_dev = _on_device(y, vec)
    backend.ia3_scale(y_dev, vec_dev, batch.to(DEVICE))
    assert_close(y_dev.cpu(), expected)


@pytest.mark.parametrize("name", ACTIVATION_NAMES)
def test_every_activation_matches_reference(name):
    batch = AdapterBatch.from_slots(make_slots("with_base", 9, 4, seed=4))
    case = make_bottleneck(9, 4, H_OUT, BOTTLENECK, torch.float32, seed=4)
    expected = reference.bottleneck(case.h, case.down_w, case.down_b, case.up_w, case.up_b, name, batch)
    tensors = _on_device(case.h, case.down_w, case.down_b, case.up_w, case.up_b)
    assert_close(backend.bottleneck(*tensors, name, batch.to(DEVICE)).cpu(), expected)


def test_base_rows_stay_untouched():
    slots = make_slots("with_base", 19, 12, seed=5)
    base = slots == -1
    batch = AdapterBatch.from_slots(slots)
    case = make_lora(19, 12, H_IN, H_OUT, RANK, torch.float32, seed=5)
    u, y = _lora(backend, case, batch.to(DEVICE))
    assert torch.all(u[base] == 0)
    assert torch.equal(y[base], case.y[base])
