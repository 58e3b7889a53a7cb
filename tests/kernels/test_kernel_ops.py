"""The reference backend against dense formulas, and the torch backend against the reference."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from tests.kernels.kernel_cases import (PATTERNS, TOLERANCES, assert_close, make_bottleneck, make_ia3, make_lora,
                          make_slots)

import kernels
import kernels.reference as reference
import kernels.torch as torch_backend
from kernels import AdapterBatch
from kernels.activations import ACTIVATION_NAMES, activation_function

DTYPES = list(TOLERANCES)
H_IN, H_OUT, RANK, BOTTLENECK = 40, 24, 8, 6  # not multiples of any tile size


def _num_slots(tokens: int) -> int:
    return max(12, tokens)  # "distinct" needs a slot per token


def _lora(backend, case, batch):
    u = backend.lora_shrink(case.x, case.A, batch)
    y = case.y.clone()
    backend.lora_expand(y, u, case.B, case.scaling, batch)
    return u, y


def _bottleneck(backend, case, activation, batch):
    return backend.bottleneck(case.h, case.down_w, case.down_b, case.up_w, case.up_b, activation, batch)


def _ia3(backend, y, vec, batch):
    out = y.clone()
    backend.ia3_scale(out, vec, batch)
    return out


# ----------------------------------------------------------------------------- the reference is the spec


@pytest.mark.parametrize("pattern", ["uniform", "with_base", "sparse"])
def test_reference_lora_matches_dense_formula(pattern):
    slots = make_slots(pattern, 33, 12)
    case = make_lora(33, 12, H_IN, H_OUT, RANK, torch.float32)
    active = (slots != -1).float()[:, None]                        # [T, 1]
    A_tok = case.A[slots.clamp(min=0)]                             # [T, r, H_in]
    B_tok = case.B[slots.clamp(min=0)]                             # [T, H_out, r]
    u_dense = torch.einsum("trh,th->tr", A_tok, case.x) * active
    y_dense = case.y + torch.einsum("tor,tr->to", B_tok, u_dense) * case.scaling[slots.clamp(min=0)][:, None] * active

    u, y = _lora(reference, case, AdapterBatch.from_slots(slots))
    torch.testing.assert_close(u, u_dense, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(y, y_dense, atol=1e-5, rtol=1e-5)


def test_reference_bottleneck_and_ia3_match_dense_formulas():
    slots = make_slots("with_base", 33, 12)
    case = make_bottleneck(33, 12, H_IN, BOTTLENECK, torch.float32)
    idx, active = slots.clamp(min=0), (slots != -1).float()[:, None]
    down = torch.einsum("tmh,th->tm", case.down_w[idx], case.h) + case.down_b[idx]
    delta = (torch.einsum("thm,tm->th", case.up_w[idx], torch.tanh(down)) + case.up_b[idx]) * active
    y, vec = make_ia3(33, 12, H_IN, torch.float32)
    scaled = y * torch.where(active.bool(), vec[idx], torch.ones_like(y))

    batch = AdapterBatch.from_slots(slots)
    torch.testing.assert_close(_bottleneck(reference, case, "tanh", batch), delta, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(_ia3(reference, y, vec, batch), scaled, atol=1e-6, rtol=1e-6)


# ----------------------------------------------------------------------------- torch backend vs reference


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("tokens", [1, 33])
@pytest.mark.parametrize("pattern", PATTERNS)
def test_torch_lora_matches_reference(pattern, tokens, dtype):
    num_slots = _num_slots(tokens)
    batch = AdapterBatch.from_slots(make_slots(pattern, tokens, num_slots))
    case = make_lora(tokens, num_slots, H_IN, H_OUT, RANK, dtype)
    u_ref, y_ref = _lora(reference, case, batch)
    u, y = _lora(torch_backend, case, batch)
    assert_close(u, u_ref)
    assert_close(y, y_ref)


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("pattern", PATTERNS)
def test_torch_bottleneck_and_ia3_match_reference(pattern, dtype):
    tokens, num_slots = 33, _num_slots(33)
    batch = AdapterBatch.from_slots(make_slots(pattern, tokens, num_slots, seed=1))
    case = make_bottleneck(tokens, num_slots, H_IN, BOTTLENECK, dtype)
    assert_close(_bottleneck(torch_backend, case, "gelu", batch), _bottleneck(reference, case, "gelu", batch))
    y, vec = make_ia3(tokens, num_slots, H_IN, dtype)
    assert_close(_ia3(torch_backend, y, vec, batch), _ia3(reference, y, vec, batch))


def test_the_patterns_cover_every_tile_layout():
    layouts = set()
    for pattern in PATTERNS:
        batch = AdapterBatch.from_slots(make_slots(pattern, 33, _num_slots(33)))
        layouts.add((batch.tile_span is not None, batch.tiles_padded, batch.tile_rows > 1))
    assert {(True, False, True), (True, False, False), (False, True, True)} <= layouts


def test_torch_unpadded_sorted_tiles_match_reference():
    batch = AdapterBatch.from_slots(torch.tensor([5, 2, 5, 5, 2, 2, 5, 2] * 4))
    assert batch.tile_span is None and not batch.tiles_padded and batch.tile_rows == 16
    case = make_lora(32, 6, H_IN, H_OUT, RANK, torch.float32)
    u_ref, y_ref = _lora(reference, case, batch)
    u, y = _lora(torch_backend, case, batch)
    assert_close(u, u_ref)
    assert_close(y, y_ref)
    bn = make_bottleneck(32, 6, H_IN, BOTTLENECK, torch.float32)
    assert_close(_bottleneck(torch_backend, bn, "relu", batch), _bottleneck(reference, bn, "relu", batch))
    y_ia3, vec = make_ia3(32, 6, H_IN, torch.float32)
    assert_close(_ia3(torch_backend, y_ia3, vec, batch), _ia3(reference, y_ia3, vec, batch))


@pytest.mark.parametrize("pattern", ["uniform", "zipf", "requests", "distinct"])
def test_torch_larger_batch_matches_reference(pattern):
    tokens = 300
    batch = AdapterBatch.from_slots(make_slots(pattern, tokens, _num_slots(tokens), seed=2))
    case = make_lora(tokens, _num_slots(tokens), 72, 130, 16, torch.float32, seed=2)
    u_ref, y_ref = _lora(reference, case, batch)
    u, y = _lora(torch_backend, case, batch)
    assert_close(u, u_ref)
    assert_close(y, y_ref)


@pytest.mark.parametrize("backend", [reference, torch_backend], ids=lambda b: b.NAME)
@pytest.mark.parametrize("pattern", ["uniform", "grouped", "with_base"])
def test_mixed_ranks_equal_unpadded_low_rank_products(backend, pattern):
    ranks = [8, 2, 5, 8, 1, 3, 8, 4, 6, 7, 2, 8]
    slots = make_slots(pattern, 33, 12, seed=3)
    case = make_lora(33, 12, H_IN, H_OUT, 8, torch.float32, ranks=ranks, seed=3)
    u, y = _lora(backend, case, AdapterBatch.from_slots(slots))
    for t, slot in enumerate(slots.tolist()):
        if slot == -1:
            continue
        rank = ranks[slot]
        u_t = case.A[slot, :rank] @ case.x[t]                                     # [rank]
        torch.testing.assert_close(u[t, :rank], u_t, atol=1e-5, rtol=1e-5)
        assert torch.all(u[t, rank:] == 0)
        y_t = case.y[t] + case.scaling[slot] * (case.B[slot, :, :rank] @ u_t)
        torch.testing.assert_close(y[t], y_t, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("backend", [reference, torch_backend], ids=lambda b: b.NAME)
def test_base_rows_are_untouched_or_zero(backend):
    slots = make_slots("with_base", 33, 12, seed=4)
    base = slots == -1
    assert base.any() and (~base).any()
    batch = AdapterBatch.from_slots(slots)
    case = make_lora(33, 12, H_IN, H_OUT, RANK, torch.float32)
    u, y = _lora(backend, case, batch)
    assert torch.all(u[base] == 0)
    assert torch.equal(y[base], case.y[base])
    assert not torch.allclose(y[~base], case.y[~base])
    bn = make_bottleneck(33, 12, H_IN, BOTTLENECK, torch.float32)
    assert torch.all(_bottleneck(backend, bn, "relu", batch)[base] == 0)
    y_ia3, vec = make_ia3(33, 12, H_IN, torch.float32)
    assert torch.equal(_ia3(backend, y_ia3, vec, batch)[base], y_ia3[base])


@pytest.mark.parametrize("backend", [reference, torch_backend], ids=lambda b: b.NAME)
def test_all_base_batch_changes_nothing(backend):
    batch = AdapterBatch.from_slots(torch.full((5,), -1))
    case = make_lora(5, 3, H_IN, H_OUT, RANK, torch.bfloat16)
    u, y = _lora(backend, case, batch)
    assert u.shape == (5, RANK) and u.dtype == torch.bfloat16 and torch.all(u == 0)
    assert torch.equal(y, case.y)


def test_torch_backend_handles_an_empty_step():
    batch = AdapterBatch.from_slots(torch.zeros(0, dtype=torch.int64))
    case = make_lora(0, 3, H_IN, H_OUT, RANK, torch.float32)
    u, y = _lora(torch_backend, case, batch)
    assert u.shape == (0, RANK) and y.shape == (0, H_OUT)


@pytest.mark.parametrize("pattern", ["requests", "uniform"])
def test_torch_backend_accepts_non_contiguous_shrink_output(pattern):
    batch = AdapterBatch.from_slots(make_slots(pattern, 33, 12, seed=5))
    case = make_lora(33, 12, H_IN, H_OUT, RANK, torch.float32)
    u_ref, y_ref = _lora(reference, case, batch)
    u_strided = torch.cat([u_ref, torch.randn(33, 2)], dim=1)[:, :RANK]
    assert not u_strided.is_contiguous()
    y = case.y.clone()
    torch_backend.lora_expand(y, u_strided, case.B, case.scaling, batch)
    assert_close(y, y_ref)


@pytest.mark.parametrize("pattern", ["requests", "uniform", "distinct"])
def test_torch_backend_accepts_non_contiguous_activations(pattern):
    slots = make_slots(pattern, 33, 40, seed=5)
    batch = AdapterBatch.from_slots(slots)
    case = make_lora(33, 40, H_IN, H_OUT, RANK, torch.float32)
    x_strided = torch.cat([case.x, torch.randn(33, 3)], dim=1)[:, :H_IN]   # rows not contiguous
    y_strided = torch.cat([case.y, torch.randn(33, 5)], dim=1)[:, :H_OUT]
    assert not x_strided.is_contiguous() and not y_strided.is_contiguous()
    u = torch_backend.lora_shrink(x_strided, case.A, batch)
    torch_backend.lora_expand(y_strided, u, case.B, case.scaling, batch)
    u_ref, y_ref = _lora(reference, case, batch)
    assert_close(u, u_ref)
    assert_close(y_strided, y_ref)


def test_torch_backend_never_reads_device_values(monkeypatch):
    """Layers must not sync: no .item(), .tolist() or tensor truth tests inside the ops."""
    slots = make_slots("with_base", 33, 12, seed=6)
    batch = AdapterBatch.from_slots(slots)
    case = make_lora(33, 12, H_IN, H_OUT, RANK, torch.float32)
    bn = make_bottleneck(33, 12, H_IN, BOTTLENECK, torch.float32)
    y, vec = make_ia3(33, 12, H_IN, torch.float32)

    def forbidden(*args, **kwargs):
        raise AssertionError("device value read inside an op")

    for name in ("item", "tolist", "__bool__", "__int__", "__float__", "__index__"):
        monkeypatch.setattr(torch.Tensor, name, forbidden)
    _lora(torch_backend, case, batch)
    _bottleneck(torch_backend, bn, "silu", batch)
    torch_backend.ia3_scale(y, vec, batch)
    with pytest.raises(AssertionError, match="device value"):  # the trap works: the reference reads slots
        _lora(reference, case, batch)


def test_package_level_ops_dispatch_to_the_cpu_backend():
    batch = AdapterBatch.from_slots(make_slots("uniform", 33, 12))
    case = make_lora(33, 12, H_IN, H_OUT, RANK, torch.float32)
    u = kernels.lora_shrink(case.x, case.A, batch)
    y = case.y.clone()
    kernels.lora_expand(y, u, case.B, case.scaling, batch)
    u_ref, y_ref = _lora(reference, case, batch)
    assert_close(u, u_ref)
    assert_close(y, y_ref)
    bn = make_bottleneck(33, 12, H_IN, BOTTLENECK, torch.float32)
    assert_close(kernels.bottleneck(bn.h, bn.down_w, bn.down_b, bn.up_w, bn.up_b, "relu", batch),
                 _bottleneck(reference, bn, "relu", batch))
    y_ia3, vec = make_ia3(33, 12, H_IN, torch.float32)
    out = y_ia3.clone()
    kernels.ia3_scale(out, vec, batch)
    assert_close(out, _ia3(reference, y_ia3, vec, batch))


# ----------------------------------------------------------------------------- lora_linear and weight layouts


def _linear_then_expand(case, weight, bias, batch):
    """The lora_linear spec: the base linear, then the reference's expand added into it."""
    y = F.linear(case.x, weight, bias)
    reference.lora_expand(y, reference.lora_shrink(case.x, case.A, batch), case.B, case.scaling, batch)
    return y


