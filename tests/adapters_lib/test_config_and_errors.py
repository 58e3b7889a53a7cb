"""Config strings, the method registry, and clear errors for bad input."""
import json

import pytest
import torch
from safetensors.torch import save_file

import adapters_lib
from adapters_lib import AdapterConfigError, AdapterLoadError, parse_config_string
from tests.conftest import tiny_inputs, tiny_model


def test_config_strings_and_aliases():
    lora = parse_config_string("lora[r=16,alpha=32,attn_matrices=['q','k']]")
    assert (lora.method, lora.r, lora.scaling, lora.attn_matrices) == ("lora", 16, 2.0, ("q", "k"))
    assert parse_config_string("pfeiffer").method == "seq_bn"
    assert parse_config_string("houlsby").mh_adapter is True
    assert parse_config_string("parallel").scaling == 4.0
    union = parse_config_string("seq_bn[reduction_factor={'0': 4, 'default': 8}]|lora")
    assert [p.method for p in union.parts()] == ["seq_bn", "lora"]
    assert union.parts()[0].bottleneck_size(0, 32) == 8 and union.parts()[0].bottleneck_size(1, 32) == 4


def test_config_dict_roundtrip():
    config = parse_config_string("double_seq_bn[non_linearity='gelu']|ia3")
    again = adapters_lib.resolve_config(json.loads(json.dumps(config.to_dict())))
    assert again == config


@pytest.mark.parametrize("text,message", [
    ("nosuch", r"unknown adapter method 'nosuch'; valid methods: .*lora.*seq_bn"),
    ("lora[rank=4]", r"unknown field\(s\) \['rank'\] for method 'lora'; valid fields: .*alpha.*r"),
    ("lora[r=0]", r"invalid config for method 'lora'"),
    ("lora[r=4", r"malformed config string"),
    ("lora[4]", r"malformed config string .*expected name=value"),
    ("seq_bn[non_linearity='nope']", r"unknown non_linearity 'nope'"),
    ("lora|lora", r"a union uses each method once"),
])
def test_bad_config_strings_are_named(text, message):
    with pytest.raises(AdapterConfigError, match=message):
        parse_config_string(text)


def test_unknown_architecture_lists_supported():
    model = tiny_model("bert")
    model.config.model_type = "nosuch"
    with pytest.raises(AdapterConfigError, match=r"no adapter interface for model type 'nosuch'; supported: .*llama"):
        adapters_lib.init(model)


def test_duplicate_and_unknown_adapter_names():
    model = adapters_lib.init(tiny_model("bert"))
    model.add_adapter("a", "lora")
    with pytest.raises(AdapterConfigError, match="exists already"):
        model.add_adapter("a", "lora")
    with pytest.raises(AdapterConfigError, match=r"no adapter named 'b'; this model has: a"):
        model.set_active_adapters("b")


def test_directory_without_config_or_weights(tmp_path):
    model = adapters_lib.init(tiny_model("bert"))
    with pytest.raises(AdapterLoadError, match="no adapter_config.json"):
        model.load_adapter(tmp_path)
    model.add_adapter("a", "lora")
    model.save_adapter(tmp_path / "a", "a")
    (tmp_path / "a" / "adapter.safetensors").unlink()
    with pytest.raises(AdapterLoadError, match="no weights file adapter.safetensors"):
        model.load_adapter(tmp_path / "a")


def test_corrupt_weights_are_reported(tmp_path):
    model = adapters_lib.init(tiny_model("bert"))
    model.add_adapter("a", "lora")
    model.save_adapter(tmp_path / "a", "a")
    (tmp_path / "a" / "adapter.safetensors").write_bytes(b"\x00garbage")
    with pytest.raises(AdapterLoadError, match="not a valid safetensors file"):
        model.load_adapter(tmp_path / "a")


def test_checkpoint_for_another_base_names_both(tmp_path):
    llama = adapters_lib.init(tiny_model("llama"))
    llama.add_adapter("a", "lora")
    llama.save_adapter(tmp_path / "a", "a")
    bert = adapters_lib.init(tiny_model("bert", hidden_size=48))
    with pytest.raises(AdapterLoadError, match=r"made for llama \(hidden size 32, 2 layers\), but the model is "
                                               r"bert \(hidden size 48, 2 layers\)"):
        bert.load_adapter(tmp_path / "a")


def test_rank_mismatch_is_reported(tmp_path):
    model = adapters_lib.init(tiny_model("bert"))
    model.add_adapter("a", "lora[r=4]")
    model.save_adapter(tmp_path / "a", "a")
    config_path = tmp_path / "a" / "adapter_config.json"
    data = json.loads(config_path.read_text())
    data["config"]["r"] = 8
    config_path.write_text(json.dumps(data))
    with pytest.raises(AdapterLoadError, match=r"lora_A has shape \(4, 32\), the config needs \(8, 32\)"):
        model.load_adapter(tmp_path / "a")


def test_no_pickle_in_own_format(tmp_path):
    model = adapters_lib.init(tiny_model("bert"))
    model.add_adapter("a", "seq_bn")
    model.add_classification_head("a", num_labels=2, id2label={0: "neg", 1: "pos"})
    out = model.save_adapter(tmp_path / "a", "a", metadata={"task": "sst2"})
    assert sorted(p.name for p in out.iterdir()) == ["adapter.safetensors", "adapter_config.json",
                                                     "head.safetensors", "head_config.json"]
    data = json.loads((out / "adapter_config.json").read_text())
    assert data["base_model"]["model_type"] == "bert" and data["metadata"] == {"task": "sst2"}
    assert data["library_version"]


class Unpicklable:
    """Any class: weights_only loading must refuse to rebuild it."""


def test_bin_loading_refuses_pickled_objects(tmp_path):
    """AdapterHub .bin files are read with weights_only=True: arbitrary objects are refused."""
    from adapters_lib.io import read_torch_weights

    torch.save({"x": torch.zeros(1), "obj": Unpicklable()}, tmp_path / "w.bin")
    with pytest.raises(AdapterLoadError, match="cannot be loaded safely"):
        read_torch_weights(tmp_path / "w.bin", "test")


def test_post_ln_model_refuses_original_ln_after_false():
    model = adapters_lib.init(tiny_model("bert"))
    with pytest.raises(AdapterConfigError, match="original_ln_after=False is not supported on post-LN"):
        model.add_adapter("a", "seq_bn[original_ln_after=False]")


def test_classification_head_pools_last_token_on_causal_models():
    model = adapters_lib.init(tiny_model("llama"))
    model.add_adapter("a", "lora")
    model.add_classification_head("a", num_labels=3)
    model.set_active_adapters("a")
    x = tiny_inputs(batch=2, seq=5)
    mask = x["attention_mask"].clone()
    mask[1, 3:] = 0
    logits = model(input_ids=x["input_ids"], attention_mask=mask).logits
    solo = model(input_ids=x["input_ids"][1:, :3], attention_mask=mask[1:, :3]).logits
    assert logits.shape == (2, 3)
    torch.testing.assert_close(logits[1:], solo, rtol=1e-4, atol=1e-5)
