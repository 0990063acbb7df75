"""What every transformer task shares: loading with ``transformers``, text inputs, tokenising, padding."""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from predictors.base import MaasModel
from predictors.config import ModelConfig, TensorSpec
from predictors.errors import ConfigError, InvalidRequest
from predictors.inputs import reject_unknown, v2_input
from predictors.v2 import V2Request

logger = logging.getLogger("maas")

TEXT_INPUT = TensorSpec(name="text", datatype="BYTES", shape=[-1])
_NO_LIMIT = 1_000_000  # tokenizers without a known limit report a huge model_max_length


@dataclass
class TextPart:
    """One request's texts, tokenised (truncated, not yet padded)."""

    inputs: list[dict[str, list[int]]]  # per text: the model's inputs (input_ids, attention_mask, ...)
    extras: list[dict[str, Any]] = field(default_factory=list)  # per text: what else the task asked for
    options: Any = None  # the request's task options (generation settings)


@dataclass
class TextBatch:
    """Padded model inputs on the device, with the parts they came from (in order)."""

    tensors: dict[str, Any]
    parts: Sequence[TextPart]

    def extras(self, name: str) -> list[Any]:
        return [extra[name] for part in self.parts for extra in part.extras]


class TransformerModel(MaasModel[TextPart]):
    """Serves a ``save_pretrained`` directory through the ``transformers`` Auto class of its task."""

    auto_class: ClassVar[str] = "AutoModel"
    padding_side: ClassVar[str] = "right"
    truncation_side: ClassVar[str] = "right"
    tokenizer_options: ClassVar[dict[str, Any]] = {}
    onnx_output: ClassVar[str | None] = None  # the output an ONNX export returns; None: torch only

    tokenizer: Any
    model: Any
    max_length: int

    @classmethod
    def resolve(cls, config: ModelConfig, model_dir: Path) -> type[MaasModel[Any]]:
        from predictors.families.transformer import task_class

        return task_class(config, model_dir)

    @property
    def hf_dir(self) -> Path:
        return self.model_dir / self.config.transformer.path

    def build(self) -> None:
        os.environ.setdefault("HF_HUB_OFFLINE", "1")  # everything is in the model directory
        import transformers

        path = self.hf_dir
        started = time.perf_counter()
        logger.info("%s: loading the tokenizer from %s", self.name, path)
        try:
            self.tokenizer = transformers.AutoTokenizer.from_pretrained(path, local_files_only=True)
            logger.info("%s: loading %s weights as %s", self.name, self.auto_class, self.dtype)
            model = getattr(transformers, self.auto_class).from_pretrained(
                path, dtype=self.dtype, local_files_only=True
            )
        except (OSError, ValueError, KeyError) as exc:
            raise ConfigError(f"cannot load a {self.config.task} model from {path}: {exc}") from exc
        logger.info("%s: moving the weights to %s", self.name, self.device)
        self.model = model.to(self.device).eval()
        self.tokenizer.padding_side = self.padding_side
        self.tokenizer.truncation_side = self.truncation_side
        self.max_length = self._max_length()
        self.setup()
        parameters = sum(p.numel() for p in self.model.parameters())
        logger.info(
            "%s: %s with %.1fM parameters, up to %d tokens per text, loaded in %.1fs",
            self.name,
            type(self.model).__name__,
            parameters / 1e6,
            self.max_length,
            time.perf_counter() - started,
        )
        if self.config.transformer.runtime == "onnxruntime":
            self.model = self.onnx_model()

    def onnx_model(self) -> Any:
        """The loaded model as a checked ONNX Runtime session (see ``onnx.py``)."""
        if self.onnx_output is None:
            raise ConfigError(
                f"transformer.runtime onnxruntime serves the encoder tasks; {self.config.task} runs on torch"
            )
        if self.device.type != "cpu":
            raise ConfigError("transformer.runtime onnxruntime runs on the CPU: pass --device cpu or use runtime torch")
        from predictors.families.transformer.onnx import onnx_encoder

        return onnx_encoder(self.model, self.tokenizer, self.onnx_output, self.hf_dir, self.threads)

    def setup(self) -> None:
        """Task-specific checks and state once the tokenizer and model are loaded."""

    def _max_length(self) -> int:
        configured = self.config.transformer.max_length
        known = [
            n
            for n in (self.tokenizer.model_max_length, getattr(self.model.config, "max_position_embeddings", None))
            if isinstance(n, int) and 1 < n < _NO_LIMIT
        ]
        if configured is not None:
            if known and configured > min(known):
                raise ConfigError(f"transformer.max_length {configured} is over the model's limit of {min(known)}")
            return configured
        if not known:
            raise ConfigError("the model does not say how many tokens it takes: set transformer.max_length")
        return min(known)

    # ---- requests -----------------------------------------------------------------------
    def input_specs(self) -> list[TensorSpec]:
        return [TEXT_INPUT]

    def prepare_v2(self, request: V2Request) -> tuple[TextPart, int]:
        reject_unknown(request, [TEXT_INPUT.name])
        raw = v2_input(request, TEXT_INPUT)
        texts = [_utf8(item, i) for i, item in enumerate(raw)]
        return self.encode(texts, request.parameters), len(texts)

    def prepare_v1(self, instances: list[Any], parameters: dict[str, Any]) -> tuple[TextPart, int]:
        texts = [_v1_text(instance, i) for i, instance in enumerate(instances)]
        return self.encode(texts, parameters), len(texts)

    def encode(self, texts: list[str], parameters: dict[str, Any]) -> TextPart:
        """Tokenise one request's texts, truncated to the model's length."""
        return self.tokenize(texts, self.max_length)

    def tokenize(self, texts: list[str], max_length: int) -> TextPart:
        encoded = self.tokenizer(texts, truncation=True, max_length=max_length, **self.tokenizer_options)
        names = [n for n in self.tokenizer.model_input_names if n in encoded]
        others = [n for n in encoded if n not in names]
        part = TextPart(
            inputs=[{n: encoded[n][i] for n in names} for i in range(len(texts))],
            extras=[{n: encoded[n][i] for n in others} for i in range(len(texts))],
        )
        for i, row in enumerate(part.inputs):
            if not row["input_ids"]:
                raise InvalidRequest(f"text {i} has no tokens for this model")
        return part

    def collate(self, parts: Sequence[TextPart]) -> TextBatch:
        rows = [row for part in parts for row in part.inputs]
        padded = self.tokenizer.pad(rows, padding=True, return_tensors="np")
        return TextBatch({name: self.tensor(np.asarray(array)) for name, array in padded.items()}, parts)

    def finish(self, outputs: dict[str, np.ndarray], parameters: dict[str, Any]) -> dict[str, np.ndarray]:
        return outputs

    def warmup_parts(self) -> list[TextPart]:
        return [self.encode(["Warm-up text."], {})] * self.settings.max_batch_size


def _utf8(item: bytes, index: int) -> str:
    try:
        return item.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise InvalidRequest(f"input 'text': element {index} is not valid UTF-8 ({exc.reason})") from None


def _v1_text(instance: Any, index: int) -> str:
    text = instance.get("text") if isinstance(instance, dict) else instance
    if not isinstance(text, str):
        raise InvalidRequest(f'instances[{index}]: expected a string or {{"text": "..."}}')
    return text


def hf_architectures(hf_dir: Path) -> list[str]:
    """The ``architectures`` a ``save_pretrained`` config names (read without importing transformers)."""
    path = hf_dir / "config.json"
    try:
        architectures = json.loads(path.read_text()).get("architectures") or []
    except (OSError, ValueError) as exc:
        raise ConfigError(f"cannot read {path}: {exc}") from exc
    return [a for a in architectures if isinstance(a, str)]
