"""Table-driven bad input: every case gets a 4xx JSON error naming the problem, never a 5xx,
and the server answers a good request correctly right after."""

from __future__ import annotations

import base64
import struct
from dataclasses import dataclass, field
from typing import Any

import grpc
import httpx
import numpy as np
import pytest

from tests.serving import Server

GOOD = np.zeros((2, 1, 8, 8), dtype=np.float32)


def v2_json(shape: list[int], data: Any, datatype: str = "FP32", name: str = "input", **extra: Any) -> dict[str, Any]:
    return {"json": {"inputs": [{"name": name, "datatype": datatype, "shape": shape, "data": data}], **extra}}


def binary(header: dict[str, Any], payload: bytes, header_length: int | None = None) -> dict[str, Any]:
    import orjson

    head = orjson.dumps(header)
    length = len(head) if header_length is None else header_length
    return {
        "content": head + payload,
        "headers": {"content-type": "application/octet-stream", "inference-header-content-length": str(length)},
    }


def fp32_header(shape: list[int], size: int) -> dict[str, Any]:
    return {"inputs": [{"name": "input", "datatype": "FP32", "shape": shape, "parameters": {"binary_data_size": size}}]}


@dataclass
class Case:
    id: str
    path: str  # v1 | v2 | any URL path
    request: dict[str, Any]
    status: int
    says: str  # a phrase the JSON error must contain (case-insensitive)
    method: str = "POST"
    extra: dict[str, Any] = field(default_factory=dict)


