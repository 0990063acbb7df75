"""Sequence family: RNN/LSTM/GRU classifiers on variable-length FP32 ``[-1, -1, F]`` sequences.

Sequences of different lengths, in one request or across a batch, are padded to the longest and
passed with their true lengths; the model packs them (``pack_padded_sequence``), so every result
equals running that sequence alone. A V2 request may add ``lengths`` INT64 ``[-1]`` to say how
much of each padded row is real.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from predictors.base import MaasModel
from predictors.classifier import ClassifierOutputs
from predictors.config import TensorSpec
from predictors.errors import ConfigError, InvalidRequest
from predictors.inputs import check_tensor, float_instances, reject_unknown, v2_input
from predictors.v2 import V2Request

LENGTHS_INPUT = "lengths"
LENGTHS_SPEC = TensorSpec(name=LENGTHS_INPUT, datatype="INT64", shape=[-1], optional=True)
Part = tuple[np.ndarray, np.ndarray]  # padded [n, T, F] float32, lengths [n] int64


class SequenceModel(ClassifierOutputs, MaasModel[Part]):
    """Serves a torch module whose forward is ``(x [N, T, F], lengths [N]) -> logits``."""

    def build(self) -> None:
        spec = self.tensor_spec
        if spec.datatype != "FP32" or spec.shape[:2] != [-1, -1] or len(spec.shape) != 3 or spec.shape[2] == -1:
            raise ConfigError(f"a sequence model's input must be FP32 [-1, -1, F], got {spec.datatype} {spec.shape}")
        self.module = self.build_torch_module()

    @property
    def tensor_spec(self) -> TensorSpec:
        return self.first_input("[-1, -1, F]")

    @property
    def features(self) -> int:
        return self.tensor_spec.shape[2]

    def input_specs(self) -> list[TensorSpec]:
        return [self.tensor_spec, LENGTHS_SPEC]

    def prepare_v2(self, request: V2Request) -> tuple[Part, int]:
        spec = self.tensor_spec
        reject_unknown(request, [spec.name, LENGTHS_INPUT])
        x = v2_input(request, spec)
        n, t, _ = x.shape
        self._check_length(t, spec.name)
        if LENGTHS_INPUT in request.inputs:
            lengths = request.inputs[LENGTHS_INPUT]
            if request.datatypes[LENGTHS_INPUT] not in ("INT32", "INT64") or lengths.shape != (n,):
                raise InvalidRequest(f"input '{LENGTHS_INPUT}': must be INT64 (or INT32) of shape [{n}]")
            lengths = lengths.astype(np.int64)
            if (lengths < 1).any() or (lengths > t).any():
                raise InvalidRequest(f"input '{LENGTHS_INPUT}': every length must be between 1 and {t}")
        else:
            lengths = np.full(n, t, dtype=np.int64)
        return (x.astype(np.float32, copy=False), lengths), n

    def prepare_v1(self, instances: list[Any], parameters: dict[str, Any]) -> tuple[Part, int]:
        rows = []
        for i, instance in enumerate(instances):
            if not isinstance(instance, list) or not instance:
                raise InvalidRequest(f"instances[{i}]: a sequence must be a non-empty list of time steps")
            self._check_length(len(instance), f"instances[{i}]")
            rows.append(float_instances(f"instances[{i}]", instance, (len(instance), self.features)))
        lengths = np.array([len(r) for r in rows], dtype=np.int64)
        padded = self._pad(rows, int(lengths.max()))
        check_tensor(self.tensor_spec, padded, "FP32")
        return (padded, lengths), len(rows)

    def _check_length(self, steps: int, name: str) -> None:
        limit = self.config.sequence.max_length
        if not 1 <= steps <= limit:
            raise InvalidRequest(f"input '{name}': sequence length must be from 1 to {limit}, got {steps}")

    def _pad(self, rows: Sequence[np.ndarray], steps: int) -> np.ndarray:
        out = np.full((len(rows), steps, self.features), self.config.sequence.pad_value, dtype=np.float32)
        for i, row in enumerate(rows):
            out[i, : len(row)] = row
        return out

    def split(self, part: Part, rows: int) -> list[Part]:
        padded, lengths = part
        return [(padded[start : start + rows], lengths[start : start + rows]) for start in range(0, len(padded), rows)]

    def collate(self, parts: Sequence[Part]) -> Any:
        import torch

        steps = max(p[0].shape[1] for p in parts)
        if len(parts) == 1:
            x, lengths = parts[0]
        else:
            x = np.full(
                (sum(len(p[1]) for p in parts), steps, self.features), self.config.sequence.pad_value, dtype=np.float32
            )
            row = 0
            for px, _ in parts:
                x[row : row + len(px), : px.shape[1]] = px
                row += len(px)
            lengths = np.concatenate([p[1] for p in parts])
        return self.tensor(x), torch.from_numpy(lengths)

    def run(self, batch: Any) -> dict[str, np.ndarray]:
        x, lengths = batch
        return {"probabilities": self.probabilities(self.module(x, lengths))}

    def warmup_parts(self) -> list[Part]:
        steps = min(8, self.config.sequence.max_length)
        x = np.zeros((1, steps, self.features), dtype=np.float32)
        return [(x, np.array([steps], dtype=np.int64))] * self.settings.max_batch_size
