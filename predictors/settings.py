"""Typed server settings, parsed once in ``main()`` from flags and ``MAAS_*`` environment variables."""

from __future__ import annotations

import argparse
import os
from enum import Enum
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from predictors.errors import ConfigError

ENV_PREFIX = "MAAS_"


class Device(str, Enum):
    AUTO = "auto"
    CPU = "cpu"
    CUDA = "cuda"


class DType(str, Enum):
    AUTO = "auto"
    FLOAT32 = "float32"
    FLOAT16 = "float16"
    BFLOAT16 = "bfloat16"


class Settings(BaseModel):
    """Everything the predictor server can be told; each field is a ``--flag`` and a ``MAAS_FLAG``."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    model_dir: str = Field(description="Model directory or storage URI (file://, pvc://, s3://, gs://, hf://).")
    model_name: str | None = Field(None, description="Name on the endpoint path; default: the model config's name.")
    family: str | None = Field(None, description="Model family, overriding the model config (image, sequence, ...).")
    host: str = Field("0.0.0.0", description="Address the HTTP and gRPC servers bind.")
    max_batch_size: int = Field(32, ge=1, le=65536, description="Most items one forward pass takes.")
    max_batch_delay_ms: float = Field(
        5.0, ge=0, le=10_000, description="Longest wait for more requests while others are on their way."
    )
    inline_forward_ms: float | None = Field(
        None,
        ge=0,
        description="Forward passes measured faster than this run on the event loop, not a thread; default: "
        "0.5, or 250 where the process has one usable core (a thread buys no parallelism there, only switches).",
    )
    max_queue_size: int = Field(4096, ge=1, description="Most items waiting for the model; more get 429.")
    max_queue_wait_ms: float = Field(
        30_000, gt=0, description="Longest a request may wait for the model; then it gets 503 and Retry-After."
    )
    max_kv_tokens: int | None = Field(
        None,
        ge=1,
        description="Text generation (continuous engine): most tokens the KV cache holds, padding included; a "
        "sequence waits for room (up to --max_queue_wait_ms, then 503). Default: --max_batch_size x the "
        "model's maximum length.",
    )
    drain_delay_s: float = Field(
        0.0, ge=0, le=600, description="On SIGTERM, report not-ready this long before closing the listeners."
    )
    device: Device = Field(Device.AUTO, description="Where the model runs: auto picks cuda when available.")
    dtype: DType = Field(DType.AUTO, description="Weights and compute dtype; float16/bfloat16 need CUDA.")
    torch_threads: int | None = Field(
        None, ge=1, description="torch intra-op threads; default: the usable cores (affinity and cgroup CPU quota)."
    )
    allocator_cache_mb: int = Field(
        256,
        ge=0,
        description="Freed CPU memory (glibc malloc) kept for the next forward passes instead of being handed "
        "back to the OS and faulted in again; blocks up to 32 MiB are reused. 0: glibc's defaults.",
    )
    warmup: bool = Field(True, description="Run warm-up forward passes before reporting ready.")
    max_request_mb: float = Field(64.0, gt=0, description="Largest request body accepted, in MiB (413 above).")
    max_tensor_elements: int = Field(
        1 << 24, ge=1, description="Most elements one request tensor may hold (413 above)."
    )
    max_element_mb: float = Field(16.0, gt=0, description="Largest BYTES element (text, image), in MiB (413 above).")
    access_log: bool = Field(
        False,
        description="Write one access-log line per HTTP request (on as well when --access_log_format is given); "
        "off by default, as Triton's, since formatting a line per request costs throughput.",
    )

    @classmethod
    def add_arguments(cls, parser: argparse.ArgumentParser) -> None:
        """Add one ``--flag`` per field, its default read from ``MAAS_<FLAG>`` when set; a flag kserve's
        parser already has (``--model_name``) takes maas's default and help."""
        taken = {flag: action for action in parser._actions for flag in action.option_strings}
        for name, field in cls.model_fields.items():
            flag = f"--{name}"
            env = os.environ.get(ENV_PREFIX + name.upper())
            default = env if env is not None else (None if field.is_required() else field.default)
            if isinstance(default, Enum):
                default = default.value
            if flag in taken:
                taken[flag].default, taken[flag].help = default, field.description
                continue
            kwargs: dict[str, Any] = {"default": default, "help": field.description}
            if field.annotation is bool:
                kwargs["type"] = _strtobool
            parser.add_argument(flag, **kwargs)

    @classmethod
    def from_namespace(cls, ns: argparse.Namespace) -> Settings:
        """Validate parsed flags; a bad value stops start-up with a message naming it."""
        values = {name: getattr(ns, name) for name in cls.model_fields if getattr(ns, name, None) is not None}
        try:
            return cls(**values)
        except ValidationError as exc:
            problems = "; ".join(f"--{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
            raise ConfigError(f"invalid settings: {problems}; see --help") from exc


def _strtobool(value: str | bool) -> bool:
    if isinstance(value, bool):
        return value
    lowered = value.strip().lower()
    if lowered in {"1", "true", "yes", "on"}:
        return True
    if lowered in {"0", "false", "no", "off"}:
        return False
    raise argparse.ArgumentTypeError(f"expected a boolean, got {value!r}")
