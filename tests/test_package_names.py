"""Our top-level package is called `kernels`, like the PyPI `kernels` that transformers probes for."""
import importlib

import transformers
from transformers.utils import import_utils


def test_transformers_does_not_take_our_kernels_for_hub_kernels():
    ours = importlib.import_module("kernels")
    assert hasattr(ours, "lora_shrink"), "`kernels` should resolve to Stitch's package"
    import_utils.is_kernels_available.cache_clear()
    assert import_utils.is_kernels_available() is False
    assert not hasattr(ours, "get_kernel")


def test_a_model_loads_without_hub_kernels(tmp_path):
    config = transformers.BertConfig(vocab_size=50, hidden_size=16, num_hidden_layers=1,
                                     num_attention_heads=2, intermediate_size=32)
    transformers.BertModel(config).save_pretrained(tmp_path)
    model = transformers.AutoModel.from_pretrained(tmp_path)
    assert model.config.hidden_size == 16