NAN = np.array([np.nan], dtype=np.float32).tobytes() + np.zeros(63, dtype=np.float32).tobytes()
CASES = [
    Case("wrong-shape", "v2", v2_json([2, 1, 7, 8], [0.0] * 112), 400, "dimension 2 must be 8"),
    Case("wrong-rank", "v2", v2_json([2, 64], [0.0] * 128), 400, "expected rank 4"),
    Case("wrong-datatype", "v2", v2_json([1, 1, 8, 8], [0] * 64, datatype="INT32"), 400, "datatype must be FP32"),
    Case("unknown-datatype", "v2", v2_json([1, 1, 8, 8], [0] * 64, datatype="FLOAT"), 400, "unknown datatype"),
    Case("missing-input", "v2", v2_json([1], [1.0], name="pixels"), 400, "unknown input(s) ['pixels']"),
    Case("no-inputs", "v2", {"json": {"inputs": []}}, 400, "non-empty list"),
    Case("empty-batch", "v2", v2_json([0, 1, 8, 8], []), 400, "batch is empty"),
    Case("data-count-mismatch", "v2", v2_json([2, 1, 8, 8], [0.0] * 100), 400, "needs 128 elements, data has 100"),
    Case("ragged-data", "v2", v2_json([2, 2], [[1.0, 2.0], [3.0]]), 400, "not a rectangular array"),
    Case("strings-as-numbers", "v2", v2_json([1, 1, 8, 8], ["0.5"] * 64), 400, "string values"),
    Case("beyond-fp32", "v2", v2_json([1, 1, 8, 8], [1e39] + [0.0] * 63), 400, "out of range for FP32"),
    Case("nan-binary", "v2", binary(fp32_header([1, 1, 8, 8], 256), NAN), 400, "must be finite"),
    Case(
        "malformed-json",
        "v2",
        {"content": b'{"inputs": [', "headers": {"content-type": "application/json"}},
        400,
        "not valid json",
    ),
    Case("json-not-object", "v2", {"json": [1, 2, 3]}, 400, "json object"),
    Case(
        "wrong-content-type",
        "v2",
        {"content": b"hello", "headers": {"content-type": "text/plain"}},
        415,
        "content type 'text/plain'",
    ),
    Case("truncated-binary", "v2", binary(fp32_header([1, 1, 8, 8], 256), b"\0" * 100), 400, "truncated"),
    Case("binary-size-mismatch", "v2", binary(fp32_header([1, 1, 8, 8], 100), b"\0" * 100), 400, "needs 256 bytes"),
    Case("trailing-binary", "v2", binary(fp32_header([1, 1, 8, 8], 256), b"\0" * 300), 400, "not claimed"),
    Case(
        "bad-header-length",
        "v2",
        binary(fp32_header([1, 1, 8, 8], 256), b"\0" * 256, header_length=99999),
        400,
        "inference-header-content-length",
    ),
    Case(
        "oversized-body",
        "v2",
        {"content": b"0" * (9 * 1024 * 1024), "headers": {"content-type": "application/json"}},
        413,
        "over the limit",
    ),
    Case("too-many-elements", "v2", v2_json([100000, 1, 8, 8], []), 413, "over the limit"),
    Case(
        "unknown-output",
        "v2",
        {"json": {**v2_json([1, 1, 8, 8], [0.0] * 64)["json"], "outputs": [{"name": "logits"}]}},
        400,
        "unknown output",
    ),
    Case("top-k-out-of-range", "v2", v2_json([1, 1, 8, 8], [0.0] * 64, parameters={"top_k": 11}), 400, "top_k"),
    Case(
        "not-an-image",
        "v2",
        {
            "json": {
                "inputs": [
                    {
                        "name": "image",
                        "datatype": "BYTES",
                        "shape": [1],
                        "data": [base64.b64encode(b"not an image").decode()],
                    }
                ]
            }
        },
        400,
        "not a decodable png or jpeg",
    ),
    Case(
        "both-inputs",
        "v2",
        {
            "json": {
                "inputs": [
                    v2_json([1, 1, 8, 8], [0.0] * 64)["json"]["inputs"][0],
                    {"name": "image", "datatype": "BYTES", "shape": [1], "data": ["x"]},
                ]
            }
        },
        400,
        "exactly one",
    ),
    Case("unknown-model", "/v2/models/no-such-model/infer", v2_json([1, 1, 8, 8], [0.0] * 64), 404, "no-such-model"),
    Case("v1-unknown-model", "/v1/models/no-such-model:predict", {"json": {"instances": [[0]]}}, 404, "no-such-model"),
    Case(
        "v1-malformed-json",
        "v1",
        {"content": b"{nope", "headers": {"content-type": "application/json"}},
        400,
        "unrecognized request format",
    ),
    Case("v1-wrong-content-type", "v1", {"content": b"x", "headers": {"content-type": "text/csv"}}, 415, "text/csv"),
    Case("v1-no-instances", "v1", {"json": {"rows": []}}, 400, "'instances' list"),
    Case("v1-empty-instances", "v1", {"json": {"instances": []}}, 400, "'instances' is empty"),
    Case("v1-wrong-shape", "v1", {"json": {"instances": [[[0.0] * 8] * 7]}}, 400, "needs 64 elements"),
    Case("v1-bad-base64", "v1", {"json": {"instances": [{"image": {"b64": "%%%"}}]}}, 400, "not valid base64"),
    Case("v1-bad-instance", "v1", {"json": {"instances": [42]}}, 400, "instances[0]"),
    Case(
        "v1-nan",
        "v1",
        {"content": b'{"instances": [[NaN]]}', "headers": {"content-type": "application/json"}},
        400,
        "unrecognized request format",
    ),
    Case("v1-top-k-not-int", "v1", {"json": {"instances": GOOD.tolist(), "parameters": {"top_k": "3"}}}, 400, "top_k"),
]


def send(server: Server, case: Case) -> Any:
    path = {"v1": f"/v1/models/{server.name}:predict", "v2": f"/v2/models/{server.name}/infer"}.get(
        case.path, case.path
    )
    return server.client.request(case.method, path, **case.request)


def assert_healthy(server: Server) -> None:
    assert server.client.get("/v2/health/ready").status_code == 200
    assert server.client.get(f"/v2/models/{server.name}/ready").status_code == 200
    response = server.v2_tensor("input", GOOD)
    assert response.status_code == 200
    assert next(o for o in response.json()["outputs"] if o["name"] == "label")["shape"] == [2]


def assert_4xx_and_ready(server: Server, case: Case, good: dict[str, np.ndarray]) -> None:
    """The case gets its 4xx JSON error naming the problem; the server stays ready and answers ``good``."""
    response = send(server, case)
    assert response.status_code == case.status, response.text
    error = response.json()["error"]
    assert isinstance(error, str) and case.says.lower() in error.lower(), error
    assert server.client.get("/v2/health/ready").status_code == 200
    assert server.client.get(f"/v2/models/{server.name}/ready").status_code == 200
    answer = server.v2_binary(good)
    assert not isinstance(answer, httpx.Response), answer.text


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_bad_input_gets_4xx_json_and_server_stays_ready(cnn_server: Server, case: Case) -> None:
    response = send(cnn_server, case)
    assert response.status_code == case.status, response.text
    body = response.json()
    assert isinstance(body["error"], str)
    assert case.says.lower() in body["error"].lower(), body
    assert_healthy(cnn_server)


