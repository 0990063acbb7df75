"""Build a torch module from a model directory's ``module`` spec and load its ``state_dict``."""

from __future__ import annotations

import importlib
import importlib.util
from pathlib import Path
from typing import Any

from predictors.config import ModuleSpec
from predictors.errors import ConfigError


def import_class(spec: str, model_dir: Path) -> type:
    """Resolve ``package.module:Class`` or ``file.py:Class`` (relative to the model directory).

    A ``file.py`` runs code from the model directory, as TorchServe's model files do: serve
    only model directories you trust.
    """
    if ":" not in spec:
        raise ConfigError(f"module.class must look like 'package.module:Class' or 'file.py:Class', got {spec!r}")
    where, name = spec.rsplit(":", 1)
    try:
        if where.endswith(".py"):
            path = (model_dir / where).resolve()
            if model_dir.resolve() not in path.parents:
                raise ConfigError(f"module file {where!r} must lie inside the model directory")
            loaded = importlib.util.spec_from_file_location(f"maas_model_{path.stem}", path)
            if loaded is None or loaded.loader is None:
                raise ConfigError(f"cannot import {path}")
            module = importlib.util.module_from_spec(loaded)
            loaded.loader.exec_module(module)
        else:
            module = importlib.import_module(where)
        return getattr(module, name)
    except (ImportError, AttributeError, FileNotFoundError, SyntaxError) as exc:
        raise ConfigError(f"cannot load module class {spec!r}: {exc}") from exc


def build_module(spec: ModuleSpec, model_dir: Path, device: Any, dtype: Any) -> Any:
    """Instantiate the module, load its weights strictly, and put it in eval mode on ``device``."""
    import torch

    cls = import_class(spec.class_path, model_dir)
    try:
        module = cls(**spec.kwargs)
    except TypeError as exc:
        raise ConfigError(f"module.kwargs do not fit {spec.class_path}: {exc}") from exc
    weights = model_dir / spec.weights
    if not weights.is_file():
        raise ConfigError(f"weights file {weights} is missing")
    try:
        state = torch.load(weights, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise ConfigError(f"weights file {weights} is corrupt or not a state_dict: {exc}") from exc
    if not isinstance(state, dict):
        raise ConfigError(f"weights file {weights} does not hold a state_dict")
    try:
        module.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        raise ConfigError(f"the model config does not match its weights ({weights.name}): {exc}") from exc
    return module.to(device=device, dtype=dtype).eval()
