"""Text generation with a causal LM: per-request ``max_new_tokens``, ``temperature``, ``top_p`` and ``seed``.

Parameters (checked before batching; out of range is a 400 naming the parameter):

- ``max_new_tokens``: integer from 1 to ``transformer.generation.max_new_tokens_limit`` (and below the
  model's maximum length); the prompt keeps its last ``max_length - max_new_tokens`` tokens.
- ``temperature``: 0 to 2; 0 is greedy decoding.
- ``top_p``: above 0, at most 1 (nucleus sampling).
- ``ignore_eos``: true to go on past the end-of-text token, to exactly ``max_new_tokens`` (benchmarks).
- ``seed``: integer from 0 to 2**63 - 1. A request's text ``i`` samples from its own random stream,
  derived from ``(seed, i)``, so the same request with the same seed gives the same texts, batched
  with other requests or not. Without a seed, each request draws a fresh one.

Defaults come from ``transformer.generation`` in ``maas.yaml``. Requests share forward passes
whatever their parameters: every row samples and stops on its own.

``transformer.generation.engine`` picks how: ``continuous`` (default, ``engine.py``) lets each text
join the running batch at the next step and leave it when it stops, within ``--max_kv_tokens``;
``static`` runs a batch of requests through ``generate`` until its longest text is done.
Every protocol (V1, V2, gRPC, OpenAI) goes through ``generate_text``/``stream`` on the same engine.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Hashable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from predictors.base import Job
from predictors.config import TensorSpec
from predictors.errors import ConfigError, InvalidRequest
from predictors.families.transformer.text import TextBatch, TextPart, TransformerModel
from predictors.inputs import bool_parameter, int_parameter, number_parameter, seed_parameter


@dataclass(frozen=True)
class Sampling:
    """One request's generation settings."""

    max_new_tokens: int
    temperature: float
    top_p: float
    seed: int
    ignore_eos: bool = False

    def row_seeds(self, rows: int) -> list[int]:
        """Independent seeds for the request's texts, derived from ``(seed, row)``."""
        return [int(np.random.SeedSequence([self.seed, row]).generate_state(1, np.uint64)[0]) for row in range(rows)]


