"""Adaptive batching: concurrent requests coalesce into one forward pass.

Policy. One batch runs at a time. A request on an idle server runs at once: when no other
request has been inside the server since the last batch, nothing is waited for, so batching
costs nothing at low load. Under concurrent load (requests overlapping inside the server), a
forming batch waits, at most ``max_delay``, until it holds as many items as requests were
recently in flight (capped at ``max_batch_size``); requests arriving while a batch runs queue for
the next one. Callers hold a ``Ticket`` for each request from arrival to answer: that is how the
batcher sees concurrency, and requests still being decoded. A batch about to run alone probes:
it waits briefly (``PROBE_WINDOW``) for another arrival. A transport that delivers calls one at a
time (grpc.aio on a busy core) answers the probe at once and batches form; a lone client does not,
and each fruitless probe doubles the number of lone batches run before the next one.

Execution. Forward passes run on the model's own thread, except tiny ones: while the measured
forward CPU time stays under ``inline_below`` seconds, the batch runs on the event loop itself,
which is cheaper than a thread hand-off (and the GIL hand-back) for models that take microseconds.

Requests may carry a group ``key``: only requests with equal keys share a batch (a family uses it
for requests that cannot share a forward pass, e.g. different generation settings). Batches are
taken from the head of the queue in arrival order, so a request with another key closes the batch
rather than being overtaken.

Every request has its own future; a failed forward pass fails only the requests of its batch; a
cancelled request (client gone) or one past ``max_wait`` is dropped before it runs.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import deque
from collections.abc import Callable, Hashable, Sequence
from concurrent.futures import Executor
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

from predictors.errors import ModelFailure, Overloaded, PredictorError, QueueTimeout

PROBE_WINDOW = 0.001  # seconds a lone batch waits to learn whether more requests are coming
PROBE_BACKOFF_MAX = 256  # most lone batches run without probing after probes that brought nothing
P = TypeVar("P")  # one request's prepared input
R = TypeVar("R")  # one request's result


@dataclass
class BatchStats:
    """What one dispatched batch looked like, for metrics."""

    items: int
    requests: int
    queue_seconds: list[float]
    forward_seconds: float


@dataclass
class _Pending(Generic[P, R]):
    part: P
    items: int
    future: asyncio.Future[R]
    key: Hashable = None
    enqueued: float = field(default_factory=time.perf_counter)
    expiry: asyncio.TimerHandle | None = None


class Ticket:
    """One request inside the server: ``queued()`` once it is submitted (or failed), ``close()``
    once it is answered. Both are idempotent."""

    __slots__ = ("_batcher", "_preparing")

    def __init__(self, batcher: AdaptiveBatcher[Any, Any]) -> None:
        self._batcher: AdaptiveBatcher[Any, Any] | None = batcher
        self._preparing = True

    def queued(self) -> None:
        if self._preparing and self._batcher is not None:
            self._preparing = False
            self._batcher._preparing -= 1
            self._batcher._wake()

    def of(self, batcher: AdaptiveBatcher[Any, Any]) -> bool:
        """Whether this open ticket counts a request for ``batcher``."""
        return self._batcher is batcher

    def close(self) -> None:
        self.queued()
        if self._batcher is not None:
            self._batcher._inside -= 1
            self._batcher = None


class AdaptiveBatcher(Generic[P, R]):
    """Coalesce ``submit``-ted parts into calls of ``run(parts) -> results``."""

    def __init__(
        self,
        run: Callable[[Sequence[P]], Sequence[R]],
        *,
        executor: Executor,
        max_batch_size: int,
        max_delay: float,
        max_queue_size: int,
        max_wait: float | None = None,
        inline_below: float = 0.0,
        on_batch: Callable[[BatchStats], None] | None = None,
    ) -> None:
        if max_batch_size < 1:
            raise ValueError(f"max_batch_size must be at least 1, got {max_batch_size}")
        if max_delay < 0:
            raise ValueError(f"max_delay must be non-negative, got {max_delay}")
        if max_queue_size < 1:
            raise ValueError(f"max_queue_size must be at least 1, got {max_queue_size}")
        if max_wait is not None and max_wait <= 0:
            raise ValueError(f"max_wait must be positive, got {max_wait}")
        if inline_below < 0:
            raise ValueError(f"inline_below must be non-negative, got {inline_below}")
        self._run = run
        self._executor = executor
        self.max_batch_size = max_batch_size
        self.max_delay = max_delay
        self.max_queue_size = max_queue_size
        self.max_wait = max_wait
        self.inline_below = inline_below
        self._on_batch = on_batch
        self._queue: deque[_Pending[P, R]] = deque()
        self._queued_items = 0
        self._preparing = 0  # requests inside the server, not yet submitted
        self._inside = 0  # requests inside the server, from ticket to answer
        self._peak = 0  # most requests inside at once since the last dispatch
        self._arrivals = 0  # tickets and submissions so far: whether a probe brought any
        self._probe_skip = 0  # lone batches to run before probing again
        self._probe_backoff = 1
        self._probing = False  # a probe is waiting: new tickets wake it
        self._forward_ewma: float | None = None
        self._wakeup: asyncio.Event | None = None
        self._worker: asyncio.Task[None] | None = None

    @property
    def queued_items(self) -> int:
        return self._queued_items

    def ticket(self) -> Ticket:
        """Register a request that has just arrived (call ``close()`` on it once answered)."""
        self._inside += 1
        self._preparing += 1
        self._arrivals += 1
        self._peak = max(self._peak, self._inside)
        if self._probing:
            self._wake()
        return Ticket(self)

    def _wake(self) -> None:
        if self._wakeup is not None:
            self._wakeup.set()

    async def submit(self, part: P, items: int, ticket: Ticket | None = None, key: Hashable = None) -> R:
        """Queue one request's part of ``items`` rows and wait for its result; ``key`` groups batches."""
        if ticket is not None:
            ticket.queued()
        if self._queued_items + items > self.max_queue_size and self._queue:
            raise Overloaded(
                f"the batch queue holds {self._queued_items} items (limit {self.max_queue_size}); retry later"
            )
        self._ensure_worker()
        loop = asyncio.get_running_loop()
        pending: _Pending[P, R] = _Pending(part, items, loop.create_future(), key)
        if self.max_wait is not None:
            pending.expiry = loop.call_later(self.max_wait, self._expire, pending)
        self._queue.append(pending)
        self._queued_items += items
        self._arrivals += 1
        self._wake()
        return await pending.future

    def _expire(self, pending: _Pending[P, R]) -> None:
        """A request that waited ``max_wait`` without reaching the model is refused (503)."""
        if not pending.future.done():
            pending.future.set_exception(
                QueueTimeout(f"waited {self.max_wait:.3g}s for the model without reaching it; retry later")
            )

    def _ensure_worker(self) -> None:
        if self._worker is None or self._worker.done():
            self._wakeup = asyncio.Event()
            self._worker = asyncio.get_running_loop().create_task(self._loop(), name="maas-batcher")

    async def _loop(self) -> None:
        assert self._wakeup is not None
        while True:
            if not self._queue:
                self._wakeup.clear()
                await self._wakeup.wait()
                continue
            batch = self._take([])
            target = min(self.max_batch_size, max(self._peak, 1))
            deadline = time.perf_counter() + self.max_delay
            batch = await self._fill(batch, target, deadline)
            while self._alone(batch) and await self._probe(deadline):
                batch = await self._fill(self._take(batch), self.max_batch_size, deadline)
            self._peak = self._inside
            if batch:
                await self._dispatch(batch)

    async def _fill(self, batch: list[_Pending[P, R]], target: int, deadline: float) -> list[_Pending[P, R]]:
        """Wait, until ``deadline``, for requests inside the server to join until ``target`` items."""
        assert self._wakeup is not None
        # a live request left at the head (too big, or another key) closes the batch: nothing overtakes it
        while (
            not self._queue
            and self._size(batch) < self.max_batch_size
            and (self._preparing or self._size(batch) < target)
        ):
            remaining = deadline - time.perf_counter()
            if remaining <= 0 or self._inside <= len(batch):
                break  # out of time, or nobody else is inside the server to wait for
            self._wakeup.clear()
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._wakeup.wait(), remaining)
            batch = self._take(batch)
        return batch

    def _alone(self, batch: list[_Pending[P, R]]) -> bool:
        """A batch about to run with room left, nothing queued and nobody else inside the server."""
        return (
            bool(batch) and not self._queue and self._inside <= len(batch) and self._size(batch) < self.max_batch_size
        )

    async def _probe(self, deadline: float) -> bool:
        """Whether another request arrives within a short wait: learned, so that it costs nothing
        when requests come one at a time.

        Seen from the server, a lone client and a transport that delivers one call at a time look
        the same: one request inside, nothing queued. They differ in what waiting brings. grpc.aio
        accepts a call per event-loop turn through its poller thread; with that thread on the
        loop's core, a loop that never sleeps starves it, calls arrive one by one and every batch
        holds one. A short wait lets the poller run and the calls queued behind it come in. Each
        probe that brings nothing doubles how many lone batches run before the next probe (up to
        ``PROBE_BACKOFF_MAX``); one that brings a request resets it."""
        if self._probe_skip > 0:
            self._probe_skip -= 1
            return False
        window = min(PROBE_WINDOW, deadline - time.perf_counter())
        if window <= 0:
            return False
        assert self._wakeup is not None
        seen = self._arrivals
        self._wakeup.clear()
        self._probing = True
        try:
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._wakeup.wait(), window)
        finally:
            self._probing = False
        if self._arrivals > seen:
            self._probe_backoff = 1
            return True
        self._probe_skip = self._probe_backoff
        self._probe_backoff = min(2 * self._probe_backoff, PROBE_BACKOFF_MAX)
        return False

    def _inline(self) -> bool:
        return self._forward_ewma is not None and self._forward_ewma < self.inline_below

    def _take(self, batch: list[_Pending[P, R]]) -> list[_Pending[P, R]]:
        size = self._size(batch)
        while self._queue:
            head = self._queue[0]
            if head.future.done():  # cancelled by a departed client, or expired
                self._queue.popleft()
                self._queued_items -= head.items
                continue
            if batch and (size + head.items > self.max_batch_size or head.key != batch[0].key):
                break
            self._queue.popleft()
            self._queued_items -= head.items
            if head.expiry is not None:
                head.expiry.cancel()
            batch.append(head)
            size += head.items
        return batch

    @staticmethod
    def _size(batch: list[_Pending[P, R]]) -> int:
        return sum(p.items for p in batch)

    async def _dispatch(self, batch: list[_Pending[P, R]]) -> None:
        batch = [p for p in batch if not p.future.done()]
        if not batch:
            return
        parts = [p.part for p in batch]
        started = time.perf_counter()
        try:
            if self._inline():
                results, cpu = self._timed_run(parts)
            else:
                results, cpu = await asyncio.get_running_loop().run_in_executor(self._executor, self._timed_run, parts)
            if len(results) != len(batch):
                raise ModelFailure(f"the model returned {len(results)} results for {len(batch)} requests")
        except PredictorError as exc:
            self._fail(batch, exc)
            return
        except Exception as exc:
            self._fail(batch, ModelFailure(f"forward pass failed: {type(exc).__name__}: {exc}"))
            return
        elapsed = time.perf_counter() - started
        self._forward_ewma = cpu if self._forward_ewma is None else 0.8 * self._forward_ewma + 0.2 * cpu
        for pending, result in zip(batch, results):
            if not pending.future.done():
                pending.future.set_result(result)
        if self._on_batch is not None:
            self._on_batch(
                BatchStats(
                    items=self._size(batch),
                    requests=len(batch),
                    queue_seconds=[started - p.enqueued for p in batch],
                    forward_seconds=elapsed,
                )
            )

    def _timed_run(self, parts: list[P]) -> tuple[Sequence[R], float]:
        """Run a batch and measure the CPU time its thread spent: the cost of running it inline
        (wall time on a busy model thread also counts waiting for the GIL)."""
        started = time.thread_time()
        results = self._run(parts)
        return results, time.thread_time() - started

    @staticmethod
    def _fail(batch: list[_Pending[P, R]], exc: Exception) -> None:
        for pending in batch:
            if not pending.future.done():
                pending.future.set_exception(exc)
