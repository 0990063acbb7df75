"""Sequence and token classification: labels and probabilities from the model's ``id2label``."""

from __future__ import annotations

from typing import Any

import numpy as np

from predictors.classifier import ClassifierOutputs
from predictors.config import TensorSpec
from predictors.errors import ConfigError
from predictors.families.transformer.text import TextBatch, TransformerModel


class LabelledModel(TransformerModel):
    """Takes its labels from the model's ``id2label`` unless the model config lists them."""

    onnx_output = "logits"

    def setup(self) -> None:
        names = self.model.config.id2label
        count = self.model.config.num_labels
        if not self.config.labels:
            self.config.labels = [str(names.get(i, i)) for i in range(count)]
        elif len(self.config.labels) != count:
            raise ConfigError(f"the model config lists {len(self.config.labels)} labels; the model has {count}")


class SequenceClassificationModel(ClassifierOutputs, LabelledModel):
    """One label per text: the classifier outputs every classifier family gives (``top_k`` included)."""

    auto_class = "AutoModelForSequenceClassification"

    def run(self, batch: TextBatch) -> dict[str, np.ndarray]:
        return {"probabilities": self.probabilities(self.model(**batch.tensors).logits)}


class TokenClassificationModel(LabelledModel):
    """One label per token. Rows are padded to the request's longest text; special tokens and padding
    carry label -1, and ``offsets`` are each token's ``[start, end)`` characters (-1 for padding)."""

    auto_class = "AutoModelForTokenClassification"
    tokenizer_options = {"return_offsets_mapping": True, "return_special_tokens_mask": True}

    def setup(self) -> None:
        super().setup()
        if not self.tokenizer.is_fast:
            raise ConfigError("token-classification needs a fast tokenizer (tokenizer.json) for character offsets")

    def output_specs(self) -> list[TensorSpec]:
        k = len(self.config.labels)
        return [
            TensorSpec(name="probabilities", datatype="FP32", shape=[-1, -1, k]),
            TensorSpec(name="label", datatype="INT64", shape=[-1, -1]),
            TensorSpec(name="offsets", datatype="INT64", shape=[-1, -1, 2]),
            TensorSpec(name="tokens", datatype="BYTES", shape=[-1, -1]),
        ]

    def run(self, batch: TextBatch) -> dict[str, np.ndarray]:
        import torch

        probs = torch.softmax(self.model(**batch.tensors).logits.float(), dim=-1).cpu().numpy()
        ids = batch.tensors["input_ids"].cpu().numpy()
        rows, width = ids.shape
        labels = probs.argmax(axis=-1).astype(np.int64)
        offsets = np.full((rows, width, 2), -1, dtype=np.int64)
        tokens = np.full((rows, width), b"", dtype=object)
        lengths = np.zeros(rows, dtype=np.int64)
        for i, (spans, special) in enumerate(zip(batch.extras("offset_mapping"), batch.extras("special_tokens_mask"))):
            n = lengths[i] = len(spans)
            offsets[i, :n] = spans
            tokens[i, :n] = [t.encode("utf-8") for t in self.tokenizer.convert_ids_to_tokens(ids[i, :n].tolist())]
            labels[i, :n][np.asarray(special, dtype=bool)] = -1
            labels[i, n:] = -1
        return {"probabilities": probs, "label": labels, "offsets": offsets, "tokens": tokens, "length": lengths}

    def finish(self, outputs: dict[str, np.ndarray], parameters: dict[str, Any]) -> dict[str, np.ndarray]:
        width = int(outputs["length"].max())  # this request's own longest text, whatever it was batched with
        return {name: array[:, :width] for name, array in outputs.items() if name != "length"}

    def format_v1(self, outputs: dict[str, np.ndarray], parameters: dict[str, Any]) -> list[Any]:
        names = self.config.labels
        predictions = []
        for probs, labels, offsets, tokens in zip(
            outputs["probabilities"], outputs["label"], outputs["offsets"], outputs["tokens"]
        ):
            predictions.append(
                {
                    "tokens": [
                        {
                            "token": token.decode("utf-8", "replace"),
                            "start": int(start),
                            "end": int(end),
                            "label": int(label),
                            "class_name": names[label],
                            "score": float(p[label]),
                        }
                        for p, label, (start, end), token in zip(probs, labels, offsets, tokens)
                        if label >= 0
                    ]
                }
            )
        return predictions
