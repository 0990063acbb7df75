"""Continuous batching for text generation: sequences join the running decode at the next step and
leave it the moment they stop, so a short request batched with a long one returns when *it* is done.

One scheduler thread (the model's thread) runs the loop; requests talk to it through ``stream``, an
async iterator of ``Chunk``s per sequence. Each loop turn:

1. drops the sequences whose client went away and the waiting ones past ``max_wait`` (503);
2. admits waiting sequences, in arrival order, while the KV-cache bound holds;
3. prefills the admitted prompts together (left-padded) and joins their cache to the running one;
4. runs one decode step over every running sequence and hands each its new token.

The KV cache is one batched ``DynamicCache``, rows right-aligned (left padding, a 0 in the attention
mask) and positions per row, so that a row's numbers do not depend on its neighbours. It holds
``rows x width`` tokens, width being the longest row; a sequence is admitted only when that product,
taken at every row's end (prompt + ``max_new_tokens``), stays within ``max_kv_tokens``: load makes
requests wait (or get 503), never run out of memory. Sampling is ``sampling.RowSampler``'s: each row
its own temperature, top-p and random stream, whatever it is batched with.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import threading
import time
from collections import deque
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from predictors import metrics
from predictors.errors import ConfigError, InvalidRequest, ModelFailure, Overloaded, QueueTimeout
from predictors.families.transformer.sampling import RowSampler

logger = logging.getLogger("maas")


@dataclass(frozen=True)
class Chunk:
    """What one step gave a sequence: the text it completes (``""`` while a character or a possible
    stop string is incomplete), the tokens generated so far, and, on the last chunk, why it stopped
    (``stop``: end of text or a stop string; ``length``: ``max_new_tokens``)."""

    text: str
    num_tokens: int
    finish_reason: str | None = None


@dataclass(eq=False)
class GenerationSequence:
    """One text to continue, as the scheduler sees it."""

    prompt: list[int]
    max_new_tokens: int
    temperature: float
    top_p: float
    seed: int
    stop: Sequence[str] = ()
    ignore_eos: bool = False
    # scheduler state
    tokens: list[int] = field(default_factory=list)
    cancelled: bool = False
    done: bool = False
    arrived: float = field(default_factory=time.perf_counter)
    last_token_at: float = 0.0
    generator: torch.Generator | None = None
    deliver: Callable[[Chunk | BaseException], Any] | None = None
    decoder: IncrementalText | None = None

    @property
    def reserve(self) -> int:
        """KV tokens the sequence may hold at its end."""
        return len(self.prompt) + self.max_new_tokens

    @property
    def length(self) -> int:
        """Tokens it holds in the cache (prompt and generated, the last one not yet fed back)."""
        return len(self.prompt) + max(0, len(self.tokens) - 1)


class IncrementalText:
    """Decodes a sequence's tokens as they come, holding back an incomplete character and the tail
    that could be the start of a stop string; the final text is the whole decode (as the static
    engine's), cut at the first stop string."""

    def __init__(self, tokenizer: Any, stop: Sequence[str]) -> None:
        self.tokenizer = tokenizer
        self.stop = [s for s in stop if s]
        self.hold = max((len(s) for s in self.stop), default=1) - 1
        self.text = ""
        self.sent = 0
        self.prefix = self.read = 0

    def _decode(self, ids: list[int]) -> str:
        return str(self.tokenizer.decode(ids, skip_special_tokens=True))

    def add(self, ids: list[int]) -> tuple[str, bool]:
        """The releasable new text after ``ids`` (all tokens so far); True when a stop string appeared."""
        before = self._decode(ids[self.prefix : self.read])
        after = self._decode(ids[self.prefix :])
        if len(after) > len(before) and not after.endswith("\ufffd"):
            self.text += after[len(before) :]
            self.prefix, self.read = self.read, len(ids)
        if self.stop:
            start = max(0, self.sent - self.hold)
            found = [i for i in (self.text.find(s, start) for s in self.stop) if i >= 0]
            if found:
                self.text = self.text[: min(found)]
                return self.flush(), True
        release = max(self.sent, len(self.text) - self.hold)
        new, self.sent = self.text[self.sent : release], release
        return new, False

    def finish(self, ids: list[int]) -> str:
        """The rest of the text once the sequence ended without a stop string."""
        whole = self._decode(ids)
        if whole.startswith(self.text[: self.sent]):
            self.text = whole
        return self.flush()

    def flush(self) -> str:
        new, self.sent = self.text[self.sent :], len(self.text)
        return new


class ContinuousEngine:
    """The scheduler of one text-generation model (see the module docstring)."""

    def __init__(
        self,
        model: Any,
        tokenizer: Any,
        *,
        name: str,
        eos_id: int | None,
        pad_id: int,
        device: Any,
        max_rows: int,
        max_kv_tokens: int,
        max_waiting: int,
        max_wait: float,
    ) -> None:
        if max_rows < 1 or max_kv_tokens < 1 or max_waiting < 1 or max_wait <= 0:
            raise ValueError("max_rows, max_kv_tokens, max_waiting and max_wait must be positive")
        self.model = model
        self.tokenizer = tokenizer
        self.name = name
        self.eos_id = eos_id
        self.pad_id = pad_id
        self.device = device
        self.max_rows = max_rows
        self.max_kv_tokens = max_kv_tokens
        self.max_waiting = max_waiting
        self.max_wait = max_wait
        self._waiting: deque[GenerationSequence] = deque()
        self._running: list[GenerationSequence] = []
        self._cache: Any = None  # DynamicCache over the running rows
        self._mask: torch.Tensor | None = None  # [rows, width]
        self._wake = threading.Condition()
        self._stopping = False
        self._thread: threading.Thread | None = None
        # transformers 5 names the cache argument and output ``cache``; 4.x ``past_key_values``
        accepted = inspect.signature(model.forward).parameters
        self._cache_name = "cache" if "cache" in accepted else "past_key_values"
        self._metrics: Any = metrics.generation_metrics(name)
        self._metrics.capacity(max_kv_tokens)

    # ---- the requests' side (event loop) --------------------------------------------------
    def check(self, prompt_tokens: int, max_new_tokens: int) -> None:
        """400 for a sequence that could never fit the KV-cache bound, before it queues."""
        if prompt_tokens + max_new_tokens > self.max_kv_tokens:
            raise InvalidRequest(
                f"the prompt ({prompt_tokens} tokens) and max_new_tokens ({max_new_tokens}) need more KV-cache "
                f"tokens than this server holds ({self.max_kv_tokens}, --max_kv_tokens)"
            )

    async def stream(self, sequence: GenerationSequence) -> AsyncIterator[Chunk]:
        """The sequence's chunks as they are produced; closing the iterator early (client gone)
        removes the sequence at the next step and frees its place."""
        self.check(len(sequence.prompt), sequence.max_new_tokens)
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[Chunk | BaseException] = asyncio.Queue()

        def deliver(item: Chunk | BaseException) -> None:
            loop.call_soon_threadsafe(queue.put_nowait, item)

        sequence.deliver = deliver
        sequence.decoder = IncrementalText(self.tokenizer, sequence.stop)
        with self._wake:
            if self._stopping:
                raise ModelFailure("the generation engine has stopped")
            if len(self._waiting) >= self.max_waiting:
                raise Overloaded(f"{len(self._waiting)} sequences are waiting for the model; retry later")
            self._waiting.append(sequence)
            self._wake.notify()
        try:
            while True:
                item = await queue.get()
                if isinstance(item, BaseException):
                    raise item
                yield item
                if item.finish_reason is not None:
                    return
        finally:
            if not sequence.done:
                sequence.cancelled = True
                with self._wake:
                    self._wake.notify()

    def start(self) -> None:
        self._thread = threading.Thread(target=self._loop, name=f"maas-{self.name}-engine", daemon=True)
        self._thread.start()

    def run_alone(self, sequences: list[GenerationSequence]) -> None:
        """Generate ``sequences`` to their end on the calling thread (warm-up, before ``start``)."""
        for sequence in sequences:
            sequence.decoder = IncrementalText(self.tokenizer, sequence.stop)
        recorded, self._metrics = self._metrics, _Unrecorded()  # warm-up is no traffic
        try:
            with torch.inference_mode():
                self.step(sequences)
                while self._running:
                    self.step([])
        finally:
            self._metrics = recorded

    def stop(self) -> None:
        with self._wake:
            self._stopping = True
            self._wake.notify()
        if self._thread is not None:
            self._thread.join(timeout=10)

    # ---- the scheduler (model thread) -----------------------------------------------------
    def _loop(self) -> None:
        while True:
            with self._wake:
                while not self._stopping and not self._running and not self._pending_waiting():
                    self._publish()
                    self._wake.wait(timeout=self._next_expiry())
                if self._stopping:
                    break
                admitted = self._admit()
            try:
                with torch.inference_mode():
                    self.step(admitted)
            except Exception as exc:  # a failed step fails its sequences, not the server
                logger.exception("%s: generation step failed", self.name)
                failure = ModelFailure(f"generation failed: {type(exc).__name__}: {exc}")
                for sequence in self._running + admitted:
                    self._end(sequence, failure)
                self._running, self._cache, self._mask = [], None, None
                self._publish()
        failure = ModelFailure("the server is stopping")
        for sequence in self._running + list(self._waiting):
            self._end(sequence, failure)

    def _pending_waiting(self) -> bool:
        """Whether a waiting sequence needs the loop (drops expired and cancelled ones)."""
        now = time.perf_counter()
        while self._waiting and (self._waiting[0].cancelled or now - self._waiting[0].arrived > self.max_wait):
            self._expire(self._waiting.popleft(), now)
        return bool(self._waiting) and self._fits(self._waiting[0])

    def _next_expiry(self) -> float | None:
        if not self._waiting:
            return None
        return max(0.001, self._waiting[0].arrived + self.max_wait - time.perf_counter())

    def _expire(self, sequence: GenerationSequence, now: float) -> None:
        if sequence.cancelled:
            sequence.done = True
            return
        self._end(
            sequence,
            QueueTimeout(
                f"no room in the KV cache for {now - sequence.arrived:.1f}s (--max_queue_wait_ms); retry later"
            ),
        )

    def _fits(self, sequence: GenerationSequence, extra: Sequence[GenerationSequence] = ()) -> bool:
        rows = [*self._running, *extra, sequence]
        return len(rows) <= self.max_rows and len(rows) * max(r.reserve for r in rows) <= self.max_kv_tokens

    def _admit(self) -> list[GenerationSequence]:
        """Waiting sequences that fit, in arrival order (a large one at the head is not overtaken)."""
        admitted: list[GenerationSequence] = []
        now = time.perf_counter()
        if any(s.cancelled or now - s.arrived > self.max_wait for s in self._waiting):
            for s in self._waiting:
                if s.cancelled or now - s.arrived > self.max_wait:
                    self._expire(s, now)
            self._waiting = deque(s for s in self._waiting if not s.done)
        while self._waiting and self._fits(self._waiting[0], admitted):
            admitted.append(self._waiting.popleft())
        return admitted

    def step(self, admitted: list[GenerationSequence]) -> None:
        """Drop cancelled rows, one decode step for the running ones, then prefill the admitted
        ones (their first token) and join them to the running batch."""
        if any(s.cancelled for s in self._running):
            for s in self._running:
                s.done = s.done or s.cancelled
            self._keep([i for i, s in enumerate(self._running) if not s.cancelled])
        if self._running:
            self._decode()
        fresh = [s for s in admitted if not s.cancelled]
        for s in admitted:
            s.done = s.done or s.cancelled
        if fresh:
            self._prefill(fresh)
        self._publish()

    def _decode(self) -> None:
        assert self._mask is not None
        rows = self._running
        last = torch.tensor([[s.tokens[-1]] for s in rows], device=self.device)
        positions = torch.tensor([[s.length] for s in rows], device=self.device)
        ones = torch.ones((len(rows), 1), dtype=self._mask.dtype, device=self.device)
        self._mask = torch.cat([self._mask, ones], 1)
        started = time.perf_counter()
        out = self.model(
            input_ids=last,
            attention_mask=self._mask,
            position_ids=positions,
            use_cache=True,
            **{self._cache_name: self._cache},
        )
        self._metrics.forward(len(rows), time.perf_counter() - started)
        self._cache = out[self._cache_name]
        going = self._emit(rows, out.logits[:, -1, :])
        if len(going) < len(rows):
            self._keep(going)

    def _prefill(self, fresh: list[GenerationSequence]) -> None:
        width = max(len(s.prompt) for s in fresh)
        ids = torch.full((len(fresh), width), self.pad_id, dtype=torch.long)
        mask = torch.zeros((len(fresh), width), dtype=torch.long)
        for row, s in enumerate(fresh):
            ids[row, width - len(s.prompt) :] = torch.tensor(s.prompt)
            mask[row, width - len(s.prompt) :] = 1
            s.generator = torch.Generator().manual_seed(s.seed)
        positions = (mask.cumsum(-1) - 1).clamp(min=0)
        mask = mask.to(self.device)
        started = time.perf_counter()
        out = self.model(
            input_ids=ids.to(self.device),
            attention_mask=mask,
            position_ids=positions.to(self.device),
            use_cache=True,
            logits_to_keep=1,
        )
        self._metrics.forward(len(fresh), time.perf_counter() - started)
        self._metrics.prompt_tokens(sum(len(s.prompt) for s in fresh))
        cache = out[self._cache_name]
        layers = getattr(cache, "layers", None)
        if layers is None or any(type(layer).__name__ != "DynamicLayer" for layer in layers):
            raise ConfigError(
                f"{type(self.model).__name__} keeps a {type(cache).__name__} the continuous engine cannot batch; "
                "set transformer.generation.engine: static"
            )
        going = self._emit(fresh, out.logits[:, -1, :])
        if not going:
            return
        if len(going) < len(fresh):
            mask = _select_rows(cache, mask, going)
        self._join(cache, mask)
        self._running.extend(fresh[i] for i in going)

    def _emit(self, rows: list[GenerationSequence], logits: torch.Tensor) -> list[int]:
        """Sample each row's token and deliver it; the indices of the rows that go on."""
        sampler = RowSampler(
            [s.temperature for s in rows],
            [s.top_p for s in rows],
            [s.generator for s in rows],  # type: ignore[misc]
        )
        chosen = sampler.choose(logits.float()).tolist()
        self._metrics.generated_tokens(len(rows))
        now = time.perf_counter()
        going: list[int] = []
        for i, (s, token) in enumerate(zip(rows, chosen)):
            if s.tokens:
                self._metrics.time_per_token(now - s.last_token_at)
            else:
                self._metrics.first_token(now - s.arrived)
            s.last_token_at = now
            s.tokens.append(token)
            if s.cancelled:
                s.done = True
                continue
            chunk = self._advance(s, token)
            self._deliver(s, chunk)
            if chunk.finish_reason is None:
                going.append(i)
        return going

    def _advance(self, s: GenerationSequence, token: int) -> Chunk:
        decoder = s.decoder
        assert decoder is not None
        if token == self.eos_id and not s.ignore_eos:
            s.tokens.pop()
            return Chunk(decoder.finish(s.tokens), len(s.tokens), "stop")
        text, stopped = decoder.add(s.tokens)
        if stopped:
            return Chunk(text, len(s.tokens), "stop")
        if len(s.tokens) >= s.max_new_tokens:
            return Chunk(text + decoder.finish(s.tokens), len(s.tokens), "length")
        return Chunk(text, len(s.tokens))

    def _deliver(self, s: GenerationSequence, item: Chunk | BaseException) -> None:
        if isinstance(item, BaseException) or item.finish_reason is not None:
            s.done = True
        if s.deliver is not None:
            try:
                s.deliver(item)
            except RuntimeError:  # the request's event loop is closed (shutting down)
                s.cancelled = True

    def _end(self, s: GenerationSequence, error: BaseException) -> None:
        if not s.done:
            self._deliver(s, error)
        s.done = True

    # ---- the batched cache ------------------------------------------------------------------
    def _join(self, cache: Any, mask: torch.Tensor) -> None:
        """Append prefilled rows (their cache and mask) to the running ones, right-aligned."""
        if self._cache is None or self._mask is None:
            self._cache, self._mask = cache, mask
            return
        width = max(self._mask.shape[1], mask.shape[1])
        for mine, theirs in zip(self._cache.layers, cache.layers):
            mine.keys = torch.cat([_left_pad(mine.keys, width), _left_pad(theirs.keys, width)])
            mine.values = torch.cat([_left_pad(mine.values, width), _left_pad(theirs.values, width)])
        self._mask = torch.cat([_left_pad(self._mask, width, dim=1), _left_pad(mask, width, dim=1)])

    def _keep(self, keep: list[int]) -> None:
        """Keep only these running rows."""
        self._running = [self._running[i] for i in keep]
        if not keep or self._cache is None or self._mask is None:
            self._running, self._cache, self._mask = [], None, None
            return
        self._mask = _select_rows(self._cache, self._mask, keep)

    def _publish(self) -> None:
        width = 0 if self._mask is None else self._mask.shape[1]
        self._metrics.state(len(self._running), len(self._waiting), len(self._running) * width)


class _Unrecorded:
    """Stands in for the metrics while nothing should be recorded."""

    def __getattr__(self, name: str) -> Callable[..., None]:
        return lambda *args: None


def _select_rows(cache: Any, mask: torch.Tensor, keep: list[int]) -> torch.Tensor:
    """Cut ``cache`` down to the rows ``keep`` and the columns they use; their mask."""
    index = torch.tensor(keep, device=mask.device)
    mask = mask.index_select(0, index)
    used = mask.any(0).nonzero()
    start = int(used[0]) if len(used) else mask.shape[1]
    for layer in cache.layers:
        layer.keys = layer.keys.index_select(0, index)[:, :, start:]
        layer.values = layer.values.index_select(0, index)[:, :, start:]
    return mask[:, start:]


def _left_pad(tensor: torch.Tensor, width: int, dim: int = -2) -> torch.Tensor:
    """``tensor`` with zeros in front along ``dim`` up to ``width``."""
    missing = width - tensor.shape[dim]
    if missing == 0:
        return tensor
    shape = list(tensor.shape)
    shape[dim] = missing
    return torch.cat([tensor.new_zeros(shape), tensor], dim=dim)
