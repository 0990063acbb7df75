"""The V2 JSON fast path (predictors/flat_json.py) against the strict path it stands in for:
for any body, ``decode_json`` gives what ``orjson`` plus ``decode_parsed`` give, the same arrays
or the same error."""

from __future__ import annotations

from typing import Any

import numpy as np
import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from predictors import flat_json
from predictors.errors import PredictorError
from predictors.tensors import Limits
from predictors.v2 import V2Request, decode_json, decode_parsed, parse_header
from tests.test_fuzz import FUZZ, _finite, scalars, shapes

PAD = {"x-padding": " " * flat_json.WORTH_FROM_BYTES}  # an unknown top-level key: ignored by both paths
NUMERIC = ["FP32", "FP64", "FP16", "INT64", "INT32", "INT16", "INT8", "UINT64", "UINT32", "UINT8"]
numbers = st.one_of(
    st.floats(allow_nan=False, allow_infinity=False),
    st.integers(min_value=-(2**63), max_value=2**64 - 1),
)
flat_data = st.one_of(
    st.lists(numbers, max_size=300),
    st.lists(st.floats(min_value=-1, max_value=1, width=32), min_size=64, max_size=64),
    st.lists(st.integers(min_value=-200, max_value=300), min_size=64, max_size=64),
    st.lists(st.integers(min_value=0, max_value=2**64 - 1), max_size=64),
)
odd_data = st.recursive(st.lists(st.one_of(numbers, scalars), max_size=40), lambda inner: st.lists(inner, max_size=4))
tensors = st.fixed_dictionaries(
    {
        "name": st.sampled_from(["input", "x", "a[0]", "b]"]),
        "datatype": st.sampled_from([*NUMERIC, "BOOL", "BYTES", "fp32"]),
        "shape": st.one_of(st.just([64]), st.just([8, 8]), shapes),
        "data": st.one_of(flat_data, odd_data, scalars),
    },
    optional={"parameters": st.dictionaries(st.sampled_from(["content_type", "x"]), scalars)},
)


@st.composite
def plausible_tensors(draw: st.DrawFn) -> dict[str, Any]:
    """A numeric tensor whose shape matches its flat data, most of the time: the fast path's case."""
    data = draw(flat_data)
    shape = draw(st.one_of(st.just([len(data)]), st.just([len(data), 1]), shapes))
    return {"name": "input", "datatype": draw(st.sampled_from(NUMERIC)), "shape": shape, "data": data}


bodies = st.fixed_dictionaries(
    {
        "inputs": st.one_of(
            st.lists(plausible_tensors(), min_size=1, max_size=1),
            st.lists(st.one_of(plausible_tensors(), tensors), min_size=1, max_size=3),
            scalars,
        )
    },
    optional={
        "id": st.one_of(st.text(max_size=5), scalars),
        "parameters": st.dictionaries(st.sampled_from(["top_k", "binary_data_output"]), scalars),
        "outputs": st.lists(st.fixed_dictionaries({"name": st.sampled_from(["label", "[x]"])}), max_size=2),
    },
)


def strict(raw: bytes) -> V2Request:
    return decode_parsed(parse_header(raw), Limits())


def outcome(decode: Any, raw: bytes) -> Any:
    try:
        request = decode(raw)
    except PredictorError as exc:
        return type(exc).__name__, exc.message
    arrays = {n: (a.dtype.str, a.shape, a.tobytes()) for n, a in request.inputs.items()}
    return arrays, request.datatypes, request.parameters, request.requested, request.binary_output


@settings(FUZZ, max_examples=400)
@given(body=bodies)
def test_any_body_decodes_as_on_the_strict_path(body: dict[str, Any]) -> None:
    body = {**body, "id": body.get("id") or "fixed", **PAD}
    raw = orjson.dumps(body) if _finite(body) else b"{}"
    assert outcome(lambda r: decode_json(r, Limits()), raw) == outcome(strict, raw)


def v2(data: Any, shape: list[int], datatype: str = "FP32", name: str = "input") -> bytes:
    tensor = {"name": name, "datatype": datatype, "shape": shape, "data": data}
    return orjson.dumps({"id": "1", "inputs": [tensor], **PAD})


def test_flat_numbers_take_the_fast_path_into_the_exact_array() -> None:
    x = np.random.default_rng(0).random(4096).astype(np.float32)
    raw = v2(x.tolist(), [64, 1, 8, 8])
    parsed = flat_json.parse(raw)
    assert parsed is not None and isinstance(parsed["inputs"][0]["data"], np.ndarray)
    request = decode_json(raw, Limits())
    assert request.inputs["input"].dtype == np.float32 and request.inputs["input"].shape == (64, 1, 8, 8)
    np.testing.assert_array_equal(request.inputs["input"].ravel(), x)
    ints = decode_json(v2(list(range(-64, 64)), [128], "INT8"), Limits()).inputs["input"]
    np.testing.assert_array_equal(ints, np.arange(-64, 64, dtype=np.int8))


@pytest.mark.parametrize(
    ("data", "shape", "datatype", "message"),
    [
        ([1.0, [2.0], 3.0] + [0.0] * 200, [203], "FP32", "not a rectangular array"),  # flattened by simdjson alone
        ([[1.0, 2.0], [3.0]] + [[0.0, 0.0]] * 100, [101, 2], "FP32", "not a rectangular array"),
        ([True] * 201, [201], "FP32", "boolean"),
        ([1.5] + [1] * 200, [201], "INT32", "floating-point"),
        ([300] + [1] * 200, [201], "UINT8", "out of range"),
        ([-1] + [1] * 200, [201], "UINT64", "out of range"),
        ([1.0] * 200, [7], "FP32", "needs 7 elements, data has 200"),
        ([1e39] + [1.0] * 200, [201], "FP32", "out of range for FP32 \\(largest magnitude 3.402823e\\+38\\)"),
        ([70000] + [1] * 200, [201], "FP16", "out of range for FP16"),
    ],
)
def test_bad_data_gets_the_strict_paths_error(data: list[Any], shape: list[int], datatype: str, message: str) -> None:
    raw = v2(data, shape, datatype)
    with pytest.raises(PredictorError, match=message) as fast:
        decode_json(raw, Limits())
    with pytest.raises(PredictorError) as slow:
        strict(raw)
    assert fast.value.message == slow.value.message


def test_a_bracket_inside_a_string_leaves_the_answer_to_the_strict_path() -> None:
    raw = v2([0.5] * 300, [300], name="a[0]")
    assert flat_json.parse(raw) is None
    np.testing.assert_array_equal(decode_json(raw, Limits()).inputs["a[0]"], np.full(300, 0.5, np.float32))


def test_the_parser_recovers_when_a_document_outlives_its_parse() -> None:
    raw = v2([0.25] * 300, [300])
    kept = flat_json._parse(raw)  # a document still referenced: the next parse must not fail
    assert flat_json.parse(raw) is not None
    assert kept["id"] == "1"


def test_a_large_body_parses_without_growing_the_kept_parser() -> None:
    flat_json.parse(v2([0.5] * 300, [300]))
    kept = flat_json._local.parser
    x = np.random.default_rng(1).random(200_000).astype(np.float32)
    raw = v2(x.tolist(), [200_000])
    assert len(raw) > flat_json.KEEP_PARSER_UP_TO
    np.testing.assert_array_equal(decode_json(raw, Limits()).inputs["input"], x)
    assert flat_json._local.parser is kept
