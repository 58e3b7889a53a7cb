"""AdapterHub checkpoints (fixtures made by tests/fixtures/make_adapterhub_fixtures.sh) give AdapterHub's outputs."""
import json
from pathlib import Path

import pytest
import torch
import transformers
from safetensors.torch import load_file

import adapters_lib

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "adapterhub"
MANIFEST = json.loads((FIXTURES / "manifest.json").read_text())
CASES = {case["name"]: case for case in MANIFEST["cases"]}
INPUT = load_file(FIXTURES / MANIFEST["input"])


def _model(case):
    return adapters_lib.init(transformers.AutoModel.from_pretrained(FIXTURES / case["base_dir"]).eval())


def _variants():
    for name, case in CASES.items():
        yield pytest.param(case, case["adapter_dir"], id=name)
        if case.get("adapter_safetensors_dir"):
            yield pytest.param(case, case["adapter_safetensors_dir"], id=f"{name}-safetensors")


@pytest.mark.parametrize("case,adapter_dir", list(_variants()))
def test_adapterhub_checkpoint_reproduces_outputs(case, adapter_dir):
    expected = load_file(FIXTURES / case["expected"])
    model = _model(case)
    name = model.load_adapter(FIXTURES / adapter_dir, set_active=True)
    assert name == case["adapter_name"]
    out = model(**INPUT)
    got = out.logits if case["output_key"] == "logits" else out[0]
    assert (got - expected[case["output_key"]]).abs().max() <= MANIFEST["tolerance_max_abs"]
    assert (got - expected[case["base_output_key"]]).abs().max() > 1e-2


def test_adapterhub_head_labels_and_resave(tmp_path):
    case = CASES["bert-head-seq_bn"]
    model = _model(case)
    model.load_adapter(FIXTURES / case["adapter_dir"], set_active=True)
    assert model.stitch.heads["a"].config.labels() == ["LABEL_0", "LABEL_1"]
    expected = model(**INPUT).logits
    model.save_adapter(tmp_path / "a", "a")
    again = _model(case)
    again.load_adapter(tmp_path / "a", set_active=True)
    torch.testing.assert_close(again(**INPUT).logits, expected, rtol=0, atol=1e-6)


def test_adapterhub_checkpoint_for_another_base_is_refused():
    case = CASES["llama-seq_bn"]
    bert = _model(CASES["bert-seq_bn"])
    with pytest.raises(adapters_lib.AdapterLoadError, match=r"llama.*hidden size 32.*bert|made for llama"):
        bert.load_adapter(FIXTURES / case["adapter_dir"])
