"""Sequence family (digits LSTM): accuracy over every protocol and exact variable-length batching."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

from tests.serving import Server
from tests.test_image import recorded_accuracy


def test_metadata(lstm_server: Server) -> None:
    meta = lstm_server.client.get("/v2/models/digits-lstm").json()
    assert {"name": "input", "datatype": "FP32", "shape": [-1, -1, 8]} in meta["inputs"]
    assert {"name": "lengths", "datatype": "INT64", "shape": [-1]} in meta["inputs"]
    assert {"name": "probabilities", "datatype": "FP32", "shape": [-1, 10]} in meta["outputs"]


@pytest.mark.parametrize("protocol", ["v1", "v2-json", "v2-binary", "grpc"])
def test_served_heldout_accuracy_equals_recorded(lstm_server: Server, lstm_heldout, models_dir, protocol: str) -> None:
    x, y = lstm_heldout
    labels: list[int] = []
    for start in range(0, len(x), 90):
        chunk = x[start : start + 90]
        if protocol == "v1":
            response = lstm_server.v1({"instances": chunk.tolist()})
            assert response.status_code == 200, response.text
            labels += [p["label"] for p in response.json()["predictions"]]
        elif protocol == "v2-json":
            response = lstm_server.v2_tensor("input", chunk)
            assert response.status_code == 200, response.text
            labels += next(o for o in response.json()["outputs"] if o["name"] == "label")["data"]
        elif protocol == "v2-binary":
            labels += lstm_server.v2_binary({"input": chunk}).get_output_by_name("label").as_numpy().tolist()
        else:
            labels += lstm_server.grpc({"input": chunk}).get_output_by_name("label").as_numpy().tolist()
    served = float((np.array(labels) == y).mean())
    assert served == recorded_accuracy(models_dir, "digits-lstm")
    assert served >= 0.90


def alone(server: Server, sequence: np.ndarray) -> np.ndarray:
    result = server.v2_binary({"input": sequence[None]})
    return result.get_output_by_name("probabilities").as_numpy()[0]


def test_variable_lengths_in_one_v1_request_equal_each_alone(lstm_server: Server, lstm_heldout) -> None:
    x, _ = lstm_heldout
    sequences = [x[i, : 1 + i % 8] for i in range(24)]  # lengths 1..8 mixed
    response = lstm_server.v1({"instances": [s.tolist() for s in sequences]})
    assert response.status_code == 200, response.text
    together = np.array([p["probabilities"] for p in response.json()["predictions"]])
    each = np.stack([alone(lstm_server, s) for s in sequences])
    np.testing.assert_allclose(together, each, atol=1e-5)


def test_v2_lengths_input_ignores_padding(lstm_server: Server, lstm_heldout) -> None:
    x, _ = lstm_heldout
    lengths = np.array([8, 3, 5, 1], dtype=np.int64)
    padded = x[:4].copy()
    for row, n in enumerate(lengths):
        padded[row, n:] = 123.0  # garbage past each true length must not matter
    batched = lstm_server.v2_binary({"input": padded, "lengths": lengths}).get_output_by_name("probabilities")
    each = np.stack([alone(lstm_server, x[i, :n]) for i, n in enumerate(lengths)])
    np.testing.assert_allclose(batched.as_numpy(), each, atol=1e-5)


def test_concurrent_requests_of_different_lengths_equal_each_alone(lstm_server: Server, lstm_heldout) -> None:
    x, _ = lstm_heldout
    sequences = [x[i, : 2 + i % 7] for i in range(40)]
    each = [alone(lstm_server, s) for s in sequences]
    with ThreadPoolExecutor(16) as pool:
        concurrent = list(pool.map(lambda s: alone(lstm_server, s), sequences))
    np.testing.assert_allclose(np.stack(concurrent), np.stack(each), atol=1e-5)
