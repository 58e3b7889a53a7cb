"""Generation: continuous batching equals each request alone and a plain no-cache greedy loop over
adapters_lib's model (the oracle); sampling, stop conditions, streaming, cancellation, admission."""
import asyncio
from dataclasses import replace
from pathlib import Path

import pytest
import torch

import adapters_lib
from serve.engine import (Engine, EngineConfig, InputTooLongError, InvalidInputError, QueueFullError, SamplingParams,
                          UnknownAdapterError, UnsupportedTaskError)
from serve.engine.sampling import next_tokens
from tests.conftest import tiny_model
from tests.serve.helpers import METHOD_CONFIGS, oracle_embedding, run, tiny_tokenizer, token_rows, write_adapter

TOL = 1e-4
ADAPTERS = ("lora", "seq_bn", "ia3", "union")
GREEDY = SamplingParams(max_new_tokens=8, ignore_eos=True, return_logits=True)


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Tiny models run fastest on one intra-op thread; on a shared CPU more threads mostly wait on each other."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def write_adapters(root: Path, model_type: str, names=ADAPTERS) -> None:
    for seed, name in enumerate(names):
        write_adapter(root, model_type, name, METHOD_CONFIGS[name], seed=seed + 1)


def lm_engine(model_type: str, root: Path | None = None, tokenizer=None, attention: str = "sdpa", **config) -> Engine:
    roots = (root,) if root is not None else ()
    model = tiny_model(model_type, head="lm", attn_implementation=attention)
    return Engine(model, tokenizer, EngineConfig(adapter_roots=roots, **config))


def oracle_greedy(model_type: str, root: Path, adapter: str | None, prompt: list[int], steps: int):
    """Greedy tokens and per-step logits [steps, V] of adapters_lib's causal LM, recomputing the whole sequence."""
    model = adapters_lib.init(tiny_model(model_type, head="lm"))
    if adapter is not None:
        model.load_adapter(root / adapter, set_active=True)
    ids, logits = list(prompt), []
    with torch.no_grad():
        for _ in range(steps):
            logits.append(model(input_ids=torch.tensor([ids])).logits[0, -1])
            ids.append(int(logits[-1].argmax()))
    return ids[len(prompt):], torch.stack(logits)


async def staggered(engine: Engine, requests, after: int = 2):
    """Run the requests (adapter, prompt, params); request i starts once request i-1 has ``after`` chunks.
    Returns each request's chunks and the number of sequences running when it started."""
    ready = [asyncio.Event() for _ in requests]

    async def one(i, adapter, prompt, params):
        if i:
            await ready[i - 1].wait()
        running = engine.stats().generation.running
        chunks = []
        async with await engine.generate(adapter, prompt, params) as stream:
            async for chunk in stream:
                chunks.append(chunk)
                if len(chunks) == after:
                    ready[i].set()
        ready[i].set()
        return chunks, running

    return await asyncio.gather(*(one(i, *request) for i, request in enumerate(requests)))


def tokens_of(chunks) -> list[int]:
    return [t for chunk in chunks for t in chunk.token_ids]


def logits_of(chunks) -> torch.Tensor:
    return torch.stack([chunk.logits for chunk in chunks])


@pytest.mark.parametrize("model_type, attention", [("llama", "sdpa"), ("gpt2", "sdpa"), ("mistral", "sdpa"),
                                                     ("qwen2", "sdpa"), ("llama", "eager")])