@pytest.mark.parametrize("with_bias", [True, False], ids=["bias", "no_bias"])
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("pattern", ["requests", "uniform", "with_base", "all_base", "distinct"])
@pytest.mark.parametrize("backend", [reference, torch_backend], ids=lambda b: b.NAME)
def test_lora_linear_equals_the_linear_plus_the_expand(backend, pattern, dtype, with_bias):
    batch = AdapterBatch.from_slots(make_slots(pattern, 33, 40, seed=8))
    case = make_lora(33, 40, H_IN, H_OUT, RANK, dtype, seed=8)
    g = torch.Generator().manual_seed(8)
    weight = (torch.randn(H_OUT, H_IN, generator=g) / H_IN ** 0.5).to(dtype)
    bias = torch.randn(H_OUT, generator=g).to(dtype) if with_bias else None
    y = kernels.lora_linear(case.x, weight, bias, case.A, case.B, case.scaling, batch, backend=backend)
    assert_close(y, _linear_then_expand(case, weight, bias, batch))


@pytest.mark.parametrize("tokens", [1, 2])
def test_lora_linear_never_writes_the_base_weights(tokens):
    batch = AdapterBatch.from_slots(torch.zeros(tokens, dtype=torch.int64))
    case = make_lora(tokens, 2, H_IN, H_OUT, RANK, torch.float32)
    weight, bias = torch.randn(H_OUT, H_IN), torch.randn(H_OUT)
    before = weight.clone(), bias.clone()
    y = kernels.lora_linear(case.x, weight, bias, case.A, case.B, case.scaling, batch)
    assert torch.equal(weight, before[0]) and torch.equal(bias, before[1])
    assert_close(y, _linear_then_expand(case, weight, bias, batch))