class TextGenerationModel(TransformerModel):
    """Continues each text: ``text`` BYTES, ``num_tokens`` INT64 and ``finish_reason`` BYTES (stop | length)."""

    auto_class = "AutoModelForCausalLM"
    padding_side = "left"  # new tokens follow every prompt directly
    truncation_side = "left"  # a long prompt keeps its end

    continuous: Any = None  # the ContinuousEngine, when transformer.generation.engine is continuous

    def setup(self) -> None:
        from predictors.families.transformer import sampling

        self._sampling = sampling
        tokenizer = self.tokenizer
        self.eos_id = tokenizer.eos_token_id
        if tokenizer.pad_token_id is None:
            if self.eos_id is None:
                raise ConfigError("the tokenizer has neither a pad nor an end-of-text token to pad prompts with")
            tokenizer.pad_token = tokenizer.eos_token
        start = tokenizer.bos_token_id if tokenizer.bos_token_id is not None else self.eos_id
        self.start_ids = [] if start is None else [start]  # stands in for an empty prompt
        options = self.config.transformer.generation
        self.limit = min(options.max_new_tokens_limit, self.max_length - 1)
        if options.max_new_tokens > self.limit:
            raise ConfigError(f"transformer.generation.max_new_tokens is over this model's limit of {self.limit}")
        if options.engine == "continuous":
            self.start_continuous()

    def start_continuous(self) -> None:
        from predictors.families.transformer.engine import ContinuousEngine, GenerationSequence

        settings = self.settings
        engine = ContinuousEngine(
            self.model,
            self.tokenizer,
            name=self.name,
            eos_id=self.eos_id,
            pad_id=self.tokenizer.pad_token_id,
            device=self.device,
            max_rows=settings.max_batch_size,
            max_kv_tokens=settings.max_kv_tokens or settings.max_batch_size * self.max_length,
            max_waiting=settings.max_queue_size,
            max_wait=settings.max_queue_wait_ms / 1000.0,
        )
        if settings.warmup:  # on this thread, before the scheduler's starts
            prompt = self.encode(["Warm-up"], {}).inputs[0]["input_ids"]
            engine.run_alone(
                [GenerationSequence(prompt, 2, temperature, 1.0, seed) for seed, temperature in enumerate((0.0, 1.0))]
            )
        engine.start()
        self.continuous = engine

    def stop(self) -> None:
        """kserve's teardown on unload: the scheduler fails what it still holds, then ends."""
        if self.continuous is not None:
            self.continuous.stop()
        super().stop()

    # ---- generation through the engine ----------------------------------------------------
    def stream(self, prompt: list[int], sampling: Sampling, seed: int, stop: Sequence[str] = ()) -> AsyncIterator[Any]:
        """One text's ``engine.Chunk``s as they are produced (continuous engine)."""
        from predictors.families.transformer.engine import GenerationSequence

        sequence = GenerationSequence(
            prompt,
            sampling.max_new_tokens,
            sampling.temperature,
            sampling.top_p,
            seed,
            stop=stop,
            ignore_eos=sampling.ignore_eos,
        )
        return self.continuous.stream(sequence)

    async def generate_text(
        self, prompt: list[int], sampling: Sampling, seed: int, stop: Sequence[str] = ()
    ) -> tuple[str, int, str]:
        """One text's continuation, token count and finish reason, collected from ``stream``."""
        pieces, count, reason = [], 0, "length"
        chunks = self.stream(prompt, sampling, seed, stop)
        try:
            async for chunk in chunks:
                pieces.append(chunk.text)
                count, reason = chunk.num_tokens, chunk.finish_reason or reason
        finally:
            await chunks.aclose()  # type: ignore[attr-defined]
        return "".join(pieces), count, reason

    async def predict(self, job: Job[TextPart], headers: dict[str, str] | None = None) -> Job[TextPart]:
        if self.continuous is None:
            return await super().predict(job, headers)
        part = job.part
        seeds = part.options.row_seeds(len(part.inputs))
        for row in part.inputs:
            self.continuous.check(len(row["input_ids"]), part.options.max_new_tokens)
        tasks = [
            asyncio.ensure_future(self.generate_text(row["input_ids"], part.options, seed))
            for row, seed in zip(part.inputs, seeds)
        ]
        try:
            results = await asyncio.gather(*tasks)
        finally:  # one text failing (or the client going) ends them all
            for task in tasks:
                task.cancel()
        job.outputs = {
            "text": _objects([text.encode("utf-8") for text, _, _ in results]),
            "num_tokens": np.array([count for _, count, _ in results], dtype=np.int64),
            "finish_reason": _objects([reason.encode() for _, _, reason in results]),
        }
        return job

    def output_specs(self) -> list[TensorSpec]:
        return [
            TensorSpec(name="text", datatype="BYTES", shape=[-1]),
            TensorSpec(name="num_tokens", datatype="INT64", shape=[-1]),
            TensorSpec(name="finish_reason", datatype="BYTES", shape=[-1]),
        ]

    def check_parameters(self, parameters: dict[str, Any]) -> None:
        self.sampling(parameters)

    def sampling(self, parameters: dict[str, Any]) -> Sampling:
        defaults = self.config.transformer.generation
        max_new_tokens = int_parameter(parameters, "max_new_tokens", 1, self.limit)
        temperature = number_parameter(parameters, "temperature", 0, 2)
        top_p = number_parameter(parameters, "top_p", 0, 1, above=True)
        return Sampling(
            max_new_tokens=defaults.max_new_tokens if max_new_tokens is None else max_new_tokens,
            temperature=defaults.temperature if temperature is None else temperature,
            top_p=defaults.top_p if top_p is None else top_p,
            seed=seed_parameter(parameters),
            ignore_eos=bool_parameter(parameters, "ignore_eos"),
        )

    def encode(self, texts: list[str], parameters: dict[str, Any]) -> TextPart:
        """Prompts keep their last ``max_length - max_new_tokens`` tokens; an empty one starts from BOS."""
        sampling = self.sampling(parameters)
        encoded = self.tokenizer(texts, truncation=True, max_length=self.max_length - sampling.max_new_tokens)
        inputs = []
        for i, ids in enumerate(encoded["input_ids"]):
            ids = ids or self.start_ids
            if not ids:
                raise InvalidRequest(f"text {i} is empty and this model has no start-of-text token to begin from")
            inputs.append({"input_ids": ids, "attention_mask": [1] * len(ids)})
        return TextPart(inputs=inputs, extras=[{} for _ in texts], options=sampling)

    def batch_key(self, job: Job[TextPart]) -> Hashable:
        return job.part.options.ignore_eos  # (static engine: generate stops at EOS for a whole batch or none)

    def run(self, batch: TextBatch) -> dict[str, np.ndarray]:
        rows = [part.options for part in batch.parts for _ in part.inputs]
        eos_id = None if rows[0].ignore_eos else self.eos_id
        limits = [options.max_new_tokens for options in rows]
        new = self._sampling.generate(
            self.model,
            batch.tensors,
            limits=limits,
            temperatures=[options.temperature for options in rows],
            top_ps=[options.top_p for options in rows],
            seeds=[seed for part in batch.parts for seed in part.options.row_seeds(len(part.inputs))],
            pad_token_id=self.tokenizer.pad_token_id,
            eos_token_id=eos_id,
        ).cpu()
        texts, counts, reasons = [], [], []
        for tokens, limit in zip(new.tolist(), limits):
            tokens = tokens[:limit]
            stopped = eos_id is not None and eos_id in tokens
            if stopped:
                tokens = tokens[: tokens.index(eos_id)]
            texts.append(self.tokenizer.decode(tokens, skip_special_tokens=True).encode("utf-8"))
            counts.append(len(tokens))
            reasons.append(b"stop" if stopped else b"length")
        return {
            "text": _objects(texts),
            "num_tokens": np.array(counts, dtype=np.int64),
            "finish_reason": _objects(reasons),
        }

    def format_v1(self, outputs: dict[str, np.ndarray], parameters: dict[str, Any]) -> list[Any]:
        return [
            {"text": text.decode("utf-8"), "num_tokens": int(count), "finish_reason": reason.decode()}
            for text, count, reason in zip(outputs["text"], outputs["num_tokens"], outputs["finish_reason"])
        ]

    def _warmup(self) -> None:
        if self.continuous is None:  # (the continuous engine warmed up as it started)
            super()._warmup()

    def warmup_parts(self) -> list[TextPart]:
        greedy = self.encode(["Warm-up"], {"max_new_tokens": 2, "temperature": 0})
        sampled = self.encode(["Warm-up"], {"max_new_tokens": 2, "temperature": 1.0, "seed": 0})
        return [greedy, sampled] * max(1, self.settings.max_batch_size // 2)


def _objects(items: list[bytes]) -> np.ndarray:
    array = np.empty(len(items), dtype=object)
    array[:] = items
    return array