def test_continuous_batch_equals_solo_and_the_no_cache_oracle(model_type, attention, tmp_path):
    write_adapters(tmp_path, model_type)
    prompts = token_rows(6, seed=3, lengths=(3, 7, 5, 9, 4, 6))
    lengths = (10, 5, 12, 8, 9, 7)  # the second request leaves first: the last row moves into its place
    names = ("lora", None, "seq_bn", "ia3", "lora", "union")
    requests = [(name, prompt, replace(GREEDY, max_new_tokens=n)) for name, prompt, n in zip(names, prompts, lengths)]
    engine = lm_engine(model_type, tmp_path, attention=attention, max_slots=4, max_wait_ms=0)

    async def main():
        async with engine:
            mixed = await staggered(engine, requests)
            solo = [await staggered(engine, [request]) for request in requests]
            return mixed, [chunks for ((chunks, _),) in solo], engine.stats().generation

    mixed, solo, stats = run(main())
    assert all(running >= 1 for _, running in mixed[1:]), "each request should join a running batch"
    assert stats.decode_batch.sum > stats.decode_steps, "decode steps should hold several sequences"
    for (adapter, prompt, params), (chunks, _), alone in zip(requests, mixed, solo):
        expected, expected_logits = oracle_greedy(model_type, tmp_path, adapter, prompt, params.max_new_tokens)
        assert tokens_of(chunks) == tokens_of(alone) == expected, adapter
        assert (logits_of(chunks) - logits_of(alone)).abs().max() <= TOL, adapter
        assert (logits_of(chunks) - expected_logits).abs().max() <= TOL, adapter
        assert chunks[-1].finish_reason == "length" and chunks[-1].completion_tokens == params.max_new_tokens
        assert all(chunk.finish_reason is None for chunk in chunks[:-1])


def test_serving_never_writes_the_base_weights(tmp_path):
    """GPT-2's linears have biases, and one-sequence decode steps have T = 1 row."""
    write_adapters(tmp_path, "gpt2")
    engine = lm_engine("gpt2", tmp_path, max_slots=4, max_wait_ms=0)
    before = {name: tensor.clone() for name, tensor in engine.model.state_dict().items()}
    prompt = token_rows(1, seed=4, lengths=(5,))[0]

    async def main():
        async with engine:
            for adapter in ADAPTERS:
                await staggered(engine, [(adapter, prompt, replace(GREEDY, max_new_tokens=3))])

    run(main())
    changed = [name for name, tensor in engine.model.state_dict().items() if not torch.equal(tensor, before[name])]
    assert changed == []


def test_many_requests_through_a_small_batch(tmp_path):
    """More requests than the batch holds, arriving at random, prefills split by the token budget."""
    write_adapters(tmp_path, "llama")
    names = [*ADAPTERS, None]
    g = torch.Generator().manual_seed(11)
    prompts = token_rows(14, seed=12, lengths=(2, 9, 5, 12, 3, 7, 4))
    requests = [(names[i % len(names)], prompt, replace(GREEDY, max_new_tokens=int(torch.randint(1, 13, (), generator=g))))
                for i, prompt in enumerate(prompts)]
    delays = (torch.rand(len(requests), generator=g) * 0.05).tolist()
    engine = lm_engine("llama", tmp_path, max_batch_size=3, max_batch_tokens=24, max_slots=3, max_wait_ms=1)

    async def one(delay, request):
        await asyncio.sleep(delay)
        return await engine.generate_text(*request)

    async def main():
        async with engine:
            return await asyncio.gather(*(one(d, r) for d, r in zip(delays, requests))), engine.stats().generation

    results, stats = run(main())
    assert stats.started == stats.finished == len(requests) and stats.running == stats.waiting == 0
    assert stats.prefill_steps >= len(requests) / 3 and stats.decode_batch.sum > stats.decode_steps
    assert engine.generation.runner.cache.layers[0].keys.shape[0] <= 3, "the KV cache holds the running rows only"
    for (adapter, prompt, params), result in zip(requests, results):
        assert result.token_ids == oracle_greedy("llama", tmp_path, adapter, prompt, params.max_new_tokens)[0]
        assert result.finish_reason == "length" and result.prompt_tokens == len(prompt)


