"""Names, small value types and argument validation shared by every command."""

from __future__ import annotations

import itertools
import re
from dataclasses import dataclass
from enum import Enum

from .errors import ValidationError

GROUP, VERSION, PLURAL = "serving.kserve.io", "v1beta1", "inferenceservices"
MODEL_FORMATS = ("maas-image", "maas-sequence", "maas-transformer", "maas-generative")

DEPLOYMENT_MODE = "serving.kserve.io/deploymentMode"
PREFIX = "maas.io/"
ANN_VERSION = PREFIX + "version"  # the stable version (spec.predictor in Standard mode)
ANN_STABLE_URI = PREFIX + "stable-storage-uri"  # the stable URI, kept while a canary runs
ANN_CANARY_VERSION = PREFIX + "canary-version"
ANN_ROLLOUT_STATE = PREFIX + "rollout-state"  # controller-owned JSON, lets a rollout resume
# Annotations a user sets to ask `run` for a progressive rollout.
ANN_ROLLOUT_URI = PREFIX + "rollout-storage-uri"
ANN_ROLLOUT_VERSION = PREFIX + "rollout-version"
ANN_ROLLOUT_STEPS = PREFIX + "rollout-steps"
ANN_ROLLOUT_INTERVAL = PREFIX + "rollout-interval"
ANN_ROLLOUT_MAX_ERROR_RATE = PREFIX + "rollout-max-error-rate"
ANN_ROLLOUT_MAX_P99_MS = PREFIX + "rollout-max-p99-ms"

URI_SCHEMES = ("s3", "gs", "pvc", "hf", "oci", "http", "https", "hdfs", "webhdfs", "azure")
_URI = re.compile(r"^(?P<scheme>[a-z][a-z0-9+.-]*)://(?P<rest>\S+)$")
_VERSION = re.compile(r"^[A-Za-z0-9]([A-Za-z0-9._-]{0,61}[A-Za-z0-9])?$")
_NAME = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")
_DURATION = re.compile(r"^(?P<value>\d+(?:\.\d+)?)(?P<unit>ms|s|m|h)?$")
_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, None: 1.0}


class Mode(str, Enum):
    """KServe deployment modes that carry a canary differently (see ``traffic``)."""

    KNATIVE = "Serverless"
    STANDARD = "Standard"

    @classmethod
    def parse(cls, value: str) -> Mode:
        """Accept KServe's spellings: Serverless/Knative, Standard/RawDeployment."""
        lowered = value.strip().lower()
        if lowered in ("serverless", "knative"):
            return cls.KNATIVE
        if lowered in ("standard", "rawdeployment", "raw"):
            return cls.STANDARD
        raise ValidationError(f"unsupported deployment mode {value!r} (use Serverless or Standard/RawDeployment)")


@dataclass(frozen=True)
class Version:
    """A model version: a name and the storage URI it serves."""

    name: str
    storage_uri: str


def validate_name(name: str) -> str:
    if not _NAME.match(name):
        raise ValidationError(f"invalid InferenceService name {name!r} (a DNS-1035 label)")
    return name


def validate_uri(uri: str) -> str:
    """A storage URI KServe's storage initializer understands, e.g. ``s3://bucket/model``."""
    match = _URI.match(uri or "")
    if not match or match["scheme"] not in URI_SCHEMES:
        raise ValidationError(
            f"malformed storage URI {uri!r}: expected SCHEME://PATH with SCHEME one of " + ", ".join(URI_SCHEMES)
        )
    return uri


def validate_version(version: str) -> str:
    if not _VERSION.match(version or ""):
        raise ValidationError(f"invalid version {version!r}: 1-63 letters, digits, '.', '_', '-'")
    return version


def validate_percent(percent: int) -> int:
    if not isinstance(percent, int) or isinstance(percent, bool) or not 0 <= percent <= 100:
        raise ValidationError(f"percent must be an integer in 0..100, got {percent!r}")
    return percent


def parse_duration(text: str | float) -> float:
    """``60s``, ``2m``, ``500ms``, ``1h`` or a bare number of seconds."""
    if isinstance(text, (int, float)):
        seconds = float(text)
    else:
        match = _DURATION.match(text.strip())
        if not match:
            raise ValidationError(f"invalid duration {text!r} (e.g. 30s, 2m, 500ms)")
        seconds = float(match["value"]) * _UNITS[match["unit"]]
    if seconds < 0:
        raise ValidationError(f"duration must not be negative: {text!r}")
    return seconds


def parse_steps(text: str) -> tuple[int, ...]:
    """``10,25,50,100``: strictly increasing percents ending at 100."""
    try:
        steps = tuple(int(part) for part in text.split(",") if part.strip())
    except ValueError:
        raise ValidationError(f"invalid steps {text!r}: comma-separated integers") from None
    for step in steps:
        validate_percent(step)
    if not steps or steps[-1] != 100 or any(a >= b for a, b in itertools.pairwise(steps)):
        raise ValidationError(f"steps must increase strictly and end at 100, got {text!r}")
    return steps
