"""Embedding task: one vector per text, pooled over the attention mask as sentence-transformers does."""

from __future__ import annotations

from typing import Any

import numpy as np

from predictors.config import TensorSpec
from predictors.families.transformer.text import TextBatch, TransformerModel


class EmbeddingModel(TransformerModel):
    """The encoder's last hidden states, mean-pooled over real tokens (or the first token), optionally
    L2-normalised: ``embedding`` FP32 ``[-1, D]``."""

    auto_class = "AutoModel"
    onnx_output = "last_hidden_state"

    def output_specs(self) -> list[TensorSpec]:
        return [TensorSpec(name="embedding", datatype="FP32", shape=[-1, self.model.config.hidden_size])]

    def run(self, batch: TextBatch) -> dict[str, np.ndarray]:
        import torch

        hidden = self.model(**batch.tensors).last_hidden_state.float()
        if self.config.transformer.pooling == "cls":
            pooled = hidden[:, 0]
        else:
            mask = batch.tensors["attention_mask"].unsqueeze(-1).to(hidden.dtype)
            pooled = (hidden * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1e-9)
        if self.config.transformer.normalize:
            pooled = torch.nn.functional.normalize(pooled, p=2, dim=1)
        return {"embedding": pooled.cpu().numpy()}

    def format_v1(self, outputs: dict[str, np.ndarray], parameters: dict[str, Any]) -> list[Any]:
        return outputs["embedding"].tolist()
