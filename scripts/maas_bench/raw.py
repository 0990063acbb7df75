"""The raw contender: the model's forward pass in-process, no server, at its best batch size.

    python -m maas_bench.raw --model_dir DIR [--seconds 1] [--batch-sizes 1,8,32,64,128,256]

Prints JSON: items/s per batch size (sustained: the items of every forward over their total time,
as a server's throughput counts them, slow forwards included), the best, the batch size a server
should take (the largest within 5% of the best), and the p50 latency of one item (batch 1).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

from predictors.classifier import ClassifierOutputs
from predictors.memory import keep_freed_memory
from predictors.settings import Settings


def measure(fn, seconds: float) -> list[float]:  # type: ignore[no-untyped-def]
    fn()
    times = []
    deadline = time.perf_counter() + seconds
    while time.perf_counter() < deadline or len(times) < 5:
        started = time.perf_counter()
        fn()
        times.append(time.perf_counter() - started)
    return times


# batch sizes this close to the best count as as good: raw's per-batch figures move by about 3% between
# runs (so a 3% rule flipped between 128 and 256 for the digits CNN), and a server pays per batch
# (64-image requests at --max_batch_size 256 against 128, A/B: JSON +2%, binary +4%, gRPC +8%)
SERVING_BATCH_WITHIN = 0.05
TEXT = "A quick benchmark sentence about serving models on Kubernetes with KServe."


def forward_fn(model_dir: Path, batch: int):  # type: ignore[no-untyped-def]
    """A callable running one forward of ``batch`` items, as the predictor family would."""
    from predictors.config import ModelConfig

    if ModelConfig.load(model_dir).family == "transformer":
        return embed_fn(model_dir, batch)
    from predictors.modules import build_module

    config = ModelConfig.load(model_dir)
    assert config.module is not None
    model = build_module(config.module, model_dir, torch.device("cpu"), torch.float32)
    shape = [batch if d == -1 and i == 0 else (8 if d == -1 else d) for i, d in enumerate(config.inputs[0].shape)]
    x = torch.from_numpy(np.random.default_rng(0).random(shape, dtype=np.float32))
    if config.family == "image":  # run as the image family runs it: runtime, memory format
        from predictors.families.image import in_layout, runnable

        model, layout = runnable(model, config.image, tuple(shape[1:]), model_dir, torch.get_num_threads())  # type: ignore[arg-type]
        x = x.numpy() if layout is None else in_layout(x, layout)
    args = (x, torch.full((batch,), shape[1])) if config.family == "sequence" else (x,)

    def run() -> None:
        with torch.inference_mode():
            ClassifierOutputs.probabilities(model(*args))

    return run


def embed_fn(model_dir: Path, batch: int):  # type: ignore[no-untyped-def]
    """Tokenise ``batch`` texts, one forward, mean-pool and normalise: sentence embeddings, on the
    runtime the model config names (torch, or the same checked ONNX Runtime session maas serves)."""
    from transformers import AutoModel, AutoTokenizer

    from predictors.config import ModelConfig

    tokenizer = AutoTokenizer.from_pretrained(model_dir, local_files_only=True)
    model = AutoModel.from_pretrained(model_dir, local_files_only=True).eval()
    if ModelConfig.load(model_dir).transformer.runtime == "onnxruntime":
        from predictors.families.transformer.onnx import onnx_encoder

        model = onnx_encoder(model, tokenizer, "last_hidden_state", model_dir, torch.get_num_threads())
    texts = [TEXT] * batch

    def run() -> None:
        tokens = tokenizer(texts, padding=True, truncation=True, max_length=256, return_tensors="pt")
        with torch.inference_mode():
            hidden = model(**tokens).last_hidden_state
            mask = tokens["attention_mask"].unsqueeze(-1).float()
            torch.nn.functional.normalize((hidden * mask).sum(1) / mask.sum(1), dim=1).numpy()

    return run


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model_dir", type=Path, required=True)
    parser.add_argument("--seconds", type=float, default=1.0)
    parser.add_argument("--batch-sizes", default="1,8,32,64,128,256")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    keep_freed_memory(Settings.model_fields["allocator_cache_mb"].default)  # as maas's process does
    per_batch = {}
    p50_one = 0.0
    for batch in (int(b) for b in args.batch_sizes.split(",")):
        times = measure(forward_fn(args.model_dir, batch), args.seconds)
        per_batch[batch] = batch * len(times) / sum(times)
        if batch == 1:
            p50_one = float(np.median(times)) * 1000
    best = max(per_batch, key=per_batch.__getitem__)
    summary = {
        "items_per_s": per_batch[best],
        "best_batch": best,
        "serving_batch": serving_batch(per_batch),
        "per_batch": per_batch,
        "p50_ms_one": p50_one,
    }
    print(json.dumps(summary))


def serving_batch(per_batch: dict[int, float], within: float = SERVING_BATCH_WITHIN) -> int:
    """The largest batch size whose throughput is within ``within`` of the best: what a user sets
    as ``--max_batch_size`` (a server pays per batch, so where the curve is flat, bigger is better)."""
    best = max(per_batch.values())
    return max(size for size, rate in per_batch.items() if rate >= (1 - within) * best)


if __name__ == "__main__":
    main()
