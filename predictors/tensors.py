"""V2 datatypes and strict conversion of decoded request data into numpy arrays."""

from __future__ import annotations

import math
import struct
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from predictors.errors import InvalidRequest, PayloadTooLarge

NP_DTYPES: dict[str, np.dtype[Any]] = {
    "BOOL": np.dtype(np.bool_),
    "UINT8": np.dtype(np.uint8),
    "UINT16": np.dtype(np.uint16),
    "UINT32": np.dtype(np.uint32),
    "UINT64": np.dtype(np.uint64),
    "INT8": np.dtype(np.int8),
    "INT16": np.dtype(np.int16),
    "INT32": np.dtype(np.int32),
    "INT64": np.dtype(np.int64),
    "FP16": np.dtype(np.float16),
    "FP32": np.dtype(np.float32),
    "FP64": np.dtype(np.float64),
    "BYTES": np.dtype(np.object_),
}
DATATYPE_OF = {dtype: name for name, dtype in NP_DTYPES.items() if name != "BYTES"}


@dataclass(frozen=True)
class Limits:
    """Per-request tensor limits: answers over them are 413, before anything large is built."""

    max_elements: int = 1 << 24
    max_element_bytes: int = 16 << 20


# which inferred numpy kinds a JSON list may have for each target kind (no strings, no bools as numbers)
_ACCEPTED_KINDS = {"f": "fiu", "i": "iu", "u": "iu", "b": "b"}


def datatype_of(array: np.ndarray) -> str:
    """The V2 datatype name of a numpy array (object arrays are BYTES)."""
    if array.dtype == np.object_:
        return "BYTES"
    try:
        return DATATYPE_OF[array.dtype]
    except KeyError:
        raise TypeError(f"no V2 datatype for numpy dtype {array.dtype}") from None


def check_shape(name: str, shape: Any, limits: Limits) -> tuple[int, ...]:
    """Validate a declared shape and return it with its element count under the limit."""
    if not isinstance(shape, list) or not all(type(d) is int and d >= 0 for d in shape):
        raise InvalidRequest(f"input '{name}': shape must be a list of non-negative integers, got {shape!r}")
    count = math.prod(shape)
    if count > limits.max_elements:
        raise PayloadTooLarge(f"input '{name}': {count} elements is over the limit of {limits.max_elements}")
    return tuple(shape)


def array_from_list(
    name: str, datatype: str, shape: tuple[int, ...], data: Any, limits: Limits = Limits()
) -> np.ndarray:
    """Turn JSON ``data`` (flat or nested) into an array of ``shape``, refusing lossy conversions."""
    target = NP_DTYPES[datatype]
    if datatype == "BYTES":
        return bytes_array(name, shape, data, limits)
    if isinstance(data, np.ndarray):  # flat numbers of the datatype's kind (``predictors.flat_json``)
        inferred = data
    elif not isinstance(data, list):
        raise InvalidRequest(f"input '{name}': data must be a list, got {type(data).__name__}")
    else:
        try:
            inferred = np.asarray(data)
        except (ValueError, TypeError) as exc:
            raise InvalidRequest(f"input '{name}': data is not a rectangular array of numbers ({exc})") from None
    if inferred.size and inferred.dtype.kind not in _ACCEPTED_KINDS[target.kind]:
        raise InvalidRequest(
            f"input '{name}': data holds {_kind_name(inferred.dtype)} values, datatype {datatype} needs "
            f"{_kind_name(target)} values"
        )
    if target.kind in "iu" and inferred.size:
        info = np.iinfo(target)
        if inferred.min() < info.min or inferred.max() > info.max:
            raise InvalidRequest(f"input '{name}': a value is out of range for {datatype}")
    if inferred.size != math.prod(shape):
        raise InvalidRequest(
            f"input '{name}': shape {list(shape)} needs {math.prod(shape)} elements, data has {inferred.size}"
        )
    if target.kind == "f" and inferred.dtype.itemsize > target.itemsize:
        # JSON numbers are doubles: one beyond the datatype's range (1e39 as FP32) would become
        # infinity; the range check costs ~0.8 us a request (errstate), the cast is needed anyway
        try:
            with np.errstate(over="raise"):
                inferred = inferred.astype(target)
        except FloatingPointError:
            largest = np.finfo(target).max
            raise InvalidRequest(
                f"input '{name}': a value is out of range for {datatype} (largest magnitude {largest:.7g})"
            ) from None
    return inferred.astype(target, copy=False).reshape(shape)


