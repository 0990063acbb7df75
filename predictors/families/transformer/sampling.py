"""Per-row sampling for ``generate``: each row keeps its own temperature, top-p, random stream and
token limit, so a row's text never depends on the rows it was batched with.

Imported only when a text-generation model loads (it subclasses ``transformers`` classes).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from transformers import (
    GenerationConfig,
    LogitsProcessor,
    LogitsProcessorList,
    StoppingCriteria,
    StoppingCriteriaList,
)


class RowSampler(LogitsProcessor):
    """Picks every row's next token itself and hands ``generate`` scores that are -inf everywhere
    else, so generate's greedy step takes exactly that token. Temperature 0 is greedy; otherwise
    the row draws one uniform number per step from its own generator (inverse-CDF over the top-p
    nucleus), whichever rows it shares the batch with."""

    def __init__(self, temperatures: Sequence[float], top_ps: Sequence[float], generators: Sequence[torch.Generator]):
        self.temperatures = torch.tensor(temperatures, dtype=torch.float32)
        self.top_ps = torch.tensor(top_ps, dtype=torch.float32)
        self.generators = generators
        self.sampled = [i for i, t in enumerate(temperatures) if t > 0]

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        return self.pick(scores.float())  # type: ignore[return-value]

    def pick(self, scores: torch.Tensor) -> torch.Tensor:
        chosen = self.choose(scores)
        picked = torch.full_like(scores, float("-inf"))
        picked.scatter_(1, chosen[:, None], 0.0)
        return picked

    def choose(self, scores: torch.Tensor) -> torch.Tensor:
        """Every row's next token, ``[rows]`` (each sampled row draws once from its generator)."""
        chosen = scores.argmax(dim=-1)
        if self.sampled:
            rows = torch.tensor(self.sampled, device=scores.device)
            temperature = self.temperatures[self.sampled].to(scores.device)[:, None]
            top_p = self.top_ps[self.sampled].to(scores.device)[:, None]
            probs, order = torch.softmax(scores[rows] / temperature, dim=-1).sort(dim=-1, descending=True, stable=True)
            probs = probs * ((probs.cumsum(dim=-1) - probs) < top_p)  # the nucleus; the top token always stays
            cdf = probs.cumsum(dim=-1)
            draws = torch.stack([torch.rand((), generator=self.generators[i]) for i in self.sampled])
            threshold = (draws.to(scores.device) * cdf[:, -1])[:, None]
            index = torch.searchsorted(cdf, threshold, right=True).clamp(max=cdf.shape[-1] - 1)
            chosen[rows] = order.gather(-1, index).squeeze(-1)
        return chosen


class RowLimits(StoppingCriteria):
    """Stops each row after its own number of new tokens."""

    def __init__(self, prompt_length: int, limits: Sequence[int], device: torch.device) -> None:
        self.prompt_length = prompt_length
        self.limits = torch.tensor(limits, device=device)

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor, **kwargs: object) -> torch.BoolTensor:
        return (input_ids.shape[1] - self.prompt_length) >= self.limits  # type: ignore[return-value]


def generate(
    model: torch.nn.Module,
    inputs: dict[str, torch.Tensor],
    *,
    limits: Sequence[int],
    temperatures: Sequence[float],
    top_ps: Sequence[float],
    seeds: Sequence[int],
    pad_token_id: int,
    eos_token_id: int | None,
) -> torch.Tensor:
    """New tokens for a left-padded batch, ``[rows, max(limits)]`` (past a row's end: padding);
    ``eos_token_id`` None: no row stops before its limit."""
    prompt_length = inputs["input_ids"].shape[1]
    generators = [torch.Generator().manual_seed(seed) for seed in seeds]
    config = GenerationConfig(
        max_new_tokens=max(limits),
        do_sample=False,
        num_beams=1,
        pad_token_id=pad_token_id,
        # None would fall back to the model's own end-of-text token; -1 never matches one
        eos_token_id=-1 if eos_token_id is None else eos_token_id,
    )
    output = model.generate(  # type: ignore[operator]
        **inputs,
        generation_config=config,
        logits_processor=LogitsProcessorList([RowSampler(temperatures, top_ps, generators)]),
        stopping_criteria=StoppingCriteriaList([RowLimits(prompt_length, limits, inputs["input_ids"].device)]),
    )
    return output[:, prompt_length:]
