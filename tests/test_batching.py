"""AdaptiveBatcher on its own: coalescing, no wait when idle, failure isolation, limits."""

from __future__ import annotations

import asyncio
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from predictors.batching import PROBE_WINDOW, AdaptiveBatcher, BatchStats
from predictors.errors import ModelFailure, Overloaded


class Recorder:
    """A model stand-in that doubles numbers and records the batches it saw."""

    def __init__(self, delay: float = 0.0, fail_on: int | None = None) -> None:
        self.batches: list[list[int]] = []
        self.delay = delay
        self.fail_on = fail_on
        self.lock = threading.Lock()

    def __call__(self, parts: list[int]) -> list[int]:
        with self.lock:
            self.batches.append(list(parts))
        time.sleep(self.delay)
        if self.fail_on is not None and self.fail_on in parts:
            raise MemoryError("CUDA out of memory (simulated)")
        return [2 * p for p in parts]


def batcher(run, **kwargs) -> AdaptiveBatcher[int, int]:  # type: ignore[no-untyped-def]
    options = {"max_batch_size": 8, "max_delay": 0.05, "max_queue_size": 1000, **kwargs}
    return AdaptiveBatcher(run, executor=ThreadPoolExecutor(1), **options)


async def test_lone_request_runs_at_once_without_waiting() -> None:
    run = Recorder()
    b = batcher(run, max_delay=2.0)
    for value in (21, 22, 23):  # one client, one request at a time
        ticket = b.ticket()
        started = time.perf_counter()
        assert await b.submit(value, 1, ticket) == 2 * value
        ticket.close()
        assert time.perf_counter() - started < 0.5, "an idle batcher must not wait max_delay"
    assert run.batches == [[21], [22], [23]]


async def test_requests_arriving_during_a_forward_share_the_next_one() -> None:
    run = Recorder(delay=0.1)
    b = batcher(run)
    results = await asyncio.gather(*(b.submit(i, 1) for i in range(20)))
    assert results == [2 * i for i in range(20)]
    assert sum(len(batch) for batch in run.batches) == 20
    assert max(len(batch) for batch in run.batches) == 8  # capped at max_batch_size
    assert len(run.batches) <= 4


async def test_concurrent_requests_inside_the_server_are_waited_for() -> None:
    run = Recorder()
    b = batcher(run, max_delay=1.0)
    tickets = [b.ticket() for _ in range(5)]  # five requests arrived; they reach submit one by one

    async def late(i: int) -> int:
        await asyncio.sleep(0.02 * i)
        try:
            return await b.submit(i, 1, tickets[i])
        finally:
            tickets[i].close()

    assert await asyncio.gather(*(late(i) for i in range(5))) == [0, 2, 4, 6, 8]
    assert run.batches == [[0, 1, 2, 3, 4]]


async def test_a_request_that_fails_validation_does_not_hold_the_batch() -> None:
    run = Recorder()
    b = batcher(run, max_delay=5.0)
    doomed, good = b.ticket(), b.ticket()

    async def fail_validation() -> None:
        await asyncio.sleep(0.05)
        doomed.close()  # the request failed validation and never joins a batch

    started = time.perf_counter()
    _, result = await asyncio.gather(fail_validation(), b.submit(1, 1, good))
    assert result == 2 and time.perf_counter() - started < 1.0


async def test_the_wait_is_bounded_by_max_delay() -> None:
    run = Recorder()
    b = batcher(run, max_delay=0.1)
    stuck = b.ticket()  # a request that stays inside (e.g. a slow upload) and never submits
    started = time.perf_counter()
    assert await b.submit(1, 1, b.ticket()) == 2
    assert 0.09 <= time.perf_counter() - started < 1.0
    stuck.close()


async def test_tiny_forwards_run_inline_and_slow_ones_on_the_model_thread() -> None:
    threads: list[int] = []

    def run(parts: list[int]) -> list[int]:
        threads.append(threading.get_ident())
        if parts[0] < 0:  # a slow pass: 20 ms of CPU
            end = time.thread_time() + 0.02
            while time.thread_time() < end:
                pass
        return parts

    b = batcher(run, inline_below=0.01)
    for value in (1, 2, 3):
        await b.submit(value, 1)
    loop_thread = threading.get_ident()
    assert threads[0] != loop_thread  # the first pass is measured on the model thread
    assert threads[1:] == [loop_thread, loop_thread]
    for _ in range(12):
        await b.submit(-1, 1)  # slow passes push the average over the threshold
    assert threads[-1] != loop_thread


async def test_a_failed_forward_fails_only_its_batch() -> None:
    run = Recorder(delay=0.05, fail_on=13)
    b = batcher(run, max_batch_size=4)
    outcomes = await asyncio.gather(*(b.submit(i, 1) for i in range(12, 20)), return_exceptions=True)
    failed_batch = next(batch for batch in run.batches if 13 in batch)
    for value, outcome in zip(range(12, 20), outcomes):
        if value in failed_batch:
            assert isinstance(outcome, ModelFailure) and "out of memory" in str(outcome)
        else:
            assert outcome == 2 * value
    assert await b.submit(5, 1) == 10  # still serving


