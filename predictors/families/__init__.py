"""The model families, as data: a family name maps to the module and class that serve it."""

from __future__ import annotations

import importlib
from enum import Enum
from typing import TYPE_CHECKING

from predictors.errors import ConfigError

if TYPE_CHECKING:
    from predictors.base import MaasModel


class Family(str, Enum):
    IMAGE = "image"
    SEQUENCE = "sequence"
    TRANSFORMER = "transformer"
    GENERATIVE = "generative"


# imported lazily, so ``import predictors`` never pulls in torch or transformers
REGISTRY: dict[Family, str] = {
    Family.IMAGE: "predictors.families.image:ImageModel",
    Family.SEQUENCE: "predictors.families.sequence:SequenceModel",
    Family.TRANSFORMER: "predictors.families.transformer:TransformerModel",
    Family.GENERATIVE: "predictors.families.generative:GenerativeModel",
}


def model_class(family: str) -> type[MaasModel]:
    """The predictor class for ``family``; a clear error for an unknown or unavailable one."""
    try:
        key = Family(family)
    except ValueError:
        raise ConfigError(f"unknown model family {family!r}; expected one of {[f.value for f in Family]}") from None
    if key not in REGISTRY:
        raise ConfigError(f"model family {family!r} is not available in this version of maas")
    module_name, class_name = REGISTRY[key].split(":")
    return getattr(importlib.import_module(module_name), class_name)