def test_seeded_sampling_is_reproducible_whatever_shares_the_batch(tmp_path):
    write_adapters(tmp_path, "llama", ("lora",))
    sampled = SamplingParams(max_new_tokens=10, temperature=0.9, top_p=0.9, top_k=40, seed=7, ignore_eos=True)
    prompt = token_rows(1, seed=5)[0]
    others = [("lora", p, replace(sampled, seed=s)) for p, s in zip(token_rows(3, seed=6), (1, 2, None))]
    engine = lm_engine("llama", tmp_path, max_wait_ms=0)

    async def main():
        async with engine:
            alone = await engine.generate_text("lora", prompt, sampled)
            mixed = await staggered(engine, [others[0], ("lora", prompt, sampled), *others[1:]], after=1)
            reseeded = await engine.generate_text("lora", prompt, replace(sampled, seed=8))
            return alone, mixed, reseeded

    alone, mixed, reseeded = run(main())
    assert tokens_of(mixed[1][0]) == alone.token_ids
    assert reseeded.token_ids != alone.token_ids


def test_sampling_filters():
    logits = torch.tensor([[0.0, 3.0, 2.9, 1.0, -1.0]] * 2)
    options = [SamplingParams(temperature=5.0, top_k=2), SamplingParams(temperature=5.0, top_p=0.3)]
    draws = set()
    for seed in range(40):
        generators = [torch.Generator().manual_seed(seed), torch.Generator().manual_seed(seed)]
        draws.add(tuple(next_tokens(logits, options, generators)))
    assert {first for first, _ in draws} == {1, 2}   # top_k=2: the two largest, both drawn
    assert {second for _, second in draws} == {1, 2}  # top_p: 1 alone has ~0.26 < 0.3, so 2 joins
    assert next_tokens(logits, [SamplingParams()] * 2, [None, None]) == [1, 1]
    with pytest.raises(InvalidInputError, match="top_p"):
        SamplingParams(top_p=0)


def test_stop_strings_stop_tokens_and_length_with_streaming(tmp_path):
    engine = lm_engine("llama", tokenizer=tiny_tokenizer(), max_wait_ms=0)
    prompt = "w5 w17 w33"
    base = SamplingParams(max_new_tokens=12, ignore_eos=True)

    async def streamed(params):
        async with await engine.generate(None, prompt, params) as stream:
            return [chunk async for chunk in stream]

    async def main():
        async with engine:
            full = await engine.generate_text(None, prompt, base)
            words = full.text.split()
            across = f"{words[2][1:]} {words[3][:2]}"  # from the 3rd word into the 4th
            stop_token = full.token_ids[2]
            results = {"full": full, "word": await engine.generate_text(None, prompt, replace(base, stop=(words[3],))),
                       "across": await engine.generate_text(None, prompt, replace(base, stop=("zzz", across))),
                       "token": await engine.generate_text(None, prompt, replace(base, stop_token_ids=(stop_token,)))}
            return results, across, stop_token, await streamed(replace(base, stop=(across,)))

    results, across, stop_token, chunks = run(main())
    full = results["full"]
    assert full.finish_reason == "length" and full.completion_tokens == 12 and len(full.token_ids) == 12
    assert full.text == " " + engine.tokenizer.decode(full.token_ids)
    for key, stop in (("word", full.text.split()[3]), ("across", across)):
        assert results[key].finish_reason == "stop"
        assert results[key].text == full.text[:full.text.find(stop)], key
        assert results[key].token_ids == full.token_ids[:len(results[key].token_ids)]
    first = full.token_ids.index(stop_token)
    assert results["token"].finish_reason == "stop" and results["token"].token_ids == full.token_ids[:first + 1]
    assert "".join(chunk.text for chunk in chunks) == results["across"].text
    assert chunks[-1].finish_reason == "stop" and all(c.finish_reason is None for c in chunks[:-1])