def test_lora_linear_takes_a_transposed_weight_and_picks_the_device_backend():
    """A GPT-2 Conv1D keeps its weight as [H_in, H_out] and passes ``weight.t()``."""
    batch = AdapterBatch.from_slots(make_slots("zipf", 33, 12, seed=9))
    case = make_lora(33, 12, H_IN, H_OUT, RANK, torch.float32, seed=9)
    conv_weight = torch.randn(H_IN, H_OUT)                                         # [H_in, H_out]
    y = kernels.lora_linear(case.x, conv_weight.t(), None, case.A, case.B, case.scaling, batch)
    assert_close(y, _linear_then_expand(case, conv_weight.t(), None, batch))


@pytest.mark.parametrize("pattern", ["requests", "uniform", "grouped", "with_base"])
def test_torch_backend_reads_weights_stored_transposed(pattern):
    """Weights may be strided views (here: stored transposed); results do not change."""
    batch = AdapterBatch.from_slots(make_slots(pattern, 33, 12, seed=10))
    case = make_lora(33, 12, H_IN, H_OUT, RANK, torch.float32, seed=10)
    B_view = case.B.mT.contiguous().mT                                             # [S, H_out, r] view
    assert not B_view.is_contiguous()
    y = case.y.clone()
    torch_backend.lora_expand(y, torch_backend.lora_shrink(case.x, case.A, batch), B_view, case.scaling, batch)
    assert_close(y, _lora(reference, case, batch)[1])
    bn = make_bottleneck(33, 12, H_IN, BOTTLENECK, torch.float32, seed=10)
    up_view = bn.up_w.mT.contiguous().mT
    assert_close(torch_backend.bottleneck(bn.h, bn.down_w, bn.down_b, up_view, bn.up_b, "relu", batch),
                 _bottleneck(reference, bn, "relu", batch))