SEQUENCE_CASES = [
    Case("features", "v2", v2_json([1, 4, 7], [0.0] * 28), 400, "dimension 2 must be 8"),
    Case("too-long", "v2", v2_json([1, 300, 8], [0.0] * 2400), 400, "sequence length must be from 1 to 256"),
    Case(
        "lengths-too-big",
        "v2",
        {
            "json": {
                "inputs": [
                    {"name": "input", "datatype": "FP32", "shape": [1, 2, 8], "data": [0.0] * 16},
                    {"name": "lengths", "datatype": "INT64", "shape": [1], "data": [5]},
                ]
            }
        },
        400,
        "between 1 and 2",
    ),
    Case("v1-empty-sequence", "v1", {"json": {"instances": [[]]}}, 400, "non-empty list of time steps"),
    Case("v1-ragged-steps", "v1", {"json": {"instances": [[[0.0] * 8, [0.0] * 3]]}}, 400, "rectangular"),
]


@pytest.mark.parametrize("case", SEQUENCE_CASES, ids=[c.id for c in SEQUENCE_CASES])
def test_sequence_bad_input(lstm_server: Server, case: Case) -> None:
    response = send(lstm_server, case)
    assert response.status_code == case.status, response.text
    assert case.says.lower() in response.json()["error"].lower()
    ok = lstm_server.v1({"instances": [[[0.0] * 8] * 3]})
    assert ok.status_code == 200 and len(ok.json()["predictions"]) == 1


@pytest.mark.parametrize(
    ("inputs", "model", "code", "says"),
    [
        ({"input": np.zeros((1, 1, 7, 8), dtype=np.float32)}, None, grpc.StatusCode.INVALID_ARGUMENT, "dimension 2"),
        ({"input": np.full((1, 1, 8, 8), np.inf, dtype=np.float32)}, None, grpc.StatusCode.INVALID_ARGUMENT, "finite"),
        ({"input": np.zeros((1, 1, 8, 8), dtype=np.float64)}, None, grpc.StatusCode.INVALID_ARGUMENT, "FP32"),
        ({"input": GOOD}, "nope", grpc.StatusCode.NOT_FOUND, "nope"),
    ],
    ids=["shape", "inf", "datatype", "unknown-model"],
)
def test_grpc_bad_input_gets_status(cnn_server: Server, inputs, model, code, says) -> None:

    name = cnn_server.name
    if model:
        cnn_server.name = model
    try:
        with pytest.raises(grpc.RpcError) as info:
            cnn_server.grpc(inputs)
    finally:
        cnn_server.name = name
    assert info.value.code() == code
    assert says in info.value.details()
    assert cnn_server.grpc({"input": GOOD}).get_output_by_name("label").as_numpy().shape == (2,)


def test_truncated_bytes_element_is_rejected(cnn_server: Server) -> None:
    payload = struct.pack("<I", 50) + b"short"
    header = {
        "inputs": [
            {"name": "image", "datatype": "BYTES", "shape": [1], "parameters": {"binary_data_size": len(payload)}}
        ]
    }
    response = cnn_server.client.post(f"/v2/models/{cnn_server.name}/infer", **binary(header, payload))
    assert response.status_code == 400 and "truncated" in response.json()["error"]
    assert_healthy(cnn_server)


