"""ONNX Runtime for the encoder tasks: the ``transformers`` model exported once, checked, then served.

``transformer.runtime: onnxruntime`` in maas.yaml (embedding, sequence and token classification).
At load, the torch model is exported to ONNX, or taken from the cache (``predictors.onnx_runtime``;
the key covers the weights, the config, the output and the versions). Before it serves, the ONNX
Runtime session must reproduce torch on padded batches of texts of several lengths; otherwise the
model fails to load with the difference it found. ONNX Runtime's CPU kernels run small batches
much faster than torch (MiniLM on one core: one text served in 6.3 ms, not 10.7).
"""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import Any

from predictors import onnx_runtime
from predictors.onnx_runtime import OPSET, cache_dir

FALLBACK = "transformer.runtime torch"
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
    onnx_runtime.require("transformer.runtime")
    path = onnx_runtime.cached_export(
        cache_path(hf_dir, tokenizer, output), lambda to: _export(model, tokenizer, output, to), str(hf_dir), FALLBACK
    )
    encoder = OnnxEncoder(onnx_runtime.session(path, threads), output, model.config, path)
    onnx_runtime.check(_difference(model, encoder, tokenizer), path, str(hf_dir), FALLBACK)
    return encoder


def cache_path(hf_dir: Path, tokenizer: Any, output: str) -> Path:
    """Where the export of ``hf_dir`` producing ``output`` is cached."""
    import transformers

    files = sorted(f for f in hf_dir.iterdir() if f.suffix in {".json", ".safetensors", ".bin"} and f.is_file())
    key = onnx_runtime.cache_key(["transformers", transformers.__version__, output, *input_names(tokenizer)], files)
    return cache_dir() / f"{key}.onnx"


def input_names(tokenizer: Any) -> list[str]:
    """The model inputs the tokenizer produces, in the model's order."""
    produced = tokenizer("probe")
    return [n for n in tokenizer.model_input_names if n in produced]


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
        if expected.ndim == 3 and got.shape == expected.shape:  # per token: compare real tokens only
            real = tokens["attention_mask"].numpy().astype(bool)
            expected, got = expected[real], got[real]
        worst = max(worst, onnx_runtime.relative_difference(expected, got))
    return worst
