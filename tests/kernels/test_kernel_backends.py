"""Backend selection, the package surface, and importing without triton."""
from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import kernels
import kernels.reference
import kernels.torch
from kernels import BACKEND_ENV_VAR, AdapterBatch, get_backend

REPO = Path(__file__).resolve().parents[2]
needs_triton = pytest.mark.skipif(importlib.util.find_spec("triton") is None, reason="triton not installed")


@pytest.fixture(autouse=True)
def no_forced_backend(monkeypatch):
    monkeypatch.delenv(BACKEND_ENV_VAR, raising=False)


def test_cpu_gets_the_torch_backend():
    assert get_backend("cpu") is kernels.torch
    assert get_backend(torch.device("cpu")) is kernels.torch


def test_a_name_forces_a_backend():
    assert get_backend("cpu", name="reference") is kernels.reference
    assert get_backend("cpu", name="TORCH") is kernels.torch


def test_the_environment_variable_forces_a_backend(monkeypatch):
    monkeypatch.setenv(BACKEND_ENV_VAR, "reference")
    assert get_backend("cpu") is kernels.reference
    assert get_backend("cpu", name="torch") is kernels.torch  # an explicit name wins


def test_package_ops_follow_the_forced_backend(monkeypatch):
    calls = []
    monkeypatch.setattr(kernels.reference, "lora_shrink", lambda x, A, batch: calls.append("reference"))
    monkeypatch.setenv(BACKEND_ENV_VAR, "reference")
    batch = AdapterBatch.from_slots(torch.tensor([0]))
    kernels.lora_shrink(torch.zeros(1, 4), torch.zeros(1, 2, 4), batch)
    assert calls == ["reference"]


def test_an_unknown_name_lists_the_valid_ones(monkeypatch):
    with pytest.raises(ValueError, match="unknown kernel backend 'cutlass'.*reference, torch, triton"):
        get_backend("cpu", name="cutlass")
    monkeypatch.setenv(BACKEND_ENV_VAR, "numba")
    with pytest.raises(ValueError, match=f"'numba' \\(from {BACKEND_ENV_VAR}\\).*reference, torch, triton"):
        get_backend("cpu")


@needs_triton
def test_cuda_gets_the_triton_backend():
    assert get_backend("cuda").NAME == "triton"


@needs_triton
def test_triton_refuses_cpu_tensors_outside_the_interpreter(monkeypatch):
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    backend = get_backend("cpu", name="triton")
    batch = AdapterBatch.from_slots(torch.tensor([0]))
    with pytest.raises(ValueError, match="needs CUDA tensors.*TRITON_INTERPRET=1"):
        backend.lora_shrink(torch.zeros(1, 4), torch.zeros(1, 2, 4), batch)


def test_package_surface():
    for name in ("lora_shrink", "lora_expand", "bottleneck", "ia3_scale", "AdapterBatch", "get_backend"):
        assert hasattr(kernels, name)
    # transformers probes for a PyPI package also called `kernels` through these names
    assert not hasattr(kernels, "__version__")
    assert not hasattr(kernels, "get_kernel")


def test_every_backend_has_the_same_signatures():
    import inspect
    backends = [kernels.reference, kernels.torch]
    if importlib.util.find_spec("triton") is not None:
        backends.append(get_backend(name="triton"))
    for name in ("lora_shrink", "lora_expand", "bottleneck", "ia3_scale"):
        expected = list(inspect.signature(getattr(kernels.ops, name)).parameters)
        for backend in backends:
            assert list(inspect.signature(getattr(backend, name)).parameters) == expected


_WITHOUT_TRITON = """
import sys
sys.modules["triton"] = None  # makes `import triton` raise ImportError
import torch, kernels
assert kernels.get_backend("cpu").NAME == "torch"
assert kernels.get_backend("cuda").NAME == "torch"  # falls back, with a warning
try:
    kernels.get_backend("cpu", name="triton")
except ImportError as err:
    assert "needs the `triton` package" in str(err)
else:
    raise AssertionError("forcing triton without triton must fail")
batch = kernels.AdapterBatch.from_slots(torch.tensor([0, -1]))
u = kernels.lora_shrink(torch.ones(2, 3), torch.ones(1, 2, 3), batch)
assert u.tolist() == [[3.0, 3.0], [0.0, 0.0]]
print("ok")
"""


def test_the_package_works_without_triton():
    proc = subprocess.run([sys.executable, "-c", _WITHOUT_TRITON], cwd=REPO, capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "ok"