# ----------------------------------------------------------------------------- activations


@pytest.mark.parametrize("name", ACTIVATION_NAMES)
def test_every_activation_agrees_between_backends(name):
    batch = AdapterBatch.from_slots(make_slots("with_base", 33, 12, seed=7))
    case = make_bottleneck(33, 12, H_IN, BOTTLENECK, torch.float32, seed=7)
    expected = _bottleneck(reference, case, name, batch)
    assert_close(_bottleneck(torch_backend, case, name.upper(), batch), expected)


@pytest.mark.parametrize("name", ACTIVATION_NAMES)
def test_activation_names_mean_what_adapterhub_means(name):
    """AdapterHub: "leakyrelu" is F.leaky_relu; other names go to transformers' get_activation."""
    from transformers.activations import ACT2CLS, get_activation
    x = torch.linspace(-6, 6, 101)
    if name == "leakyrelu":
        expected = F.leaky_relu(x)
    elif name in ACT2CLS:
        expected = get_activation(name)(x)
    else:
        assert name == "identity"
        expected = x
    torch.testing.assert_close(activation_function(name)(x), expected, atol=1e-6, rtol=1e-6)


@pytest.mark.parametrize("backend", [reference, torch_backend], ids=lambda b: b.NAME)
def test_unknown_activation_is_rejected_with_the_valid_names(backend):
    batch = AdapterBatch.from_slots(torch.tensor([0, -1]))
    case = make_bottleneck(2, 1, H_IN, BOTTLENECK, torch.float32)
    with pytest.raises(ValueError, match="unknown activation 'softsign'.*gelu_new.*swish"):
        _bottleneck(backend, case, "softsign", batch)