async def test_wrong_number_of_results_is_an_error_not_a_misroute() -> None:
    b = batcher(lambda parts: [0])
    outcomes = await asyncio.gather(b.submit(1, 1), b.submit(2, 1), return_exceptions=True)
    assert all(isinstance(o, (ModelFailure, int)) for o in outcomes)
    assert any(isinstance(o, ModelFailure) and "2 requests" in str(o) for o in outcomes) or outcomes == [0, 0]


async def test_full_queue_refuses_with_overloaded() -> None:
    run = Recorder(delay=0.2)
    b = batcher(run, max_batch_size=1, max_queue_size=3)
    tasks = [asyncio.ensure_future(b.submit(0, 1))]
    await asyncio.sleep(0.05)  # the first is running
    tasks += [asyncio.ensure_future(b.submit(i, 1)) for i in range(1, 4)]
    await asyncio.sleep(0.01)  # three queued: the queue is full
    with pytest.raises(Overloaded):
        await b.submit(99, 1)
    assert await asyncio.gather(*tasks) == [0, 2, 4, 6]


async def test_cancelled_requests_are_dropped_before_running() -> None:
    run = Recorder(delay=0.2)
    b = batcher(run, max_batch_size=1)
    first = asyncio.ensure_future(b.submit(1, 1))
    await asyncio.sleep(0.05)
    doomed = asyncio.ensure_future(b.submit(2, 1))
    await asyncio.sleep(0.01)
    doomed.cancel()
    assert await first == 2 and await b.submit(3, 1) == 6
    assert [2] not in run.batches


async def test_item_counts_bound_batches_and_stats_are_reported() -> None:
    stats: list[BatchStats] = []
    run = Recorder(delay=0.05)
    b = batcher(run, max_batch_size=10, on_batch=stats.append)
    await asyncio.gather(*(b.submit(i, 4) for i in range(6)))
    assert all(len(batch) * 4 <= 10 for batch in run.batches)
    assert sum(s.items for s in stats) == 24 and sum(s.requests for s in stats) == 6
    assert all(s.forward_seconds >= 0.04 for s in stats)


@pytest.mark.parametrize(
    "kwargs", [{"max_batch_size": 0}, {"max_delay": -1}, {"max_queue_size": 0}, {"max_wait": 0}, {"inline_below": -1}]
)
def test_knobs_are_validated_when_built(kwargs) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(ValueError):
        batcher(Recorder(), **kwargs)


async def test_only_requests_with_the_same_key_share_a_batch_in_arrival_order() -> None:
    run = Recorder(delay=0.05)
    b = batcher(run)
    first = asyncio.ensure_future(b.submit(0, 1, key="a"))
    await asyncio.sleep(0.01)  # the first batch is running; the rest queue up
    keys = ["a", "a", "b", "b", "a"]
    results = await asyncio.gather(*(b.submit(i, 1, key=k) for i, k in enumerate(keys, start=1)))
    assert await first == 0 and results == [2, 4, 6, 8, 10]
    assert run.batches == [[0], [1, 2], [3, 4], [5]]


async def call(b: AdaptiveBatcher[int, int], value: int) -> int:
    """One request as the server makes it: a ticket on arrival, submitted, closed once answered."""
    ticket = b.ticket()
    try:
        return await b.submit(value, 1, ticket)
    finally:
        ticket.close()


async def test_calls_delivered_one_by_one_are_batched_after_a_probe() -> None:
    """A transport that delivers a call only when the loop is free (grpc.aio on a busy core): every
    batch would hold one call; a lone batch probes, learns that waiting brings calls, and fills."""
    run = Recorder()
    b = batcher(run, max_delay=0.05, inline_below=1.0)  # inline: a forward holds the event loop
    assert await call(b, 0) == 0
    tasks = []
    for i in range(1, 65):
        tasks.append(asyncio.create_task(call(b, i)))
        for _ in range(3):  # the next call comes a few loop turns later
            await asyncio.sleep(0)
    assert await asyncio.gather(*tasks) == [2 * i for i in range(1, 65)]
    sizes = [len(batch) for batch in run.batches[1:]]
    assert sum(sizes) == 64 and max(sizes) == 8
    assert len(sizes) <= 12, f"one-by-one calls were not batched: {sizes}"


async def test_a_lone_client_stops_paying_for_probes() -> None:
    """One client, one request at a time: each probe finds nothing, so probes back off and almost
    every request runs at once."""
    run = Recorder()
    b = batcher(run, max_delay=0.05, inline_below=1.0)
    slow = 0
    for i in range(300):
        started = time.perf_counter()
        assert await call(b, i) == 2 * i
        slow += time.perf_counter() - started >= 0.9 * PROBE_WINDOW
    assert len(run.batches) == 300
    assert slow <= 20, f"{slow} of 300 lone requests waited for a probe"  # 9 with the backoff; 300 without
