"""A user-registered interface (the OPT example of docs/architectures.md) supports every method."""
import pytest
import torch
import transformers

import adapters_lib
from adapters_lib import ModelInterface, SublayerSite
from tests.adapters_lib.test_methods import METHOD_CONFIGS, randomize
from tests.conftest import tiny_inputs

OPT = ModelInterface(
    layers="decoder.layers",
    linears={"q": "self_attn.q_proj", "k": "self_attn.k_proj", "v": "self_attn.v_proj",
             "o": "self_attn.out_proj", "ffn_in": "fc1", "ffn_out": "fc2"},
    attn=SublayerSite(output="self_attn", residual="self_attn_layer_norm", residual_arg="input"),
    ffn=SublayerSite(output="fc2", residual="final_layer_norm", residual_arg="input"),
)


def tiny_opt():
    torch.manual_seed(0)
    config = transformers.OPTConfig(vocab_size=128, hidden_size=32, num_hidden_layers=2, ffn_dim=64,
                                    num_attention_heads=4, max_position_embeddings=64, word_embed_proj_dim=32)
    return transformers.AutoModel.from_config(config).eval()


@pytest.mark.parametrize("method", sorted(METHOD_CONFIGS))
def test_registered_interface_supports_every_method(method, tmp_path):
    adapters_lib.register_interface("opt", OPT)
    x = tiny_inputs()
    base = tiny_opt()(**x)[0]
    model = adapters_lib.init(tiny_opt())
    randomize(model.add_adapter("a", METHOD_CONFIGS[method]))
    model.set_active_adapters("a")
    out = model(**x)[0]
    assert (out - base).abs().max() > 1e-3
    model.save_adapter(tmp_path, "a")
    fresh = adapters_lib.init(tiny_opt())
    fresh.load_adapter(tmp_path, set_active=True)
    assert (fresh(**x)[0] - out).abs().max() <= 1e-5


def test_seq_bn_on_opt_matches_the_closed_form():
    """Pre-LN seq_bn: x + h + A(x + h) at the output site (AdapterHub's Llama semantics)."""
    adapters_lib.register_interface("opt", OPT)
    model = adapters_lib.init(tiny_opt())
    inst = model.add_adapter("a", "seq_bn[reduction_factor=4]", set_active=True)
    randomize(inst)
    layer = model.decoder.layers[1]
    seen = []
    layer.register_forward_pre_hook(lambda m, a, kw: seen.append(("in", a[0] if a else kw["hidden_states"])),
                                    with_kwargs=True)
    layer.register_forward_hook(lambda m, a, o: seen.append(("out", o[0] if isinstance(o, tuple) else o)))
    model(**tiny_inputs())
    layer_in, layer_out = seen[0][1], seen[1][1]
    # Recompute layer 1 by hand from its input, without hooks on the path.
    x = layer_in + layer.self_attn(layer.self_attn_layer_norm(layer_in))[0]  # no attn adapter in seq_bn
    h = nn_fc(layer, x)
    expected = x + h + inst.layers[1]["ffn"]["seq_bn"].branch(x + h)
    torch.testing.assert_close(layer_out, expected, rtol=1e-5, atol=1e-5)


def nn_fc(layer, x):
    """fc2(act(fc1(final_layer_norm(x)))) computed with the modules' functional weights (no hooks)."""
    f = torch.nn.functional
    y = f.layer_norm(x, (x.shape[-1],), layer.final_layer_norm.weight, layer.final_layer_norm.bias,
                     layer.final_layer_norm.eps)
    y = layer.activation_fn(f.linear(y, layer.fc1.weight, layer.fc1.bias))
    return f.linear(y, layer.fc2.weight, layer.fc2.bias)
