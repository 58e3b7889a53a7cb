"""Scheduler: batches across adapters within bounds, no starvation, bounded queue, steps off the event loop."""
import asyncio
import threading
import time

import pytest

from serve.engine import EngineClosedError, QueueFullError
from serve.engine.scheduler import Row, Scheduler, SchedulerConfig


class Recorder:
    """A fake step: records each step's rows (as (adapter, length)) and returns each row's length."""

    def __init__(self, seconds: float = 0.0, gate: threading.Event | None = None) -> None:
        self.steps: list[list[tuple[str | None, int]]] = []
        self.seconds, self.gate = seconds, gate

    def __call__(self, rows):
        if self.gate is not None:
            self.gate.wait(10)
        time.sleep(self.seconds)
        self.steps.append([(row.adapter, len(row)) for row in rows])
        return [len(row) for row in rows]


def rows(adapter: str | None, count: int, length: int = 4) -> list[Row]:
    return [Row(input_ids=[5] * length, slot=0, adapter=adapter, task="embed") for _ in range(count)]


def run_outputs(coro):
    return asyncio.run(coro)


async def submit(scheduler: Scheduler, batch: list[Row]) -> list:
    with scheduler.admit(len(batch)) as ticket:
        return await scheduler.run(ticket, batch)


def test_rows_of_many_adapters_share_a_step_within_its_bounds():
    recorder = Recorder()

    async def main():
        scheduler = Scheduler(recorder, SchedulerConfig(max_batch_size=8, max_batch_tokens=40, max_wait_s=0.2))
        await scheduler.start()
        outputs = await asyncio.gather(submit(scheduler, rows("a", 3)), submit(scheduler, rows("b", 2, length=8)),
                                       submit(scheduler, rows(None, 2)))
        await scheduler.stop()
        return outputs

    assert run_outputs(main()) == [[4, 4, 4], [8, 8], [4, 4]]
    assert sum(map(len, recorder.steps)) == 7
    assert len(recorder.steps[0]) == 5  # 5 rows x 8 tokens = 40 padded tokens: the budget
    assert all(len(step) * max(n for _, n in step) <= 40 for step in recorder.steps)


def steps_after_a_blocked_step(config: SchedulerConfig, batches: list[list[Row]]):
    """Queue ``batches`` (in order) while a first step is blocked, then let it go; the later steps' rows."""
    gate = threading.Event()
    recorder = Recorder(gate=gate)

    async def main():
        scheduler = Scheduler(recorder, config)
        await scheduler.start()
        blocker = asyncio.ensure_future(submit(scheduler, rows("blocker", 1)))
        await asyncio.sleep(0.05)
        calls = [asyncio.ensure_future(submit(scheduler, batch)) for batch in batches]
        await asyncio.sleep(0.05)
        gate.set()
        await asyncio.gather(blocker, *calls)
        await scheduler.stop()

    run_outputs(main())
    return recorder.steps[1:]


def test_a_burst_of_one_adapter_does_not_starve_the_others():
    config = SchedulerConfig(max_batch_size=4, max_rows_per_adapter=2, max_wait_s=0)
    steps = steps_after_a_blocked_step(config, [rows("a", 10), rows("b", 1), rows("c", 1)])
    assert sorted(adapter for adapter, _ in steps[0]) == ["a", "a", "b", "c"]
    assert [len(step) for step in steps] == [4, 4, 4]  # with only a left, the cap gives way to spare room


def test_the_oldest_row_is_always_picked_even_when_long():
    config = SchedulerConfig(max_batch_size=8, max_batch_tokens=32, max_wait_s=0)
    steps = steps_after_a_blocked_step(config, [rows("a", 1, length=30), rows("b", 4, length=2)])
    assert steps == [[("a", 30)], [("b", 2)] * 4]


def test_max_wait_gathers_rows_that_arrive_close_together():
    recorder = Recorder()

    async def main(wait: float):
        scheduler = Scheduler(recorder, SchedulerConfig(max_wait_s=wait))
        await scheduler.start()
        first = asyncio.ensure_future(submit(scheduler, rows("a", 1)))
        await asyncio.sleep(0.05)
        await asyncio.gather(first, submit(scheduler, rows("b", 1)))
        await scheduler.stop()

    run_outputs(main(0.5))
    assert [len(step) for step in recorder.steps] == [2]
    recorder.steps.clear()
    run_outputs(main(0.0))
    assert [len(step) for step in recorder.steps] == [1, 1]


def test_steps_run_off_the_event_loop():
    async def main():
        scheduler = Scheduler(Recorder(seconds=0.3), SchedulerConfig(max_wait_s=0))
        await scheduler.start()
        ticks = 0

        async def tick():
            nonlocal ticks
            while True:
                await asyncio.sleep(0.01)
                ticks += 1

        ticker = asyncio.ensure_future(tick())
        await submit(scheduler, rows("a", 1))
        ticker.cancel()
        await scheduler.stop()
        return ticks

    assert run_outputs(main()) >= 10


def test_the_queue_is_bounded_and_gives_room_back():
    gate = threading.Event()

    async def main():
        scheduler = Scheduler(Recorder(gate=gate), SchedulerConfig(max_queue=3, max_batch_size=1, max_wait_s=0))
        await scheduler.start()
        running = asyncio.ensure_future(submit(scheduler, rows("a", 1)))
        await asyncio.sleep(0.05)  # its row is in the (blocked) step: the queue is empty again
        queued = asyncio.ensure_future(submit(scheduler, rows("a", 3)))
        await asyncio.sleep(0)
        with pytest.raises(QueueFullError):
            scheduler.admit(1)
        queued.cancel()  # a cancelled request gives its room back
        await asyncio.gather(queued, return_exceptions=True)
        assert scheduler.stats().queued == 0
        gate.set()
        await running
        await scheduler.stop()

    run_outputs(main())


def test_stop_fails_the_waiting_rows():
    gate = threading.Event()

    async def main():
        scheduler = Scheduler(Recorder(gate=gate), SchedulerConfig(max_batch_size=1, max_wait_s=0))
        await scheduler.start()
        calls = [asyncio.ensure_future(submit(scheduler, rows("a", 1))) for _ in range(2)]
        await asyncio.sleep(0.05)
        stopping = asyncio.ensure_future(scheduler.stop())
        await asyncio.sleep(0.05)
        gate.set()
        await stopping
        results = await asyncio.gather(*calls, return_exceptions=True)
        assert all(isinstance(result, EngineClosedError) for result in results)
        with pytest.raises(EngineClosedError):
            scheduler.admit(1)

    run_outputs(main())
