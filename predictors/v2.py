"""Open Inference Protocol (V2) codec: REST JSON, the REST binary tensor extension and gRPC.

Tensors go straight between wire bytes and numpy: binary and raw gRPC contents are viewed with
``np.frombuffer`` and answered with ``tobytes``, never turned into Python lists. A BYTES output that
is not UTF-8 text (e.g. PNG images) goes into JSON base64-encoded, with the output's parameter
``content_type: base64`` saying so.
"""

from __future__ import annotations

import base64
import uuid
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import orjson

from predictors import flat_json
from predictors.errors import InvalidRequest
from predictors.tensors import (
    NP_DTYPES,
    Limits,
    array_from_buffer,
    array_from_list,
    check_shape,
    datatype_of,
    serialize_bytes,
)

HEADER_LENGTH = "inference-header-content-length"
BINARY_CONTENT_TYPE = "application/vnd.kserve.v2+octet-stream"


@dataclass
class V2Request:
    """A decoded V2 inference request, the same for every V2 transport."""

    protocol: str
    inputs: dict[str, np.ndarray]
    datatypes: dict[str, str]
    id: str = ""
    parameters: dict[str, Any] = field(default_factory=dict)
    requested: dict[str, bool | None] | None = None  # output name -> binary_data (None: default)
    binary_output: bool = False

    def output_names(self, available: list[str]) -> list[str]:
        """The outputs to answer with, refusing names the model does not produce."""
        if not self.requested:
            return available
        unknown = [n for n in self.requested if n not in available]
        if unknown:
            raise InvalidRequest(f"unknown output(s) {unknown}; this model produces {available}")
        return list(self.requested)


def decode_json(body: bytes, limits: Limits) -> V2Request:
    """Decode ``application/json`` V2 request bytes (flat number lists on the fast path)."""
    header = flat_json.parse(body)
    return decode_parsed(parse_header(body) if header is None else header, limits)


def decode_parsed(header: dict[str, Any], limits: Limits) -> V2Request:
    """Decode a parsed V2 JSON request (its ``data`` lists, or flat numpy arrays from the fast path)."""
    request = _request(header)
    for spec in _input_specs(header):
        name, datatype, shape = _describe(spec, limits)
        if "data" not in spec:
            raise InvalidRequest(f"input '{name}': 'data' is missing")
        request.inputs[name] = array_from_list(name, datatype, shape, spec["data"], limits)
        request.datatypes[name] = datatype
    return request


def decode_binary(body: bytes, header_length: str, limits: Limits) -> V2Request:
    """Decode a V2 request that uses the binary tensor extension."""
    try:
        json_length = int(header_length)
    except ValueError:
        raise InvalidRequest(f"{HEADER_LENGTH} must be an integer, got {header_length!r}") from None
    if not 0 < json_length <= len(body):
        raise InvalidRequest(f"{HEADER_LENGTH} is {json_length} but the body has {len(body)} bytes")
    header = parse_header(body[:json_length])
    request = _request(header)
    view = memoryview(body)
    offset = json_length
    for spec in _input_specs(header):
        name, datatype, shape = _describe(spec, limits)
        size = spec["parameters"].get("binary_data_size")
        if size is None:
            if "data" not in spec:
                raise InvalidRequest(f"input '{name}': neither 'data' nor 'binary_data_size' is given")
            request.inputs[name] = array_from_list(name, datatype, shape, spec["data"], limits)
        else:
            if type(size) is not int or size < 0:
                raise InvalidRequest(f"input '{name}': binary_data_size must be a non-negative integer")
            if offset + size > len(body):
                raise InvalidRequest(
                    f"input '{name}': binary data is truncated ({len(body) - offset} of {size} bytes present)"
                )
            request.inputs[name] = array_from_buffer(name, datatype, shape, view[offset : offset + size], limits)
            offset += size
        request.datatypes[name] = datatype
    if offset != len(body):
        raise InvalidRequest(f"{len(body) - offset} bytes after the last binary input are not claimed")
    return request


