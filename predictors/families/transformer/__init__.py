"""Transformer family: HuggingFace ``transformers`` models loaded from a ``save_pretrained`` directory.

The task comes from ``task`` in ``maas.yaml`` or, when that is not set, from the architecture in
the model's ``config.json`` (``BertModel`` -> embedding, ``...ForSequenceClassification``,
``...ForTokenClassification``, ``...ForCausalLM``/``...LMHeadModel`` -> text-generation). Options
live under ``transformer:`` (``path``, ``max_length``, ``pooling``, ``normalize``, ``generation``).

Every task takes text: V2 input ``text`` BYTES ``[-1]``; V1 ``{"instances": ["a text", ...]}`` or
``{"instances": [{"text": "a text"}, ...]}``. Texts are tokenised per request, truncated to the
model's maximum length (a longer text is cut, never refused), and padded per batch; the attention
mask keeps padding out of every result, so a batched text gives what it gives alone.

==========================  ==========================================  ==================================
task                        V2 outputs                                  V1 prediction per text
==========================  ==========================================  ==================================
embedding                   ``embedding`` FP32 ``[-1, D]``              ``[float, ...]``
sequence-classification     ``probabilities`` FP32 ``[-1, K]``,         ``{"label", "class_name",
                            ``label`` INT64 ``[-1]`` (+ ``top_k``)      "probabilities"}``
token-classification        ``probabilities`` FP32 ``[-1, T, K]``,      ``{"tokens": [{"token", "start",
                            ``label`` INT64 ``[-1, T]``, ``offsets``    "end", "label", "class_name",
                            INT64 ``[-1, T, 2]``, ``tokens`` BYTES      "score"}, ...]}``
text-generation             ``text`` BYTES ``[-1]``, ``num_tokens``     ``{"text", "num_tokens",
                            INT64 ``[-1]``, ``finish_reason`` BYTES     "finish_reason"}``
==========================  ==========================================  ==================================
"""

from __future__ import annotations

from enum import Enum
from pathlib import Path

from predictors.config import ModelConfig
from predictors.errors import ConfigError
from predictors.families.transformer.classification import SequenceClassificationModel, TokenClassificationModel
from predictors.families.transformer.embedding import EmbeddingModel
from predictors.families.transformer.generation import TextGenerationModel
from predictors.families.transformer.text import TransformerModel, hf_architectures

__all__ = ["TASKS", "Task", "TransformerModel", "task_class"]


class Task(str, Enum):
    EMBEDDING = "embedding"
    SEQUENCE_CLASSIFICATION = "sequence-classification"
    TOKEN_CLASSIFICATION = "token-classification"
    TEXT_GENERATION = "text-generation"


TASKS: dict[Task, type[TransformerModel]] = {
    Task.EMBEDDING: EmbeddingModel,
    Task.SEQUENCE_CLASSIFICATION: SequenceClassificationModel,
    Task.TOKEN_CLASSIFICATION: TokenClassificationModel,
    Task.TEXT_GENERATION: TextGenerationModel,
}

# architecture name endings, most specific first: ``GPT2LMHeadModel`` is a language model, not a bare ``Model``
ARCHITECTURE_TASKS: list[tuple[str, Task]] = [
    ("ForSequenceClassification", Task.SEQUENCE_CLASSIFICATION),
    ("ForTokenClassification", Task.TOKEN_CLASSIFICATION),
    ("ForCausalLM", Task.TEXT_GENERATION),
    ("LMHeadModel", Task.TEXT_GENERATION),
    ("Model", Task.EMBEDDING),
]


def task_class(config: ModelConfig, model_dir: Path) -> type[TransformerModel]:
    """The class for the task ``maas.yaml`` names, or the one the model's architecture implies."""
    if "task" in config.model_fields_set:
        try:
            task = Task(config.task)
        except ValueError:
            raise ConfigError(
                f"unknown transformer task {config.task!r}; expected one of {[t.value for t in Task]}"
            ) from None
    else:
        architectures = hf_architectures(model_dir / config.transformer.path)
        matches = [t for a in architectures for ending, t in ARCHITECTURE_TASKS if a.endswith(ending)]
        if not matches:
            raise ConfigError(f"cannot tell the task of architectures {architectures}; set 'task' in the model config")
        task = matches[0]
        config.task = task.value
    return TASKS[task]
