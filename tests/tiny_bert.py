"""Tiny, untrained BERT classifiers saved with ``save_pretrained``: enough to check that the served
labels and probabilities are the model's own (the tests compare with a direct forward pass)."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import yaml

SENTIMENT = {0: "negative", 1: "neutral", 2: "positive"}
ENTITIES = {0: "O", 1: "B-PER", 2: "I-PER", 3: "B-LOC", 4: "I-LOC"}
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "vocab.txt")


def tiny_bert_dirs(minilm_dir: Path, out: Path) -> dict[str, Path]:
    """``sequence``: task inferred from the architecture; ``token``: task named in ``maas.yaml``."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import torch
    from transformers import BertConfig, BertForSequenceClassification, BertForTokenClassification

    dirs = {}
    for key, cls, labels, config in (
        ("sequence", BertForSequenceClassification, SENTIMENT, {"family": "transformer", "name": "sentiment"}),
        (
            "token",
            BertForTokenClassification,
            ENTITIES,
            {"family": "transformer", "task": "token-classification", "name": "entities"},
        ),
    ):
        torch.manual_seed(0)
        model = cls(
            BertConfig(
                vocab_size=30522,
                hidden_size=32,
                num_hidden_layers=2,
                num_attention_heads=2,
                intermediate_size=64,
                max_position_embeddings=128,
                id2label=labels,
                label2id={v: k for k, v in labels.items()},
            )
        )
        target = out / key
        model.save_pretrained(target)
        for name in TOKENIZER_FILES:
            shutil.copy2(minilm_dir / name, target / name)
        (target / "maas.yaml").write_text(yaml.safe_dump(config))
        dirs[key] = target
    return dirs
