"""AdapterCache: LRU order, pins, single flight, cancellation, failures, the host byte budget, counters."""
import asyncio
import threading
import time

import pytest
import torch

from serve.engine import CorruptAdapterError, UnknownAdapterError
from tests.serve.helpers import METHOD_CONFIGS, make_engine, run, token_rows, write_adapter


@pytest.fixture
def adapters(tmp_path):
    """Five LoRA adapters a..e (same size) under tmp_path."""
    for i, name in enumerate("abcde"):
        write_adapter(tmp_path, "bert", name, METHOD_CONFIGS["lora"], seed=i)
    return tmp_path


def slow_loads(engine, seconds: float) -> list[str]:
    """Make every read take ``seconds`` longer; returns the names read, in order."""
    loaded, read = [], engine.loader.read

    def slow(name, *args):
        time.sleep(seconds)
        loaded.append(name)
        return read(name, *args)

    engine.loader.read = slow
    return loaded


async def touch(engine, *names):
    for name in names:
        lease = await engine.cache.acquire(name)
        engine.cache.release(lease)


def test_lru_order_decides_the_eviction(adapters):
    engine = make_engine("bert", adapters, max_slots=2)

    async def main():
        await touch(engine, "a", "b", "a", "c")  # b is the least recently used when c needs a slot
        assert engine.cache.resident() == ["a", "c"]
        await touch(engine, "d")
        assert engine.cache.resident() == ["c", "d"]

    run(main())
    stats = engine.cache.stats()
    assert (stats.device_hits, stats.misses, stats.device_evictions, stats.loads) == (1, 4, 2, 4)
    assert stats.slots_used == 2 and stats.load_seconds > 0 and stats.bytes_loaded > 0


def test_pinned_adapters_are_never_evicted(adapters):
    engine = make_engine("bert", adapters, max_slots=2)

    async def main():
        a, b = await engine.cache.acquire("a"), await engine.cache.acquire("b")
        waiting = asyncio.ensure_future(engine.cache.acquire("c"))
        await asyncio.sleep(0.3)
        assert not waiting.done(), "every slot is pinned: c must wait"
        assert engine.cache.resident() == ["a", "b"]
        engine.cache.release(b)
        c = await asyncio.wait_for(waiting, 5)
        assert engine.cache.resident() == ["a", "c"] and c.slot == b.slot
        engine.cache.release(a)
        engine.cache.release(c)

    run(main())


def test_concurrent_requests_for_a_cold_adapter_load_it_once(adapters):
    engine = make_engine("bert", adapters)
    loaded = slow_loads(engine, 0.2)

    async def main():
        leases = await asyncio.gather(*(engine.cache.acquire("a") for _ in range(8)))
        assert len({lease.slot for lease in leases}) == 1 and engine.cache.pinned("a") == 8
        for lease in leases:
            engine.cache.release(lease)

    run(main())
    assert loaded == ["a"]
    assert engine.cache.stats().loads == 1 and engine.cache.pinned("a") == 0


def test_cold_adapters_are_read_one_at_a_time_on_one_thread(adapters):
    engine = make_engine("bert", adapters)
    read, busy, seen = engine.loader.read, [], []

    def recorded(name, *args):
        busy.append(name)
        seen.append((threading.current_thread().name, len(busy)))
        time.sleep(0.05)
        busy.remove(name)
        return read(name, *args)

    engine.loader.read = recorded

    async def main():
        await asyncio.gather(*(touch(engine, name) for name in "abcd"))

    run(main())
    assert len(seen) == 4 and all(depth == 1 for _, depth in seen)
    assert len({thread for thread, _ in seen}) == 1 and seen[0][0].startswith("stitch-read")
    assert engine.cache.stats().loads == 4


@pytest.mark.parametrize("threads, waits", [(2, True), (1, False)])
def test_a_read_waits_for_the_running_step_when_cpu_steps_run_parallel_regions(adapters, threads, waits):
    """With several intra-op threads a read would stall a CPU step's parallel regions: it runs between steps."""
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        engine = make_engine("bert", adapters)
    finally:
        torch.set_num_threads(before)
    read, started = engine.loader.read, threading.Event()

    def recorded(name, *args):
        started.set()
        return read(name, *args)

    engine.loader.read = recorded

    async def main():
        with engine.slots.lock:                     # a step is running
            load = asyncio.ensure_future(touch(engine, "a"))
            await asyncio.sleep(0.3)
            assert started.is_set() != waits
        await asyncio.wait_for(load, 5)

    run(main())
    assert engine.cache.resident() == ["a"]


