"""Every method on every architecture: it changes the output, round-trips through disk, and trains alone."""
import pytest
import torch

import adapters_lib
from tests.conftest import tiny_inputs, tiny_model

METHOD_CONFIGS = {
    "seq_bn": "seq_bn[reduction_factor=4]",
    "double_seq_bn": "double_seq_bn[reduction_factor=4]",
    "par_bn": "par_bn",
    "scaled_par_bn": "scaled_par_bn",
    "lora": "lora[r=4,alpha=8,attn_matrices=['q','k','v','o'],intermediate_lora=True,output_lora=True]",
    "ia3": "ia3[output_lora=True]",
    "union": "seq_bn[reduction_factor=4]|lora[r=2]",
}


def randomize(module: torch.nn.Module, seed: int = 0) -> None:
    """Non-identity weights: LoRA B, parallel up-projections and IA3 vectors start as identities."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.2 + (1.0 if p.dim() == 1 and "vector" in str(p) else 0.0))


def adapted(model_type: str, config: str, seed: int = 0):
    model = adapters_lib.init(tiny_model(model_type, seed=seed))
    randomize(model.add_adapter("a", config), seed)
    model.set_active_adapters("a")
    return model


@pytest.mark.parametrize("method", sorted(METHOD_CONFIGS))
def test_adapter_changes_output_and_deactivates(model_type, method):
    x = tiny_inputs()
    base = tiny_model(model_type)(**x)[0]
    model = adapted(model_type, METHOD_CONFIGS[method])
    assert (model(**x)[0] - base).abs().max() > 1e-3
    model.set_active_adapters(None)
    torch.testing.assert_close(model(**x)[0], base, rtol=0, atol=0)


@pytest.mark.parametrize("method", sorted(METHOD_CONFIGS))
def test_save_load_roundtrip(model_type, method, tmp_path):
    x = tiny_inputs()
    model = adapted(model_type, METHOD_CONFIGS[method])
    expected = model(**x)[0]
    model.save_adapter(tmp_path / "a", "a")
    fresh = adapters_lib.init(tiny_model(model_type))
    assert fresh.load_adapter(tmp_path / "a", set_active=True) == "a"
    assert (fresh(**x)[0] - expected).abs().max() <= 1e-5


@pytest.mark.parametrize("method", sorted(METHOD_CONFIGS))
def test_training_touches_only_the_active_adapter(model_type, method):
    model = adapters_lib.init(tiny_model(model_type))
    model.add_adapter("other", METHOD_CONFIGS[method])
    randomize(model.add_adapter("a", METHOD_CONFIGS[method]))
    model.add_classification_head("a", num_labels=3)
    model.train_adapter("a")
    before = {k: v.clone() for k, v in model.state_dict().items()}
    trainable = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(trainable, lr=1e-2)
    x = tiny_inputs(batch=4)
    for _ in range(3):
        loss = model(**x, labels=torch.tensor([0, 1, 2, 1])).loss
        loss.backward()
        opt.step()
        opt.zero_grad()
    after = model.state_dict()
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    own = {k for k in before if k.startswith(("stitch.adapters.a.", "stitch.heads.a."))}
    assert changed and changed <= own, sorted(changed - own)[:5]
    assert any(k.startswith("stitch.adapters.a.") for k in changed)
    assert any(k.startswith("stitch.heads.a.") for k in changed)
