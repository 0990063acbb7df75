"""ONNX Runtime for the encoder tasks: the ``transformers`` model exported once, checked, then served.

``transformer.runtime: onnxruntime`` in maas.yaml (embedding, sequence and token classification).
At load, the torch model is exported to ONNX, or taken from the cache (``$MAAS_CACHE_DIR``, else the
temporary directory; the key covers the weights, the config, the output and the versions). Before
it serves, the ONNX Runtime session must reproduce torch on padded batches of texts of several
lengths; otherwise the model fails to load with the difference it found. ONNX Runtime's CPU
kernels run small batches much faster than torch (MiniLM on one core: one text served in 6.3 ms, not 10.7).
"""

from __future__ import annotations

import hashlib
import logging
import os
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np

from predictors.errors import ConfigError

logger = logging.getLogger("maas")

EXPORT_VERSION = "1"  # bump when the export changes, so cached files are made anew
OPSET = 17
TOLERANCE = 1e-4  # the largest difference from torch allowed, relative to the output's scale
PROBE_TEXTS = [
    "a",
    "Serving models on Kubernetes.",
    "",
    "A longer text, so that a batch holds padding: the attention mask must keep it out of every result "
    "that the model returns for the shorter texts beside it.",
    "Ünïcödé and emoji 🚀 in one line.",
]


class OnnxEncoder:
    """Called like the ``transformers`` model it stands for: ``encoder(**tensors).<output>`` is a
    torch tensor over ONNX Runtime's result. ``config`` is the model's own; ``path`` the ONNX file."""

    def __init__(self, session: Any, output: str, config: Any, path: Path) -> None:
        self.session = session
        self.path = path
        self.output = output
        self.config = config
        self.input_names = [i.name for i in session.get_inputs()]

    def __call__(self, **tensors: Any) -> Any:
        import torch

        feeds = {name: tensors[name].cpu().numpy() for name in self.input_names}
        (result,) = self.session.run([self.output], feeds)
        return SimpleNamespace(**{self.output: torch.from_numpy(result)})


def onnx_encoder(model: Any, tokenizer: Any, output: str, hf_dir: Path, threads: int) -> OnnxEncoder:
    """The torch ``model`` as an ONNX Runtime session producing ``output``, checked against torch."""
    try:
        import onnxruntime  # noqa: F401
    except ImportError:
        raise ConfigError("transformer.runtime onnxruntime needs onnxruntime: pip install 'maas[onnx]'") from None
    path = _cached_export(model, tokenizer, output, hf_dir)
    encoder = OnnxEncoder(_session(path, threads), output, model.config, path)
    difference = _difference(model, encoder, tokenizer)
    if difference > TOLERANCE:
        raise ConfigError(
            f"the ONNX export of {hf_dir} differs from torch by {difference:.3g} (relative; allowed {TOLERANCE}): "
            "serve it with transformer.runtime torch"
        )
    logger.info("ONNX Runtime session from %s matches torch (largest relative difference %.2g)", path, difference)
    return encoder


def cache_dir() -> Path:
    return Path(os.environ.get("MAAS_CACHE_DIR") or Path(tempfile.gettempdir()) / "maas-cache") / "onnx"


def cache_path(hf_dir: Path, tokenizer: Any, output: str) -> Path:
    """Where the export of ``hf_dir`` producing ``output`` is cached."""
    return cache_dir() / f"{_key(hf_dir, input_names(tokenizer), output)}.onnx"


def input_names(tokenizer: Any) -> list[str]:
    """The model inputs the tokenizer produces, in the model's order."""
    produced = tokenizer("probe")
    return [n for n in tokenizer.model_input_names if n in produced]


def _cached_export(model: Any, tokenizer: Any, output: str, hf_dir: Path) -> Path:
    path = cache_path(hf_dir, tokenizer, output)
    if path.is_file():
        logger.info("using the cached ONNX export %s", path)
        return path
    started = time.perf_counter()
    partial = path.with_suffix(f".{os.getpid()}.partial")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        _export(model, tokenizer, output, partial)
        partial.replace(path)  # atomic: a concurrent loader sees the whole file or none
    except OSError as exc:
        raise ConfigError(f"cannot write the ONNX export to {path.parent} ({exc}): set MAAS_CACHE_DIR") from exc
    except Exception as exc:  # the exporter's own errors: an operator it cannot express, ...
        raise ConfigError(
            f"cannot export {hf_dir} to ONNX ({type(exc).__name__}: {exc}): serve it with transformer.runtime torch"
        ) from exc
    finally:
        partial.unlink(missing_ok=True)
    logger.info("exported %s to ONNX in %.1fs: %s", hf_dir, time.perf_counter() - started, path)
    return path


def _key(hf_dir: Path, names: list[str], output: str) -> str:
    import onnxruntime
    import torch
    import transformers

    digest = hashlib.sha256()
    for part in (EXPORT_VERSION, torch.__version__, transformers.__version__, onnxruntime.__version__, output, *names):
        digest.update(part.encode() + b"\0")
    for file in sorted(hf_dir.iterdir()):
        if file.suffix in {".json", ".safetensors", ".bin"} and file.is_file():
            digest.update(file.name.encode() + b"\0")
            with file.open("rb") as handle:
                for chunk in iter(lambda: handle.read(1 << 20), b""):
                    digest.update(chunk)
    return digest.hexdigest()[:32]


def _export(model: Any, tokenizer: Any, output: str, path: Path) -> None:
    import torch

    names = input_names(tokenizer)

    class Named(torch.nn.Module):
        """Positional inputs in, the one output the task reads out."""

        def __init__(self) -> None:
            super().__init__()
            self.model = model

        def forward(self, *inputs: Any) -> Any:
            return getattr(self.model(**dict(zip(names, inputs))), output)

    # two texts of different lengths: the example carries padding, so no all-ones mask is traced away
    example = tokenizer(PROBE_TEXTS[1::2], padding=True, return_tensors="pt")
    args = tuple(example[n] for n in names)
    with torch.inference_mode():
        rank = getattr(model(**example), output).dim()
    axes = {n: {0: "batch", 1: "tokens"} for n in names}
    axes[output] = {0: "batch", 1: "tokens"} if rank == 3 else {0: "batch"}
    torch.onnx.export(
        Named().eval(),
        args,
        str(path),
        input_names=names,
        output_names=[output],
        dynamic_axes=axes,
        opset_version=OPSET,
        dynamo=False,
    )


def _session(path: Path, threads: int) -> Any:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def _difference(model: Any, encoder: OnnxEncoder, tokenizer: Any) -> float:
    """The largest difference between torch and the session over real tokens, relative to the
    outputs' scale, on batches of 1, 2 and 5 texts of different lengths."""
    import torch

    worst = 0.0
    for texts in (PROBE_TEXTS[1:2], PROBE_TEXTS[2:4], PROBE_TEXTS):
        tokens = tokenizer(texts, padding=True, return_tensors="pt")
        with torch.inference_mode():
            expected = getattr(model(**tokens), encoder.output).float().numpy()
        got = getattr(encoder(**tokens), encoder.output).numpy()
        if got.shape != expected.shape:
            return float("inf")
        if expected.ndim == 3:  # per token: padding rows are undefined, compare real tokens only
            real = tokens["attention_mask"].numpy().astype(bool)
            expected, got = expected[real], got[real]
        scale = max(1.0, float(np.abs(expected).max()))
        worst = max(worst, float(np.abs(got - expected).max()) / scale)
    return worst
