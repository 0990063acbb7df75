#!/usr/bin/env python
"""Train maas's reference models on scikit-learn's digits and write servable model directories.

    python scripts/reference_models.py --out .models            # every reference model
    python scripts/reference_models.py --out .models --only digits-cnn

Each directory holds ``maas.yaml`` (family, inputs, labels, held-out metrics), ``weights.pt``
(a ``state_dict``) and ``heldout.npz`` (the held-out split, so anyone can check the recorded
accuracy against the served model). Fixed seeds: the same machine gives the same weights.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

SEED = 0
LABELS = [str(d) for d in range(10)]


def digits_split() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Digits as float32 in [0, 1], 8x8, split 80/20 stratified with a fixed seed."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    digits = load_digits()
    x = (digits.images / 16.0).astype(np.float32)
    y = digits.target.astype(np.int64)
    x_train, x_test, y_train, y_test = train_test_split(x, y, test_size=0.2, stratify=y, random_state=SEED)
    return x_train, x_test, y_train, y_test


def train(model, inputs: Callable, x: np.ndarray, y: np.ndarray, epochs: int, lr: float) -> None:  # type: ignore[no-untyped-def]
    """Plain Adam with cross-entropy over shuffled mini-batches (seeded)."""
    import torch

    generator = torch.Generator().manual_seed(SEED)
    optimiser = torch.optim.Adam(model.parameters(), lr=lr)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimiser, epochs)
    xt, yt = torch.from_numpy(x), torch.from_numpy(y)
    model.train()
    for _ in range(epochs):
        order = torch.randperm(len(xt), generator=generator)
        for start in range(0, len(order), 64):
            idx = order[start : start + 64]
            optimiser.zero_grad()
            loss = torch.nn.functional.cross_entropy(model(*inputs(xt[idx])), yt[idx])
            loss.backward()
            optimiser.step()
        scheduler.step()
    model.eval()


def accuracy(model, inputs: Callable, x: np.ndarray, y: np.ndarray) -> float:  # type: ignore[no-untyped-def]
    import torch

    with torch.inference_mode():
        predicted = model(*inputs(torch.from_numpy(x))).argmax(dim=1).numpy()
    return float((predicted == y).mean())


def held_out_metrics(acc: float, y_train: np.ndarray, y_test: np.ndarray) -> dict:
    return {
        "test_accuracy": acc,
        "test_samples": len(y_test),
        "train_samples": len(y_train),
        "split": "sklearn digits, 80/20 stratified, random_state=0",
        "seed": SEED,
    }


def write(out: Path, model, config: dict, x_test: np.ndarray, y_test: np.ndarray) -> Path:  # type: ignore[no-untyped-def]
    import torch

    from predictors.config import ModelConfig

    out.mkdir(parents=True, exist_ok=True)
    torch.save(model.state_dict(), out / "weights.pt")
    np.savez_compressed(out / "heldout.npz", x=x_test, y=y_test)
    ModelConfig.model_validate(config).save(out)
    write_examples(out, config["inputs"][0]["name"], x_test[:2])
    return out


def write_examples(out: Path, input_name: str, x: np.ndarray) -> None:
    """Ready-to-send request bodies (``curl -d @example-v2.json``) for two held-out samples."""
    v1 = {"instances": x.tolist()}
    v2 = {"inputs": [{"name": input_name, "datatype": "FP32", "shape": list(x.shape), "data": x.ravel().tolist()}]}
    (out / "example-v1.json").write_text(json.dumps(v1))
    (out / "example-v2.json").write_text(json.dumps(v2))


def digits_cnn(out: Path) -> dict:
    """A CNN on 1x8x8 images."""
    import torch

    from predictors.zoo import ConvClassifier

    torch.manual_seed(SEED)
    x_train, x_test, y_train, y_test = digits_split()
    x_train, x_test = x_train[:, None], x_test[:, None]
    kwargs = {"in_channels": 1, "num_classes": 10, "image_size": 8, "channels": [32, 64], "hidden": 128}
    model = ConvClassifier(**kwargs)
    as_inputs = lambda x: (x,)  # noqa: E731
    train(model, as_inputs, x_train, y_train, epochs=30, lr=2e-3)
    acc = accuracy(model, as_inputs, x_test, y_test)
    config = {
        "family": "image",
        "task": "classification",
        "name": "digits-cnn",
        "version": "1",
        "description": "CNN trained on scikit-learn's 8x8 digits (pixels scaled to [0, 1]).",
        "module": {"class": "predictors.zoo:ConvClassifier", "kwargs": kwargs, "weights": "weights.pt"},
        "inputs": [{"name": "input", "datatype": "FP32", "shape": [-1, 1, 8, 8]}],
        "labels": LABELS,
        "image": {"color_mode": "L", "scale": 1 / 255, "mean": [0.0], "std": [1.0], "resample": "bilinear"},
        "metrics": held_out_metrics(acc, y_train, y_test),
    }
    write(out, model, config, x_test, y_test)
    return config["metrics"]


def digits_lstm(out: Path) -> dict:
    """An LSTM reading the 8 rows of each image as 8 time steps of 8 features."""
    import torch

    from predictors.zoo import SequenceClassifier

    torch.manual_seed(SEED)
    x_train, x_test, y_train, y_test = digits_split()
    kwargs = {"input_size": 8, "num_classes": 10, "hidden_size": 96, "num_layers": 1, "cell": "lstm"}
    model = SequenceClassifier(**kwargs)
    as_inputs = lambda x: (x, torch.full((len(x),), x.shape[1], dtype=torch.int64))  # noqa: E731
    train(model, as_inputs, x_train, y_train, epochs=40, lr=5e-3)
    acc = accuracy(model, as_inputs, x_test, y_test)
    config = {
        "family": "sequence",
        "task": "classification",
        "name": "digits-lstm",
        "version": "1",
        "description": "LSTM over the rows of scikit-learn's 8x8 digits (8 steps of 8 features in [0, 1]).",
        "module": {"class": "predictors.zoo:SequenceClassifier", "kwargs": kwargs, "weights": "weights.pt"},
        "inputs": [{"name": "input", "datatype": "FP32", "shape": [-1, -1, 8]}],
        "labels": LABELS,
        "sequence": {"max_length": 256, "pad_value": 0.0},
        "metrics": held_out_metrics(acc, y_train, y_test),
    }
    write(out, model, config, x_test, y_test)
    return config["metrics"]


BUILDERS: dict[str, Callable[[Path], dict]] = {"digits-cnn": digits_cnn, "digits-lstm": digits_lstm}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, required=True, help="folder to write model directories into")
    parser.add_argument("--only", default="", help=f"comma-separated subset of {list(BUILDERS)}")
    parser.add_argument("--threads", type=int, default=2, help="torch threads for training")
    args = parser.parse_args(argv)
    import torch

    torch.set_num_threads(args.threads)
    names = [n for n in args.only.split(",") if n] or list(BUILDERS)
    unknown = set(names) - set(BUILDERS)
    if unknown:
        parser.error(f"unknown model(s) {sorted(unknown)}; choose from {list(BUILDERS)}")
    for name in names:
        started = time.perf_counter()
        result = BUILDERS[name](args.out / name)
        print(
            f"{name}: test_accuracy={result['test_accuracy']:.4f} on {result['test_samples']} held-out "
            f"samples, trained in {time.perf_counter() - started:.1f}s -> {args.out / name}"
        )


if __name__ == "__main__":
    main()
