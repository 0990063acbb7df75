"""The model directory's own description: ``maas.yaml`` (or ``maas.json``) beside the weights."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

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
    # the layout the module and its input batches use: channels_last runs convolutions about 1.3x
    # (one image) to 1.9x (batches) faster on CPU (oneDNN) and suits tensor cores on GPU
    memory_format: Literal["channels_last", "contiguous"] = "channels_last"
    # or ONNX Runtime (CPU): exported at load (cached), checked against torch; 1.4x the digits CNN
    runtime: Literal["torch", "onnxruntime"] = "torch"


class SequencePreprocessing(BaseModel):
    """Limits and padding for variable-length sequences."""

    model_config = ConfigDict(extra="forbid")

    max_length: int = Field(4096, ge=1)
    pad_value: float = 0.0


class GenerationOptions(BaseModel):
    """Text-generation defaults (a request's parameters override them) and the limit on new tokens."""

    model_config = ConfigDict(extra="forbid")

    max_new_tokens: int = Field(32, ge=1)
    max_new_tokens_limit: int = Field(512, ge=1)
    temperature: float = Field(1.0, ge=0, le=2)
    top_p: float = Field(1.0, gt=0, le=1)
    # continuous: sequences join and leave the running batch at every step (engine.py); static: a
    # batch of requests generates together until its longest text is done (sampling.py)
    engine: Literal["continuous", "static"] = "continuous"

    @model_validator(mode="after")
    def _within_limit(self) -> GenerationOptions:
        if self.max_new_tokens > self.max_new_tokens_limit:
            raise ValueError(f"max_new_tokens {self.max_new_tokens} is over max_new_tokens_limit")
        return self


class TransformerOptions(BaseModel):
    """A HuggingFace ``transformers`` model saved with ``save_pretrained`` (weights, config, tokenizer)."""

    model_config = ConfigDict(extra="forbid")

    path: str = "."  # the save_pretrained directory, relative to the model directory
    max_length: int | None = Field(None, ge=2)  # tokens per text; default: the tokenizer's or model's limit
    pooling: Literal["mean", "cls"] = "mean"  # embedding: over the attention mask, or the first token
    normalize: bool = True  # embedding: L2-normalise each vector
    # encoder tasks may run on ONNX Runtime: exported at load (cached), checked against torch
    runtime: Literal["torch", "onnxruntime"] = "torch"
    generation: GenerationOptions = Field(default_factory=GenerationOptions)


class GenerativeOptions(BaseModel):
    """A VAE or GAN on images: the latent size, the image shape and the range its output lies in."""

    model_config = ConfigDict(extra="forbid")

    kind: Literal["vae", "gan"]
    latent_dim: int = Field(ge=1)
    image_shape: list[int]  # [C, H, W]
    output_range: tuple[float, float] = (0.0, 1.0)  # mapped linearly onto [0, 1]
    max_samples: int = Field(256, ge=1)  # the most ``num_samples`` one request may ask for

    @field_validator("image_shape")
    @classmethod
    def _chw(cls, shape: list[int]) -> list[int]:
        if len(shape) != 3 or shape[0] not in (1, 3) or min(shape) < 1:
            raise ValueError(f"image_shape must be [C, H, W] with 1 or 3 channels, got {shape}")
        return shape

    @field_validator("output_range")
    @classmethod
    def _range(cls, bounds: tuple[float, float]) -> tuple[float, float]:
        if not bounds[0] < bounds[1]:
            raise ValueError(f"output_range must be [low, high] with low < high, got {list(bounds)}")
        return bounds


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
    transformer: TransformerOptions = Field(default_factory=TransformerOptions)
    generative: GenerativeOptions | None = None
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
            raise ConfigError(
                f"{model_dir} has no model config (one of {', '.join(CONFIG_FILES)}); pass --model_dir the "
                "model's own directory, or write its maas.yaml (see the README)"
            )
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
