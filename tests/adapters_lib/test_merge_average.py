"""merge_adapter folds LoRA / IA3 into base weights; average_adapter averages parameters."""
import pytest
import torch

import adapters_lib
from tests.adapters_lib.test_methods import randomize
from tests.conftest import tiny_inputs, tiny_model


@pytest.mark.parametrize("config", ["lora[r=4,attn_matrices=['q','k','v','o'],intermediate_lora=True,output_lora=True]",
                                    "ia3[output_lora=True]", "lora[r=2]|ia3", "ia3[scale_inputs_of=('ffn_out',)]"])
def test_merge_matches_unmerged(model_type, config):
    x = tiny_inputs()
    model = adapters_lib.init(tiny_model(model_type))
    randomize(model.add_adapter("a", config))
    model.set_active_adapters("a")
    expected = model(**x)[0]
    model.merge_adapter("a")
    merged = model(**x)[0]
    assert (merged - expected).abs().max() <= 1e-4
    model.set_active_adapters(None)
    assert (model(**x)[0] - merged).abs().max() <= 1e-4  # the adapter now lives in the weights


def test_merge_refuses_bottlenecks():
    model = adapters_lib.init(tiny_model("bert"))
    model.add_adapter("a", "seq_bn")
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(adapters_lib.AdapterConfigError, match="cannot be merged"):
        model.merge_adapter("a")
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


@pytest.mark.parametrize("config", ["lora[r=4]", "seq_bn", "ia3"])
def test_average_is_the_weighted_sum(config):
    model = adapters_lib.init(tiny_model("llama"))
    randomize(model.add_adapter("a", config), seed=1)
    randomize(model.add_adapter("b", config), seed=2)
    avg = model.average_adapter("avg", ["a", "b"], weights=[0.25, 0.75])
    a, b = model.stitch.adapters["a"].state_dict(), model.stitch.adapters["b"].state_dict()
    for key, value in avg.state_dict().items():
        torch.testing.assert_close(value, 0.25 * a[key] + 0.75 * b[key])


def test_average_needs_one_config():
    model = adapters_lib.init(tiny_model("llama"))
    model.add_adapter("a", "lora[r=4]")
    model.add_adapter("b", "lora[r=8]")
    with pytest.raises(adapters_lib.AdapterConfigError, match="one config"):
        model.average_adapter("avg", ["a", "b"])