def decode_grpc(request: Any, limits: Limits) -> V2Request:
    """Decode a ``ModelInferRequest`` protobuf."""
    from kserve.protocol.infer_type import to_http_parameters

    raw = request.raw_input_contents
    if raw and len(raw) != len(request.inputs):
        raise InvalidRequest(f"{len(request.inputs)} inputs but {len(raw)} raw_input_contents")
    inputs, datatypes = {}, {}
    for i, tensor in enumerate(request.inputs):
        name, datatype, shape = _describe(
            {"name": tensor.name, "datatype": tensor.datatype, "shape": list(tensor.shape)}, limits
        )
        if name in inputs:
            raise InvalidRequest(f"input '{name}' is given twice")
        if raw:
            inputs[name] = array_from_buffer(name, datatype, shape, raw[i], limits)
        else:
            inputs[name] = array_from_list(name, datatype, shape, list(_contents(tensor, datatype)), limits)
        datatypes[name] = datatype
    requested: dict[str, bool | None] | None = {o.name: None for o in request.outputs} or None
    return V2Request(
        protocol="grpc",
        inputs=inputs,
        datatypes=datatypes,
        id=request.id,  # gRPC answers may carry an empty id
        parameters=to_http_parameters(request.parameters) if request.parameters else {},
        requested=requested,
        binary_output=bool(raw),
    )


def encode_rest(model_name: str, request: V2Request, outputs: dict[str, np.ndarray]) -> tuple[bytes, dict[str, str]]:
    """Encode outputs as a V2 REST response: JSON, or JSON header plus raw tensors when asked."""
    described, raw_parts = [], []
    for name, array in outputs.items():
        entry: dict[str, Any] = {"name": name, "datatype": datatype_of(array), "shape": list(array.shape)}
        wanted = request.requested.get(name) if request.requested else None
        if wanted if wanted is not None else request.binary_output:
            raw = serialize_bytes(array) if entry["datatype"] == "BYTES" else np.ascontiguousarray(array).tobytes()
            entry["parameters"] = {"binary_data_size": len(raw)}
            raw_parts.append(raw)
        elif entry["datatype"] == "BYTES":
            entry["data"], encoding = _json_strings(array)
            if encoding:
                entry["parameters"] = {"content_type": encoding}
        else:
            entry["data"] = np.ascontiguousarray(array).ravel()
        described.append(entry)
    head = orjson.dumps(
        {"id": request.id, "model_name": model_name, "outputs": described},
        option=orjson.OPT_SERIALIZE_NUMPY,
    )
    if not raw_parts:
        return head, {"content-type": "application/json"}
    return b"".join([head, *raw_parts]), {
        "content-type": BINARY_CONTENT_TYPE,
        HEADER_LENGTH: str(len(head)),
    }


def encode_grpc(model_name: str, request: V2Request, outputs: dict[str, np.ndarray]) -> Any:
    """Encode outputs as a ``ModelInferResponse``; raw contents when the request used them."""
    from kserve.protocol.grpc import grpc_predict_v2_pb2 as pb

    response = pb.ModelInferResponse(model_name=model_name, id=request.id)
    for name, array in outputs.items():
        datatype = datatype_of(array)
        tensor = response.outputs.add(name=name, datatype=datatype, shape=list(array.shape))
        if request.binary_output:
            raw = serialize_bytes(array) if datatype == "BYTES" else np.ascontiguousarray(array).tobytes()
            response.raw_output_contents.append(raw)
        else:
            getattr(tensor.contents, _CONTENT_FIELDS[datatype]).extend(
                array.ravel().tolist() if datatype != "BYTES" else list(array.ravel())
            )
    return response


def _json_strings(array: np.ndarray) -> tuple[list[str], str | None]:
    """BYTES elements as JSON strings: UTF-8 text as is; binary data (e.g. PNG) all base64, marked so."""
    items = [b if isinstance(b, bytes) else str(b).encode("utf-8") for b in array.ravel()]
    try:
        return [b.decode("utf-8") for b in items], None
    except UnicodeDecodeError:
        return [base64.b64encode(b).decode("ascii") for b in items], "base64"


_CONTENT_FIELDS = {
    "BOOL": "bool_contents",
    "UINT8": "uint_contents",
    "UINT16": "uint_contents",
    "UINT32": "uint_contents",
    "UINT64": "uint64_contents",
    "INT8": "int_contents",
    "INT16": "int_contents",
    "INT32": "int_contents",
    "INT64": "int64_contents",
    "FP32": "fp32_contents",
    "FP64": "fp64_contents",
    "BYTES": "bytes_contents",
}


