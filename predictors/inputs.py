"""Shared checks of request tensors against a model's input spec (before any batching)."""

from __future__ import annotations

import math
import secrets
from typing import Any

import numpy as np

from predictors.config import TensorSpec
from predictors.errors import InvalidRequest
from predictors.tensors import array_from_list
from predictors.v2 import V2Request

MAX_SEED = 2**63 - 1


def check_tensor(spec: TensorSpec, array: np.ndarray, datatype: str) -> np.ndarray:
    """Datatype, rank, fixed dimensions, a non-empty batch and finite floats, with named errors."""
    if datatype != spec.datatype:
        raise InvalidRequest(f"input '{spec.name}': datatype must be {spec.datatype}, got {datatype}")
    if array.ndim != len(spec.shape):
        raise InvalidRequest(
            f"input '{spec.name}': expected rank {len(spec.shape)} shape {spec.shape}, got shape {list(array.shape)}"
        )
    for axis, (want, got) in enumerate(zip(spec.shape, array.shape)):
        if want != -1 and want != got:
            raise InvalidRequest(
                f"input '{spec.name}': dimension {axis} must be {want} (shape {spec.shape}), "
                f"got shape {list(array.shape)}"
            )
    if array.shape and array.shape[0] == 0:
        raise InvalidRequest(f"input '{spec.name}': the batch is empty")
    if array.dtype.kind == "f" and not np.isfinite(array).all():
        raise InvalidRequest(f"input '{spec.name}': values must be finite (found NaN or infinity)")
    return array


def v2_input(request: V2Request, spec: TensorSpec) -> np.ndarray:
    """The request's tensor for ``spec``, checked."""
    if spec.name not in request.inputs:
        raise InvalidRequest(f"input '{spec.name}' is missing; got {sorted(request.inputs)}")
    return check_tensor(spec, request.inputs[spec.name], request.datatypes[spec.name])


def reject_unknown(request: V2Request, known: list[str]) -> None:
    unknown = sorted(set(request.inputs) - set(known))
    if unknown:
        raise InvalidRequest(f"unknown input(s) {unknown}; this model takes {known}")


def float_instances(name: str, instances: Any, shape: tuple[int, ...]) -> np.ndarray:
    """V1 numeric instances as float32 of ``shape`` (strict: numbers only, rectangular)."""
    return array_from_list(name, "FP32", shape, instances)


def int_parameter(parameters: dict[str, Any], name: str, low: int, high: int) -> int | None:
    """A request parameter that must be an integer in ``[low, high]``; ``None`` when absent."""
    value = parameters.get(name)
    if value is not None and (type(value) is not int or not low <= value <= high):
        raise InvalidRequest(f"parameter '{name}' must be an integer from {low} to {high}, got {value!r}")
    return value


def seed_parameter(parameters: dict[str, Any]) -> int:
    """The request's ``seed`` (0 to 2**63 - 1), or a fresh random one when it has none."""
    seed = int_parameter(parameters, "seed", 0, MAX_SEED)
    return secrets.randbelow(MAX_SEED + 1) if seed is None else seed


def number_parameter(
    parameters: dict[str, Any], name: str, low: float, high: float, *, above: bool = False
) -> float | None:
    """A request parameter that must be a number in ``[low, high]`` (``(low, high]`` with ``above``).

    Its decimal text (``"0.7"``) counts too: gRPC request parameters have no floating-point type.
    """
    given = parameters.get(name)
    if given is None:
        return None
    value = _number(given)
    if value is None or not math.isfinite(value) or value > high or (value <= low if above else value < low):
        bounds = f"above {low} and at most {high}" if above else f"from {low} to {high}"
        raise InvalidRequest(f"parameter '{name}' must be a number {bounds}, got {given!r}")
    return value


def _number(value: Any) -> float | None:
    if type(value) in (int, float):
        return float(value)
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            return None
    return None


def bool_parameter(parameters: dict[str, Any], name: str) -> bool:
    """A request parameter that must be a boolean when given (default false)."""
    value = parameters.get(name, False)
    if type(value) is not bool:
        raise InvalidRequest(f"parameter '{name}' must be true or false, got {value!r}")
    return value