# ----------------------------------------------------------------------------- argument checks


@pytest.mark.parametrize("backend", [reference, torch_backend], ids=lambda b: b.NAME)
def test_bad_arguments_raise_value_errors(backend):
    batch = AdapterBatch.from_slots(torch.tensor([0, 3, -1]))
    case = make_lora(3, 4, H_IN, H_OUT, RANK, torch.float32)
    with pytest.raises(ValueError, match="T=3"):
        backend.lora_shrink(case.x[:2], case.A, batch)
    with pytest.raises(ValueError, match=r"slot 3 used but A hold\(s\) only 2 slots"):
        backend.lora_shrink(case.x, case.A[:2], batch)
    with pytest.raises(ValueError, match="H_in"):
        backend.lora_shrink(case.x[:, :10], case.A, batch)
    with pytest.raises(ValueError, match="bfloat16"):
        backend.lora_shrink(case.x, case.A.bfloat16(), batch)
    with pytest.raises(ValueError, match="scaling"):  # 3 entries for a batch using slot 3
        backend.lora_expand(case.y, torch.zeros(3, RANK), case.B, case.scaling[:3], batch)
    with pytest.raises(ValueError, match="H_out"):
        backend.lora_expand(case.y[:, :5], torch.zeros(3, RANK), case.B, case.scaling, batch)