def test_a_cancelled_request_frees_its_place(tmp_path):
    write_adapters(tmp_path, "llama", ("lora",))
    engine = lm_engine("llama", tmp_path, max_batch_size=1, max_wait_ms=0)
    long = SamplingParams(max_new_tokens=40, ignore_eos=True)
    prompt = token_rows(1, seed=8)[0]

    async def main():
        async with engine:
            stream = await engine.generate("lora", prompt, long)
            waiting = await engine.generate("lora", prompt, long)   # no room: it waits, then leaves
            read = [await stream.__anext__() for _ in range(3)]
            await waiting.aclose()
            await stream.aclose()
            assert engine.stats().generation.running == 0 and engine.cache.pinned("lora") == 0
            reader = asyncio.create_task(engine.generate_text("lora", prompt, long))
            while engine.stats().generation.generated_tokens < 10:
                await asyncio.sleep(0.005)
            reader.cancel()
            await asyncio.gather(reader, return_exceptions=True)
            after = await engine.generate_text("lora", prompt, replace(long, max_new_tokens=6))
            return read, after, engine.stats()

    read, after, stats = run(main())
    assert len(read) == 3 and after.completion_tokens == 6 and after.finish_reason == "length"
    assert stats.generation.cancelled == 3 and stats.generation.running == stats.generation.waiting == 0
    assert stats.scheduler.queued == 0


def test_admission_and_bad_requests(tmp_path):
    engine = lm_engine("llama", tmp_path, max_queue=2, max_wait_ms=0)

    async def main():
        async with engine:
            first, second = await engine.generate(None, [5, 6]), await engine.generate(None, [7, 8])
            with pytest.raises(QueueFullError):
                await engine.generate(None, [9, 10])
            await first.aclose()
            await second.aclose()
            with pytest.raises(UnknownAdapterError):
                await engine.generate("missing", [5, 6])
            with pytest.raises(InputTooLongError, match="may not exceed 64"):
                await engine.generate(None, [5] * 60, SamplingParams(max_new_tokens=5))
            with pytest.raises(InvalidInputError, match="tokenizer"):
                await engine.generate(None, [5, 6], SamplingParams(stop=("x",)))
            return await engine.generate_text(None, [5, 6], SamplingParams(max_new_tokens=60, ignore_eos=True))

    assert run(main()).completion_tokens == 60
    with pytest.raises(UnsupportedTaskError, match="cannot generate"):
        run(Engine(tiny_model("llama"), None, EngineConfig()).generate(None, [5, 6]))
    assert not Engine(tiny_model("bert"), None, EngineConfig()).can_generate
    windowed = Engine(tiny_model("mistral", head="lm", sliding_window=16), None, EngineConfig())
    assert windowed.max_context_tokens == 16  # a sequence never outgrows the sliding window


def test_chat_prompt_uses_the_tokenizer_template():
    tokenizer = tiny_tokenizer()
    engine = lm_engine("llama", tokenizer=tokenizer)
    with pytest.raises(UnsupportedTaskError, match="chat template"):
        engine.chat_prompt([{"role": "user", "content": "w5"}])
    tokenizer.chat_template = ("{% for m in messages %}{{ m['role'] }} {{ m['content'] }} {% endfor %}"
                               "{% if add_generation_prompt %}w9{% endif %}")
    assert engine.chat_prompt([{"role": "user", "content": "w5 w6"}]) == "user w5 w6 w9"


def test_embed_and_generate_share_a_causal_lm_engine(tmp_path):
    engine = lm_engine("llama", max_wait_ms=0)
    rows = token_rows(2, seed=9)

    async def main():
        async with engine:
            generated, embedded = await asyncio.gather(
                engine.generate_text(None, rows[0], GREEDY), engine.embed(None, rows))
            return generated, embedded

    generated, embedded = run(main())
    base = tiny_model("llama", head="lm").base_model
    assert (embedded.vectors - torch.stack([oracle_embedding(base, ids) for ids in rows])).abs().max() <= TOL
    assert generated.token_ids == oracle_greedy("llama", tmp_path, None, rows[0], 8)[0]


def test_a_causal_checkpoint_loads_with_its_lm_head(tmp_path):
    tiny_model("gpt2", head="lm").save_pretrained(tmp_path / "lm")
    tiny_tokenizer().save_pretrained(tmp_path / "lm")
    tiny_model("gpt2").save_pretrained(tmp_path / "base")
    tiny_tokenizer().save_pretrained(tmp_path / "base")
    assert Engine.from_config(EngineConfig(model=str(tmp_path / "lm"))).can_generate
    assert not Engine.from_config(EngineConfig(model=str(tmp_path / "base"))).can_generate