def array_from_buffer(
    name: str, datatype: str, shape: tuple[int, ...], buffer: bytes | memoryview, limits: Limits = Limits()
) -> np.ndarray:
    """View raw little-endian tensor bytes (V2 binary extension, gRPC raw contents) without copying."""
    if datatype == "BYTES":
        return bytes_array(name, shape, deserialize_bytes(name, buffer), limits)
    dtype = NP_DTYPES[datatype]
    expected = math.prod(shape) * dtype.itemsize
    if len(buffer) != expected:
        raise InvalidRequest(
            f"input '{name}': shape {list(shape)} of {datatype} needs {expected} bytes, got {len(buffer)}"
        )
    return np.frombuffer(buffer, dtype=dtype).reshape(shape)


def bytes_array(name: str, shape: tuple[int, ...], data: Any, limits: Limits = Limits()) -> np.ndarray:
    """An object array of ``bytes`` elements; JSON strings are taken as UTF-8."""
    flat = list(_flatten(data)) if isinstance(data, list) else None
    if flat is None:
        raise InvalidRequest(f"input '{name}': BYTES data must be a list of strings")
    if len(flat) != math.prod(shape):
        raise InvalidRequest(
            f"input '{name}': shape {list(shape)} needs {math.prod(shape)} elements, data has {len(flat)}"
        )
    out = np.empty(len(flat), dtype=object)
    for i, item in enumerate(flat):
        if isinstance(item, str):
            item = item.encode("utf-8")
        elif isinstance(item, (bytes, bytearray)):
            item = bytes(item)
        else:
            raise InvalidRequest(f"input '{name}': BYTES elements must be strings, got {type(item).__name__}")
        if len(item) > limits.max_element_bytes:
            raise PayloadTooLarge(
                f"input '{name}': element {i} has {len(item)} bytes, over the limit of {limits.max_element_bytes}"
            )
        out[i] = item
    return out.reshape(shape)


def serialize_bytes(array: np.ndarray) -> bytes:
    """Length-prefixed (4-byte little-endian) concatenation of a BYTES tensor's elements."""
    parts = []
    for item in array.ravel():
        raw = item if isinstance(item, bytes) else str(item).encode("utf-8")
        parts.append(struct.pack("<I", len(raw)))
        parts.append(raw)
    return b"".join(parts)


def deserialize_bytes(name: str, buffer: bytes | memoryview) -> list[bytes]:
    """Split a length-prefixed BYTES buffer, refusing truncated elements."""
    view = memoryview(buffer)
    items: list[bytes] = []
    offset = 0
    while offset < len(view):
        if offset + 4 > len(view):
            raise InvalidRequest(f"input '{name}': truncated BYTES element length at byte {offset}")
        (length,) = struct.unpack_from("<I", view, offset)
        offset += 4
        if offset + length > len(view):
            raise InvalidRequest(f"input '{name}': BYTES element of {length} bytes is truncated")
        items.append(bytes(view[offset : offset + length]))
        offset += length
    return items


def _flatten(data: Sequence[Any]) -> Any:
    for item in data:
        if isinstance(item, list):
            yield from _flatten(item)
        else:
            yield item


def _kind_name(dtype: np.dtype[Any]) -> str:
    return {
        "f": "floating-point",
        "i": "integer",
        "u": "integer",
        "b": "boolean",
        "U": "string",
        "S": "string",
        "O": "mixed",
    }.get(dtype.kind, dtype.kind)
