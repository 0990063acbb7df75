"""ONNX Runtime for the families that offer it: one export, cached, then a session checked against torch.

A family exports its torch module to a file named by a key over everything that shapes the
export (its weights, its config, the versions of torch and ONNX Runtime). The file is written
once, atomically, under ``$MAAS_CACHE_DIR`` (else the temporary directory), and reused by every
later start. Before it serves, the family compares the session with torch on probe inputs and
refuses to load when they differ by more than ``TOLERANCE``: a traced export silently freezes
data-dependent branches, and this check is what catches it.
"""

from __future__ import annotations

import hashlib
import logging
import os
import tempfile
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import numpy as np

from predictors.errors import ConfigError

logger = logging.getLogger("maas")

EXPORT_VERSION = "1"  # bump when an export changes, so cached files are made anew
OPSET = 17
TOLERANCE = 1e-4  # the largest difference from torch allowed, relative to the output's scale


def require(setting: str) -> None:
    """Fail the load with a clear message where ONNX Runtime is not installed."""
    try:
        import onnxruntime  # noqa: F401
    except ImportError:
        raise ConfigError(f"{setting} onnxruntime needs onnxruntime: pip install onnxruntime onnx") from None


def cache_dir() -> Path:
    return Path(os.environ.get("MAAS_CACHE_DIR") or Path(tempfile.gettempdir()) / "maas-cache") / "onnx"


def cache_key(parts: Iterable[str], files: Iterable[Path]) -> str:
    """A key over the export's settings (``parts``), the files it is made from, and the versions."""
    import onnxruntime
    import torch

    digest = hashlib.sha256()
    for part in (EXPORT_VERSION, torch.__version__, onnxruntime.__version__, *parts):
        digest.update(part.encode() + b"\0")
    for file in files:
        digest.update(file.name.encode() + b"\0")
        with file.open("rb") as handle:
            for chunk in iter(lambda: handle.read(1 << 20), b""):
                digest.update(chunk)
    return digest.hexdigest()[:32]


def cached_export(path: Path, export: Callable[[Path], None], source: str, fallback: str) -> Path:
    """``path``, written by ``export`` unless it is there already; the exporter's failures fail
    the load naming ``source`` and the ``fallback`` setting."""
    if path.is_file():
        logger.info("using the cached ONNX export %s", path)
        return path
    started = time.perf_counter()
    partial = path.with_suffix(f".{os.getpid()}.partial")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        export(partial)
        partial.replace(path)  # atomic: a concurrent loader sees the whole file or none
    except OSError as exc:
        raise ConfigError(f"cannot write the ONNX export to {path.parent} ({exc}): set MAAS_CACHE_DIR") from exc
    except Exception as exc:  # the exporter's own errors: an operator it cannot express, ...
        raise ConfigError(
            f"cannot export {source} to ONNX ({type(exc).__name__}: {exc}): serve it with {fallback}"
        ) from exc
    finally:
        partial.unlink(missing_ok=True)
    logger.info("exported %s to ONNX in %.1fs: %s", source, time.perf_counter() - started, path)
    return path


def session(path: Path, threads: int) -> Any:
    """A CPU session on ``threads`` intra-op threads, with every graph optimisation on."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def relative_difference(expected: np.ndarray, got: np.ndarray) -> float:
    """The largest absolute difference relative to the outputs' scale (at least 1); inf when the
    shapes differ."""
    if got.shape != expected.shape:
        return float("inf")
    scale = max(1.0, float(np.abs(expected).max(initial=0.0)))
    return float(np.abs(got - expected).max(initial=0.0)) / scale


def check(difference: float, path: Path, source: str, fallback: str) -> None:
    """Refuse an export that differs from torch by more than ``TOLERANCE``."""
    if difference > TOLERANCE:
        raise ConfigError(
            f"the ONNX export of {source} differs from torch by {difference:.3g} (relative; allowed {TOLERANCE}): "
            f"serve it with {fallback}"
        )
    logger.info("ONNX Runtime session from %s matches torch (largest relative difference %.2g)", path, difference)
