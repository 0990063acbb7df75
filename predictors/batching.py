"""Adaptive batching: concurrent requests coalesce into one forward pass.

Policy: one batch runs at a time on the model's own thread. A request on an idle model runs at
once. Requests that arrive while a batch runs wait in the queue and go together in the next one,
up to ``max_batch_size`` items. The batcher only waits (at most ``max_delay``) when it knows more
requests are on their way: callers ``announce()`` a request before decoding and validating it, and
a batch that is not full waits for announced requests still being prepared. Every request has its
own future; a failed forward pass fails only the requests of its batch; a cancelled request
(client gone) is dropped before it runs.

Requests may carry a group ``key``: only requests with equal keys share a batch (a family uses it
for requests that cannot share a forward pass, e.g. different generation modes). Batches are taken
from the head of the queue in arrival order, so a request with another key ends the batch rather
than being overtaken.
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

from predictors.errors import ModelFailure, Overloaded, PredictorError

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


class Ticket:
    """An announced request; ``release`` (idempotent) once it is queued or has failed."""

    __slots__ = ("_batcher",)

    def __init__(self, batcher: AdaptiveBatcher[Any, Any]) -> None:
        self._batcher: AdaptiveBatcher[Any, Any] | None = batcher

    def release(self) -> None:
        if self._batcher is not None:
            self._batcher._withdraw()
            self._batcher = None


class AdaptiveBatcher(Generic[P, R]):
    """Coalesce ``submit``-ted parts into calls of ``run(parts) -> results`` on ``executor``."""

    def __init__(
        self,
        run: Callable[[Sequence[P]], Sequence[R]],
        *,
        executor: Executor,
        max_batch_size: int,
        max_delay: float,
        max_queue_size: int,
        on_batch: Callable[[BatchStats], None] | None = None,
    ) -> None:
        if max_batch_size < 1:
            raise ValueError(f"max_batch_size must be at least 1, got {max_batch_size}")
        if max_delay < 0:
            raise ValueError(f"max_delay must be non-negative, got {max_delay}")
        if max_queue_size < 1:
            raise ValueError(f"max_queue_size must be at least 1, got {max_queue_size}")
        self._run = run
        self._executor = executor
        self.max_batch_size = max_batch_size
        self.max_delay = max_delay
        self.max_queue_size = max_queue_size
        self._on_batch = on_batch
        self._queue: deque[_Pending[P, R]] = deque()
        self._queued_items = 0
        self._announced = 0
        self._wakeup: asyncio.Event | None = None
        self._worker: asyncio.Task[None] | None = None

    @property
    def queued_items(self) -> int:
        return self._queued_items

    def announce(self) -> Ticket:
        """Mark a request as on its way (being decoded) so a forming batch may wait for it."""
        self._announced += 1
        return Ticket(self)

    def _withdraw(self) -> None:
        self._announced -= 1
        if self._wakeup is not None:
            self._wakeup.set()

    async def submit(self, part: P, items: int, ticket: Ticket | None = None, key: Hashable = None) -> R:
        """Queue one request's part of ``items`` rows and wait for its result; ``key`` groups batches."""
        if ticket is not None:
            ticket.release()
        if self._queued_items + items > self.max_queue_size and self._queue:
            raise Overloaded(
                f"the batch queue holds {self._queued_items} items (limit {self.max_queue_size}); retry later"
            )
        self._ensure_worker()
        assert self._wakeup is not None
        pending: _Pending[P, R] = _Pending(part, items, asyncio.get_running_loop().create_future(), key)
        self._queue.append(pending)
        self._queued_items += items
        self._wakeup.set()
        return await pending.future

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
            deadline = time.perf_counter() + self.max_delay
            # wait for announced requests only while the batch can still grow: a live request left at
            # the head (too big, or another key) closes it, as nothing may overtake that request
            while self._announced and not self._queue and self._size(batch) < self.max_batch_size:
                remaining = deadline - time.perf_counter()
                if remaining <= 0:
                    break
                self._wakeup.clear()
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(self._wakeup.wait(), remaining)
                batch = self._take(batch)
            if batch:
                await self._dispatch(batch)

    def _take(self, batch: list[_Pending[P, R]]) -> list[_Pending[P, R]]:
        size = self._size(batch)
        while self._queue:
            head = self._queue[0]
            if head.future.done():  # cancelled by a departed client
                self._queue.popleft()
                self._queued_items -= head.items
                continue
            if batch and (size + head.items > self.max_batch_size or head.key != batch[0].key):
                break
            self._queue.popleft()
            self._queued_items -= head.items
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
        started = time.perf_counter()
        loop = asyncio.get_running_loop()
        try:
            results = await loop.run_in_executor(self._executor, self._run, [p.part for p in batch])
            if len(results) != len(batch):
                raise ModelFailure(f"the model returned {len(results)} results for {len(batch)} requests")
        except PredictorError as exc:
            self._fail(batch, exc)
            return
        except Exception as exc:
            self._fail(batch, ModelFailure(f"forward pass failed: {type(exc).__name__}: {exc}"))
            return
        finished = time.perf_counter()
        for pending, result in zip(batch, results):
            if not pending.future.done():
                pending.future.set_result(result)
        if self._on_batch is not None:
            self._on_batch(
                BatchStats(
                    items=self._size(batch),
                    requests=len(batch),
                    queue_seconds=[started - p.enqueued for p in batch],
                    forward_seconds=finished - started,
                )
            )

    @staticmethod
    def _fail(batch: list[_Pending[P, R]], exc: Exception) -> None:
        for pending in batch:
            if not pending.future.done():
                pending.future.set_exception(exc)