# ---- V2 request fields of the wrong JSON type: 400 naming the field (Open Inference Protocol types) ----
FIELD_GOOD = {
    "id": "r1",
    "parameters": {"binary_data_output": False},
    "inputs": [{"name": "input", "datatype": "FP32", "shape": [4, 1, 8, 8], "parameters": {}}],
    "outputs": [{"name": "label", "parameters": {"binary_data": False}}],
}
MISSING = object()
FIELD_CASES: list[tuple[tuple[Any, ...], Any, str]] = [  # (path to the field, value, the field the error names)
    (("id",), 123, "'id'"),
    (("id",), ["r1"], "'id'"),
    (("id",), True, "'id'"),
    (("parameters",), [], "'parameters'"),
    (("parameters",), "top_k=3", "'parameters'"),
    (("parameters", "binary_data_output"), "yes", "'parameters.binary_data_output'"),
    (("inputs",), {"name": "input"}, "'inputs'"),
    (("inputs",), "input", "'inputs'"),
    (("inputs", 0), "input", "'inputs[0]'"),
    (("inputs", 0, "name"), 7, "'inputs[0].name'"),
    (("inputs", 0, "name"), None, "'inputs[0].name'"),
    (("inputs", 0, "name"), MISSING, "'inputs[0].name'"),
    (("inputs", 0, "datatype"), ["FP32"], "'inputs[0].datatype'"),
    (("inputs", 0, "datatype"), 32, "'inputs[0].datatype'"),
    (("inputs", 0, "datatype"), MISSING, "'inputs[0].datatype'"),
    (("inputs", 0, "shape"), "4,1,8,8", "'inputs[0].shape'"),
    (("inputs", 0, "shape"), {"0": 4}, "'inputs[0].shape'"),
    (("inputs", 0, "shape"), MISSING, "'inputs[0].shape'"),
    (("inputs", 0, "shape"), [4, 1, -8, 8], "shape must be a list of non-negative integers"),
    (("inputs", 0, "shape"), [4, 1, 8.0, 8], "shape must be a list of non-negative integers"),
    (("inputs", 0, "parameters"), [], "'inputs[0].parameters'"),
    (("inputs", 0, "parameters"), "binary", "'inputs[0].parameters'"),
    (("outputs",), {"name": "label"}, "'outputs'"),
    (("outputs", 0), "label", "'outputs[0]'"),
    (("outputs", 0, "name"), 1, "'outputs[0].name'"),
    (("outputs", 0, "name"), MISSING, "'outputs[0].name'"),
    (("outputs", 0, "parameters"), ["binary_data"], "'outputs[0].parameters'"),
    (("outputs", 0, "parameters", "binary_data"), "no", "'outputs[0].parameters.binary_data'"),
]
X4 = np.full((4, 1, 8, 8), 0.5, dtype=np.float32)


def with_field(path: tuple[Any, ...], value: Any, binary_data: bool) -> dict[str, Any]:
    """``FIELD_GOOD`` with the field at ``path`` set to ``value`` (or removed); its tensor given as
    JSON data (over 1 KiB: the fast path) or as binary data."""
    import copy

    body = copy.deepcopy(FIELD_GOOD)
    tensor = body["inputs"][0]
    if binary_data:
        tensor["parameters"]["binary_data_size"] = X4.nbytes
    else:
        tensor["data"] = X4.ravel().tolist()
    target = body
    for key in path[:-1]:
        target = target[key]
    if value is MISSING:
        del target[path[-1]]
    else:
        target[path[-1]] = value
    return body


@pytest.mark.parametrize("encoding", ["json", "binary"])
@pytest.mark.parametrize(
    ("path", "value", "names"), FIELD_CASES, ids=[f"{'.'.join(map(str, p))}={v!r}" for p, v, _ in FIELD_CASES]
)
def test_a_v2_field_of_the_wrong_type_gets_400_naming_it(
    cnn_server: Server, encoding: str, path: tuple[Any, ...], value: Any, names: str
) -> None:
    body = with_field(path, value, binary_data=encoding == "binary")
    request = binary(body, X4.tobytes()) if encoding == "binary" else {"json": body}
    response = cnn_server.client.post(f"/v2/models/{cnn_server.name}/infer", **request)
    assert response.status_code == 400, response.text
    assert names in response.json()["error"], response.json()
    assert_healthy(cnn_server)


@pytest.mark.parametrize("encoding", ["json", "binary"])
@pytest.mark.parametrize("request_id", [None, "", MISSING])
def test_optional_v2_fields_may_be_null_or_absent(cnn_server: Server, encoding: str, request_id: Any) -> None:
    body = with_field(("id",), request_id, binary_data=encoding == "binary")
    body["parameters"] = body["outputs"] = body["inputs"][0]["parameters"] = None
    if encoding == "binary":  # the tensor's binary_data_size lives in its parameters
        body["inputs"][0]["data"] = X4.ravel().tolist()
    response = cnn_server.client.post(f"/v2/models/{cnn_server.name}/infer", json=body)
    assert response.status_code == 200, response.text
    answer = response.json()
    assert isinstance(answer["id"], str) and answer["id"]
    assert {o["name"] for o in answer["outputs"]} == {"probabilities", "label"}
