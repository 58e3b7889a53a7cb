"""Bad adapters and bad inputs give clear, typed errors that name the adapter and its source."""
import json
from pathlib import Path

import pytest
from safetensors.torch import load_file, save_file

import adapters_lib
from serve.engine import (CorruptAdapterError, EmptyInputError, EngineClosedError, IncompatibleAdapterError,
                          InputTooLongError, InvalidAdapterError, InvalidInputError, PathOutsideRootsError,
                          QueueFullError, RankTooLargeError, UnknownAdapterError, UnsupportedAdapterError,
                          UnsupportedTaskError)
from tests.conftest import tiny_model
from tests.serve.helpers import METHOD_CONFIGS, make_engine, run, token_rows, write_adapter

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "adapterhub"


def load_error(engine, name: str) -> Exception:
    """The error of loading ``name`` into ``engine``."""
    async def main():
        async with engine:
            with pytest.raises(Exception) as info:
                await engine.load_adapter(name)
            return info.value

    return run(main())


def test_unknown_adapter(tmp_path):
    err = load_error(make_engine("bert", tmp_path), "nope")
    assert isinstance(err, UnknownAdapterError) and err.adapter == "nope"
    assert "'nope'" in str(err) and "not in the registry" in str(err)


def test_adapter_made_for_another_base(tmp_path):
    model = adapters_lib.init(tiny_model("bert", hidden_size=48))
    model.add_adapter("wide", "lora")
    model.save_adapter(tmp_path / "wide", "wide")
    err = load_error(make_engine("bert", tmp_path), "wide")
    assert isinstance(err, IncompatibleAdapterError)
    assert "'wide'" in str(err) and str(tmp_path / "wide") in str(err) and "hidden size 48" in str(err)


def test_adapterhub_checkpoint_for_another_architecture():
    engine = make_engine("bert", FIXTURES, allow_bin_weights=True)
    err = load_error(engine, "llama-seq_bn/adapter")
    assert isinstance(err, IncompatibleAdapterError) and "llama" in str(err)


def test_bin_weights_are_refused_unless_allowed():
    err = load_error(make_engine("bert", FIXTURES), "bert-seq_bn/adapter")
    assert isinstance(err, InvalidAdapterError) and "allow_bin_weights" in str(err)


def test_safetensors_fixture_loads_without_bin_permission():
    async def main(engine):
        async with engine:
            return await engine.load_adapter("bert-seq_bn/adapter_safetensors")

    info = run(main(make_engine("bert", FIXTURES)))
    assert info.methods == ("seq_bn",)


@pytest.mark.parametrize("damage", ["truncate", "garbage", "config"])
def test_corrupt_files(tmp_path, damage):
    write_adapter(tmp_path, "bert", "a", METHOD_CONFIGS["seq_bn"])
    weights, config = tmp_path / "a" / "adapter.safetensors", tmp_path / "a" / "adapter_config.json"
    if damage == "truncate":
        weights.write_bytes(weights.read_bytes()[:-64])
    elif damage == "garbage":
        weights.write_bytes(b"\x00" * 100)
    else:
        config.write_text(config.read_text()[:-10])
    err = load_error(make_engine("bert", tmp_path), "a")
    assert isinstance(err, CorruptAdapterError) and str(tmp_path / "a") in str(err)


def test_weights_that_do_not_match_the_config(tmp_path):
    write_adapter(tmp_path, "bert", "a", "lora[r=4]")
    path = tmp_path / "a" / "adapter_config.json"
    data = json.loads(path.read_text())
    data["config"]["r"] = 2
    path.write_text(json.dumps(data))
    err = load_error(make_engine("bert", tmp_path), "a")
    assert isinstance(err, InvalidAdapterError) and "size mismatch" in str(err)


