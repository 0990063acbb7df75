"""The model directory's own description: ``maas.yaml`` (or ``maas.json``) beside the weights."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from predictors.errors import ConfigError

CONFIG_FILES = ("maas.yaml", "maas.yml", "maas.json")


class TensorSpec(BaseModel):
    """One named tensor as V2 metadata reports it; ``-1`` marks a variable dimension."""

    model_config = ConfigDict(extra="forbid")

    name: str
    datatype: Literal[
        "BOOL",
        "UINT8",
        "UINT16",
        "UINT32",
        "UINT64",
        "INT8",
        "INT16",
        "INT32",
        "INT64",
        "FP16",
        "FP32",
        "FP64",
        "BYTES",
    ]
    shape: list[int]
    optional: bool = False

    @field_validator("shape")
    @classmethod
    def _dims(cls, shape: list[int]) -> list[int]:
        if any(d < -1 or d == 0 for d in shape):
            raise ValueError(f"dimensions must be positive or -1, got {shape}")
        return shape

    def metadata(self) -> dict[str, Any]:
        return {"name": self.name, "datatype": self.datatype, "shape": self.shape}


class ModuleSpec(BaseModel):
    """How to build the torch module: a class (``pkg.mod:Class`` or ``file.py:Class`` in the
    model directory), its keyword arguments, and a ``state_dict`` file loaded with ``weights_only``."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    class_path: str = Field(alias="class")
    kwargs: dict[str, Any] = Field(default_factory=dict)
    weights: str = "weights.pt"


class ImagePreprocessing(BaseModel):
    """How an encoded image (PNG/JPEG) becomes the model's input: ``(pixel * scale - mean) / std``."""

    model_config = ConfigDict(extra="forbid")

    color_mode: Literal["L", "RGB"] = "RGB"
    scale: float = 1.0 / 255.0
    mean: list[float] = Field(default_factory=lambda: [0.0])
    std: list[float] = Field(default_factory=lambda: [1.0])
    resample: Literal["nearest", "bilinear", "bicubic", "lanczos", "box"] = "bilinear"


class SequencePreprocessing(BaseModel):
    """Limits and padding for variable-length sequences."""

    model_config = ConfigDict(extra="forbid")

    max_length: int = Field(4096, ge=1)
    pad_value: float = 0.0


class ModelConfig(BaseModel):
    """``maas.yaml``: everything the server needs to know about a model directory."""

    model_config = ConfigDict(extra="allow")

    family: str
    task: str = "classification"
    name: str | None = None
    description: str = ""
    version: str | None = None
    module: ModuleSpec | None = None
    inputs: list[TensorSpec] = Field(default_factory=list)
    outputs: list[TensorSpec] = Field(default_factory=list)
    labels: list[str] = Field(default_factory=list)
    image: ImagePreprocessing = Field(default_factory=ImagePreprocessing)
    sequence: SequencePreprocessing = Field(default_factory=SequencePreprocessing)
    metrics: dict[str, Any] = Field(default_factory=dict)

    @classmethod
    def load(cls, model_dir: Path) -> ModelConfig:
        """Read and validate the directory's config, with errors naming the file and the field."""
        if not model_dir.is_dir():
            raise ConfigError(f"model directory {model_dir} does not exist or is not a directory")
        for name in CONFIG_FILES:
            path = model_dir / name
            if path.is_file():
                break
        else:
            raise ConfigError(f"{model_dir} has no model config (one of {', '.join(CONFIG_FILES)})")
        try:
            text = path.read_text()
            raw = json.loads(text) if path.suffix == ".json" else yaml.safe_load(text)
        except (OSError, ValueError, yaml.YAMLError) as exc:
            raise ConfigError(f"{path}: cannot parse: {exc}") from exc
        if not isinstance(raw, dict):
            raise ConfigError(f"{path}: expected a mapping at the top level")
        try:
            return cls.model_validate(raw)
        except ValidationError as exc:
            problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
            raise ConfigError(f"{path}: {problems}") from exc

    def save(self, model_dir: Path) -> Path:
        """Write the config as ``maas.yaml`` (used by the reference-model script)."""
        path = model_dir / "maas.yaml"
        data = self.model_dump(mode="json", by_alias=True, exclude_none=True, exclude_defaults=True)
        path.write_text(yaml.safe_dump(data, sort_keys=False))
        return path
