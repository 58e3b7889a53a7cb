"""PEFT checkpoints, compared live: a PEFT-saved LoRA / IA3 loads into Stitch and gives PEFT's outputs."""
import pytest
import torch

peft = pytest.importorskip("peft")

import adapters_lib  # noqa: E402
from adapters_lib.interface import INTERFACES  # noqa: E402
from tests.conftest import tiny_inputs, tiny_model  # noqa: E402


def _targets(model_type: str, roles: list[str]) -> list[str]:
    linears = INTERFACES.get(model_type).linears
    return [linears[r] for r in roles if r in linears]


def _peft_model(model_type: str, config):
    model = peft.get_peft_model(tiny_model(model_type), config)
    return model.eval()


def _compare(model_type: str, peft_config, tmp_path) -> float:
    x = tiny_inputs()
    peft_model = _peft_model(model_type, peft_config)
    with torch.no_grad():
        expected = peft_model(**x)[0]
    peft_model.save_pretrained(tmp_path)
    ours = adapters_lib.init(tiny_model(model_type))
    name = ours.load_adapter(tmp_path, set_active=True)
    base = tiny_model(model_type)(**x)[0]
    assert (expected - base).abs().max() > 1e-3, "the PEFT adapter should change the output"
    return (ours(**x)[0] - expected).abs().max().item(), name


def test_peft_lora_matches(model_type, tmp_path):
    roles = ["q", "k", "v", "qkv", "o", "ffn_gate", "ffn_in", "ffn_out"]
    config = peft.LoraConfig(r=4, lora_alpha=8, target_modules=_targets(model_type, roles),
                             init_lora_weights=False, fan_in_fan_out=model_type == "gpt2")
    diff, name = _compare(model_type, config, tmp_path)
    assert diff <= 1e-4


def test_peft_rslora_on_some_layers_matches(tmp_path):
    config = peft.LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"], use_rslora=True,
                             layers_to_transform=[1], layers_pattern="layers", init_lora_weights=False)
    diff, _ = _compare("llama", config, tmp_path)
    assert diff <= 1e-4


def test_peft_ia3_matches(model_type, tmp_path):
    targets = _targets(model_type, ["k", "v", "qkv", "ffn_out"])
    ff = _targets(model_type, ["ffn_out"])
    config = peft.IA3Config(target_modules=targets, feedforward_modules=ff, init_ia3_weights=False,
                            fan_in_fan_out=model_type == "gpt2")
    diff, _ = _compare(model_type, config, tmp_path)
    assert diff <= 1e-4


def test_peft_multi_adapter_batch_matches_adapter_names(tmp_path):
    """PEFT's mixed batch (adapter_names=...) equals Stitch running each row with its adapter."""
    x = tiny_inputs(batch=2)
    model = tiny_model("llama")
    cfgs = [peft.LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj", "down_proj"],
                            init_lora_weights=False) for _ in range(2)]
    torch.manual_seed(3)
    pm = peft.get_peft_model(model, cfgs[0], adapter_name="a")
    pm.add_adapter("b", cfgs[1])
    pm.eval()
    with torch.no_grad():
        mixed = pm(**x, adapter_names=["a", "b"])[0]
    pm.save_pretrained(tmp_path)
    ours = adapters_lib.init(tiny_model("llama"))
    ours.load_adapter(tmp_path / "a", load_as="a")
    ours.load_adapter(tmp_path / "b", load_as="b")
    for row, name in enumerate(["a", "b"]):
        ours.set_active_adapters(name)
        solo = ours(**{k: v[row:row + 1] for k, v in x.items()})[0]
        assert (solo[0] - mixed[row]).abs().max() <= 1e-4