def test_a_cancelled_request_does_not_cancel_the_load_others_wait_for(adapters):
    engine = make_engine("bert", adapters)
    loaded = slow_loads(engine, 0.3)

    async def main():
        first = asyncio.ensure_future(engine.cache.acquire("a"))
        second = asyncio.ensure_future(engine.cache.acquire("a"))
        await asyncio.sleep(0.1)
        first.cancel()
        lease = await asyncio.wait_for(second, 5)
        assert first.cancelled() and engine.cache.pinned("a") == 1
        engine.cache.release(lease)

    run(main())
    assert loaded == ["a"] and engine.cache.resident() == ["a"]


def test_a_failed_load_leaves_the_other_adapters_serving(adapters):
    (adapters / "a" / "adapter.safetensors").write_bytes(b"not a safetensors file")
    engine = make_engine("bert", adapters, max_slots=2, max_wait_ms=50)
    rows = token_rows(2)

    async def main():
        async with engine:
            before = (await engine.embed("b", rows)).vectors
            results = await asyncio.gather(engine.embed("a", rows), engine.embed("b", rows), return_exceptions=True)
            assert isinstance(results[0], CorruptAdapterError)
            assert (results[1].vectors - before).abs().max() == 0
            with pytest.raises(UnknownAdapterError):
                await engine.embed("missing", rows)
            assert (await engine.embed("b", rows)).vectors.equal(before)

    run(main())
    assert engine.cache.resident() == ["b"]
    stats = engine.cache.stats()
    assert stats.load_failures == 2 and stats.slots_used == 1


def test_host_tier_keeps_to_its_byte_budget(adapters):
    engine = make_engine("bert", adapters, max_slots=1)

    async def main():
        await touch(engine, "a")
        size = engine.cache.stats().host_bytes
        engine.cache.max_host_bytes = 2 * size
        await touch(engine, "b", "c")
        assert engine.cache.host_resident() == ["b", "c"] and engine.cache.stats().host_bytes == 2 * size
        await touch(engine, "b")  # host hit: no read from disk
        assert engine.cache.host_resident() == ["c", "b"]
        await touch(engine, "d")
        assert engine.cache.host_resident() == ["b", "d"]

    run(main())
    stats = engine.cache.stats()
    assert (stats.loads, stats.host_hits, stats.host_evictions) == (4, 1, 2)


def test_hot_adapters_keep_serving_while_a_cold_one_loads(adapters):
    """A slow fetch (a Hub download, a slow disk) holds nothing the steps need."""
    engine = make_engine("bert", adapters, max_wait_ms=1)
    gate, fetch = threading.Event(), engine.loader.fetch

    def blocked(name, *args):
        if name == "e":
            gate.wait(10)
        return fetch(name, *args)

    engine.loader.fetch = blocked
    rows = token_rows(1)

    async def main():
        async with engine:
            await engine.load_adapter("a")
            cold = asyncio.ensure_future(engine.embed("e", rows))
            for _ in range(3):
                await asyncio.wait_for(engine.embed("a", rows), 5)
            assert not cold.done()
            gate.set()
            await asyncio.wait_for(cold, 5)

    run(main())


def test_a_cancelled_request_gives_back_its_pin_and_its_queue_room(adapters):
    engine = make_engine("bert", adapters)
    slow_loads(engine, 0.3)

    async def main():
        async with engine:
            call = asyncio.ensure_future(engine.embed("a", token_rows(3)))
            await asyncio.sleep(0.1)
            assert engine.stats().scheduler.queued == 3
            call.cancel()
            await asyncio.gather(call, return_exceptions=True)
            assert engine.stats().scheduler.queued == 0 and engine.cache.pinned("a") == 0
            await asyncio.sleep(0.4)  # the load itself lands anyway, for the next request
            assert engine.cache.resident() == ["a"]

    run(main())
