"""Hostile input: property-based requests (hypothesis) and an OpenAPI-driven fuzzer (schemathesis,
against the server's own /openapi.json). No answer may be a 5xx, nothing may hang, and the server
stays ready. The default run sends a few hundred generated requests; ``pytest -m slow
tests/test_fuzz.py`` sends several thousand."""

from __future__ import annotations

import base64
import math
from collections import Counter
from typing import Any

import numpy as np
import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.serving import Server

DATATYPES = ["FP32", "FP64", "FP16", "INT64", "INT32", "INT8", "UINT8", "BOOL", "BYTES", "fp32", "FLOAT", ""]
NAMES = ["input", "image", "lengths", "x", ""]
scalars = st.one_of(
    st.floats(allow_nan=False, allow_infinity=False, width=32),
    st.floats(min_value=-1e300, max_value=1e300),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.booleans(),
    st.text(max_size=8),
    st.none(),
)
data_values = st.recursive(st.lists(scalars, max_size=80), lambda inner: st.lists(inner, max_size=4), max_leaves=200)
shapes = st.one_of(
    st.lists(st.integers(min_value=-2, max_value=70), max_size=5),
    st.just([1, 1, 8, 8]),
    st.just([2, 1, 8, 8]),
    st.lists(st.integers(min_value=0, max_value=2**40), min_size=1, max_size=4),
    st.text(max_size=3),
)
tensors = st.fixed_dictionaries(
    {"name": st.sampled_from(NAMES), "datatype": st.sampled_from(DATATYPES), "shape": shapes},
    optional={"data": data_values, "parameters": st.dictionaries(st.sampled_from(["binary_data_size", "x"]), scalars)},
)
v2_bodies = st.fixed_dictionaries(
    {"inputs": st.one_of(st.lists(tensors, max_size=3), scalars)},
    optional={
        "id": scalars,
        "parameters": st.one_of(st.dictionaries(st.sampled_from(["top_k", "binary_data_output"]), scalars), scalars),
        "outputs": st.lists(st.fixed_dictionaries({"name": st.sampled_from(["label", "probabilities", "nope"])})),
    },
)
images = st.sampled_from(["", "%%", base64.b64encode(b"\x89PNG\r\n\x1a\n garbage").decode(), "aGVsbG8="])
v1_instances = st.one_of(
    data_values,
    st.lists(st.fixed_dictionaries({"image": st.fixed_dictionaries({"b64": images})}), max_size=3),
    st.lists(st.fixed_dictionaries({"b64": st.one_of(images, scalars)}), max_size=3),
)
v1_bodies = st.one_of(
    st.fixed_dictionaries(
        {"instances": v1_instances}, optional={"parameters": st.dictionaries(st.just("top_k"), scalars)}
    ),
    st.dictionaries(st.text(max_size=5), scalars, max_size=3),
)

FUZZ = settings(deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)


def check(server: Server, response: Any, statuses: Counter[int]) -> None:
    statuses[response.status_code] += 1
    assert response.status_code < 500, response.text[:500]
    if response.status_code >= 400:
        assert isinstance(response.json()["error"], str)


def fuzz_v2_json(server: Server, examples: int, statuses: Counter[int]) -> None:
    @settings(FUZZ, max_examples=examples)
    @given(body=v2_bodies)
    def run(body: dict[str, Any]) -> None:
        raw = orjson.dumps(body, option=orjson.OPT_SERIALIZE_NUMPY) if _finite(body) else b"{}"
        check(
            server,
            server.client.post(
                f"/v2/models/{server.name}/infer", content=raw, headers={"content-type": "application/json"}
            ),
            statuses,
        )

    run()


def fuzz_v2_binary(server: Server, examples: int, statuses: Counter[int]) -> None:
    @settings(FUZZ, max_examples=examples)
    @given(body=v2_bodies, payload=st.binary(max_size=600), skew=st.integers(min_value=-40, max_value=40))
    def run(body: dict[str, Any], payload: bytes, skew: int) -> None:
        head = orjson.dumps(body) if _finite(body) else b"{}"
        headers = {"content-type": "application/octet-stream", "inference-header-content-length": str(len(head) + skew)}
        check(
            server,
            server.client.post(f"/v2/models/{server.name}/infer", content=head + payload, headers=headers),
            statuses,
        )

    run()


def fuzz_v1(server: Server, examples: int, statuses: Counter[int]) -> None:
    @settings(FUZZ, max_examples=examples)
    @given(body=v1_bodies)
    def run(body: dict[str, Any]) -> None:
        raw = orjson.dumps(body) if _finite(body) else b"{}"
        check(
            server,
            server.client.post(
                f"/v1/models/{server.name}:predict", content=raw, headers={"content-type": "application/json"}
            ),
            statuses,
        )

    run()


def _finite(value: Any) -> bool:
    """orjson refuses integers beyond 64 bits; keep such bodies out (the server sees valid JSON)."""
    if isinstance(value, int) and not isinstance(value, bool):
        return -(2**63) <= value < 2**64
    if isinstance(value, float):
        return math.isfinite(value)
    if isinstance(value, dict):
        return all(_finite(v) for v in value.values())
    if isinstance(value, list):
        return all(_finite(v) for v in value)
    return True


def fuzz_openapi(server: Server, examples: int, statuses: Counter[int]) -> None:
    """Every operation in the server's OpenAPI description, with schemathesis-generated requests."""
    import schemathesis

    schema = schemathesis.openapi.from_url(f"{server.url}/openapi.json")
    for result in schema.get_all_operations():
        operation = result.ok()
        strategy = operation.as_strategy()

        @settings(FUZZ, max_examples=examples)
        @given(case=strategy)
        def run(case: Any) -> None:
            response = case.call(base_url=server.url, timeout=30)
            statuses[response.status_code] += 1
            assert response.status_code < 500, f"{case.method} {case.formatted_path}: {response.text[:300]}"

        run()


def assert_ready(server: Server) -> None:
    assert server.client.get("/v2/health/ready").status_code == 200
    assert server.v2_tensor("input", np.zeros((1, 1, 8, 8), np.float32)).status_code == 200


@pytest.mark.parametrize("fuzz", [fuzz_v2_json, fuzz_v2_binary, fuzz_v1, fuzz_openapi], ids=lambda f: f.__name__)
def test_fuzz(cnn_server: Server, fuzz, record_property) -> None:  # type: ignore[no-untyped-def]
    statuses: Counter[int] = Counter()
    fuzz(cnn_server, 12 if fuzz is fuzz_openapi else 120, statuses)
    record_property("requests", sum(statuses.values()))
    assert sum(statuses.values()) >= 100
    assert_ready(cnn_server)


@pytest.mark.slow
def test_fuzz_thousands(cnn_server: Server) -> None:
    statuses: Counter[int] = Counter()
    for fuzz, examples in ((fuzz_v2_json, 1000), (fuzz_v2_binary, 1000), (fuzz_v1, 600), (fuzz_openapi, 100)):
        fuzz(cnn_server, examples, statuses)
    total = sum(statuses.values())
    print(f"\nfuzz: {total} generated requests, statuses {dict(sorted(statuses.items()))}")
    assert total >= 2000
    assert all(code < 500 for code in statuses)
    assert_ready(cnn_server)
