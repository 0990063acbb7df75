"""What every classifier family shares: outputs, top-k, softmax and V1 predictions."""

from __future__ import annotations

from typing import Any

import numpy as np

from predictors.config import TensorSpec
from predictors.errors import ConfigError
from predictors.inputs import int_parameter

Outputs = dict[str, np.ndarray]


class ClassifierOutputs:
    """Mixin for families whose ``run`` returns ``logits``; needs ``self.config.labels``."""

    config: Any

    @property
    def num_classes(self) -> int:
        labels = self.config.labels
        if not labels:
            raise ConfigError("a classifier's model config needs 'labels'")
        return len(labels)

    def output_specs(self) -> list[TensorSpec]:
        k = self.num_classes
        return [
            TensorSpec(name="probabilities", datatype="FP32", shape=[-1, k]),
            TensorSpec(name="label", datatype="INT64", shape=[-1]),
            TensorSpec(name="top_k_labels", datatype="INT64", shape=[-1, -1], optional=True),
            TensorSpec(name="top_k_probabilities", datatype="FP32", shape=[-1, -1], optional=True),
        ]

    def check_parameters(self, parameters: dict[str, Any]) -> None:
        int_parameter(parameters, "top_k", 1, self.num_classes)

    @staticmethod
    def probabilities(logits: Any) -> np.ndarray:
        """Softmax on the model's device (numpy logits: in numpy), returned as float32 numpy."""
        if isinstance(logits, np.ndarray):
            shifted = (logits - logits.max(axis=-1, keepdims=True)).astype(np.float32, copy=False)
            np.exp(shifted, out=shifted)
            shifted /= shifted.sum(axis=-1, keepdims=True)
            return shifted
        import torch

        return torch.softmax(logits.float(), dim=-1).cpu().numpy()

    def finish(self, outputs: Outputs, parameters: dict[str, Any]) -> Outputs:
        probs = outputs["probabilities"]
        result = {"probabilities": probs, "label": probs.argmax(axis=1).astype(np.int64)}
        top_k = parameters.get("top_k")
        if top_k:
            order = np.argsort(-probs, axis=1, kind="stable")[:, :top_k]
            result["top_k_labels"] = order.astype(np.int64)
            result["top_k_probabilities"] = np.take_along_axis(probs, order, axis=1)
        return result

    def format_v1(self, outputs: Outputs, parameters: dict[str, Any]) -> list[Any]:
        labels = self.config.labels
        predictions = []
        for i, label in enumerate(outputs["label"].tolist()):
            prediction: dict[str, Any] = {
                "label": label,
                "class_name": labels[label],
                "probabilities": outputs["probabilities"][i].tolist(),
            }
            if "top_k_labels" in outputs:
                prediction["top_k"] = [
                    {"label": k, "class_name": labels[k], "probability": p}
                    for k, p in zip(outputs["top_k_labels"][i].tolist(), outputs["top_k_probabilities"][i].tolist())
                ]
            predictions.append(prediction)
        return predictions