def _contents(tensor: Any, datatype: str) -> Any:
    if datatype == "FP16":
        raise InvalidRequest(f"input '{tensor.name}': FP16 needs raw_input_contents")
    return getattr(tensor.contents, _CONTENT_FIELDS[datatype])


def parse_header(raw: bytes) -> dict[str, Any]:
    if not raw:
        raise InvalidRequest("the request body is empty")
    try:
        header = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise InvalidRequest(f"the request body is not valid JSON: {exc}") from None
    if not isinstance(header, dict):
        raise InvalidRequest("the request must be a JSON object with an 'inputs' list")
    return header


def _input_specs(header: dict[str, Any]) -> list[dict[str, Any]]:
    """The ``inputs`` entries, each an object with a unique non-empty string ``name`` and an object
    ``parameters`` (``{}`` when not given)."""
    specs = _field(header, "inputs", list, "inputs") or []  # empty only where the model allows it
    names: set[str] = set()
    for i, spec in enumerate(specs):
        if not isinstance(spec, dict):
            raise InvalidRequest(f"request field 'inputs[{i}]' must be an object, got {_json_type(spec)}")
        name = _field(spec, "name", str, f"inputs[{i}].name", required=True)
        if not name:
            raise InvalidRequest(f"request field 'inputs[{i}].name' must be a non-empty string")
        if name in names:
            raise InvalidRequest(f"input '{name}' is given twice")
        names.add(name)
        _field(spec, "datatype", str, f"inputs[{i}].datatype", required=True)
        _field(spec, "shape", list, f"inputs[{i}].shape", required=True)
        spec["parameters"] = _field(spec, "parameters", dict, f"inputs[{i}].parameters") or {}
    return specs


def _describe(spec: dict[str, Any], limits: Limits) -> tuple[str, str, tuple[int, ...]]:
    name = spec["name"]
    datatype = spec.get("datatype")
    if datatype not in NP_DTYPES:
        raise InvalidRequest(f"input '{name}': unknown datatype {datatype!r}; expected one of {list(NP_DTYPES)}")
    return name, datatype, check_shape(name, spec.get("shape"), limits)


def _request(header: dict[str, Any]) -> V2Request:
    """The request's own fields (``id``, ``parameters``, ``outputs``), checked against the Open
    Inference Protocol's types before any tensor is decoded; the inputs are added by the caller."""
    request_id = _field(header, "id", str, "id")
    parameters = _field(header, "parameters", dict, "parameters") or {}
    binary_output = _field(parameters, "binary_data_output", bool, "parameters.binary_data_output")
    requested: dict[str, bool | None] | None = None
    outputs = _field(header, "outputs", list, "outputs")
    if outputs is not None:
        requested = {}
        for i, output in enumerate(outputs):
            if not isinstance(output, dict):
                raise InvalidRequest(f"request field 'outputs[{i}]' must be an object, got {_json_type(output)}")
            name = _field(output, "name", str, f"outputs[{i}].name", required=True)
            wanted = _field(output, "parameters", dict, f"outputs[{i}].parameters") or {}
            requested[name] = _field(wanted, "binary_data", bool, f"outputs[{i}].parameters.binary_data")
    return V2Request(
        protocol="v2",
        inputs={},
        datatypes={},
        id=request_id or str(uuid.uuid4()),
        parameters=parameters,
        requested=requested,
        binary_output=bool(binary_output),
    )


_KINDS = {str: "a string", dict: "an object", list: "a list", bool: "a boolean"}


def _field(container: dict[str, Any], key: str, kind: type, where: str, required: bool = False) -> Any:
    """``container[key]`` if it is of ``kind``; None where an optional field is absent or null; else
    400 naming the field."""
    value = container.get(key)
    if value is None and not required:
        return None
    if key not in container:
        raise InvalidRequest(f"request field '{where}' is missing")
    if not isinstance(value, kind):
        raise InvalidRequest(f"request field '{where}' must be {_KINDS[kind]}, got {_json_type(value)}")
    return value


def _json_type(value: Any) -> str:
    """The JSON type of a decoded value, as a client would name it."""
    names = {bool: "boolean", int: "integer", float: "number", str: "string", list: "list", dict: "object"}
    return "null" if value is None else names.get(type(value), type(value).__name__)