@pytest.mark.parametrize("change", ["drop", "add"])
def test_weights_with_missing_or_extra_tensors(tmp_path, change):
    write_adapter(tmp_path, "bert", "a", "lora[r=4]")
    path = tmp_path / "a" / "adapter.safetensors"
    weights = load_file(path)
    first = sorted(weights)[0]
    if change == "drop":
        del weights[first]
    else:
        weights["layers.0.stray.weight"] = weights[first].clone()
    save_file(weights, path)
    engine = make_engine("bert", tmp_path)
    err = load_error(engine, "a")
    expected = f"missing keys ['{first}']" if change == "drop" else "unexpected keys ['layers.0.stray.weight']"
    assert isinstance(err, InvalidAdapterError) and expected in str(err)
    write_adapter(tmp_path, "bert", "b", "lora[r=4]")
    run(engine.load_adapter("b"))  # the template the failed load used still serves


@pytest.mark.parametrize("name", ["../outside", "/etc", "sub/../../outside", "link"])
def test_paths_outside_the_roots(tmp_path, name):
    root, outside = tmp_path / "root", tmp_path / "outside"
    write_adapter(outside.parent, "bert", "outside", METHOD_CONFIGS["lora"])
    (root / "sub").mkdir(parents=True)
    (root / "link").symlink_to(outside, target_is_directory=True)
    err = load_error(make_engine("bert", root), name)
    assert isinstance(err, PathOutsideRootsError) and "leaves the adapter roots" in str(err)


def test_rank_above_max(tmp_path):
    write_adapter(tmp_path, "bert", "big", "lora[r=8]")
    err = load_error(make_engine("bert", tmp_path, max_rank=4), "big")
    assert isinstance(err, RankTooLargeError) and "rank 8" in str(err) and "max rank 4" in str(err)


@pytest.mark.parametrize("config,reason", [
    ("seq_bn[non_linearity='mish']", "no serving kernel"),
    ("ia3|lora[attn_matrices=['v']]", "applies ia3 before lora"),
])
def test_options_the_slot_layout_cannot_express(tmp_path, config, reason):
    write_adapter(tmp_path, "bert", "odd", config)
    err = load_error(make_engine("bert", tmp_path), "odd")
    assert isinstance(err, UnsupportedAdapterError) and reason in str(err)


@pytest.mark.parametrize("inputs,error", [
    ([], EmptyInputError),
    ([""], EmptyInputError),
    (["  "], EmptyInputError),
    ([[]], EmptyInputError),
    ([list(range(5, 70))], InputTooLongError),
    ([[5, 1000]], InvalidInputError),
    ([[5, -1]], InvalidInputError),
    (["text without a tokenizer"], InvalidInputError),
    ([3.5], InvalidInputError),
])
def test_bad_inputs(inputs, error):
    async def main(engine):
        async with engine:
            with pytest.raises(error):
                await engine.embed(None, inputs)

    run(main(make_engine("bert")))


def test_a_full_queue_refuses_at_once_without_loading(tmp_path):
    write_adapter(tmp_path, "bert", "a", METHOD_CONFIGS["lora"])
    engine = make_engine("bert", tmp_path, max_queue=4, max_batch_size=4)

    async def main():
        async with engine:
            with pytest.raises(QueueFullError):
                await engine.embed("a", token_rows(5))
            assert engine.cache.stats().misses == 0
            assert len((await engine.embed("a", token_rows(4))).vectors) == 4

    run(main())


def test_classify_needs_a_classification_head(tmp_path):
    write_adapter(tmp_path, "bert", "a", METHOD_CONFIGS["lora"])

    async def main(engine):
        async with engine:
            for adapter in ("a", None):
                with pytest.raises(UnsupportedTaskError):
                    await engine.classify(adapter, token_rows(1))
            assert engine.cache.pinned("a") == 0

    run(main(make_engine("bert", tmp_path)))


def test_an_engine_that_is_not_running():
    with pytest.raises(EngineClosedError):
        run(make_engine("bert").embed(None, token_rows(1)))
