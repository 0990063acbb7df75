"""Image family (digits CNN) over V1 REST, V2 REST JSON and binary, and V2 gRPC, on torch and ONNX Runtime."""

from __future__ import annotations

import asyncio
import base64
import io
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image

from tests.serving import Server


def recorded_accuracy(models_dir, name: str) -> float:
    return yaml.safe_load((models_dir / name / "maas.yaml").read_text())["metrics"]["test_accuracy"]


def png(image: np.ndarray, fmt: str = "PNG", size: int | None = None, mode: str = "L") -> bytes:
    """An 8x8 digit in [0, 1] as an encoded image (optionally upscaled / RGB)."""
    img = Image.fromarray(np.round(image * 255).astype(np.uint8), mode="L")
    if size:
        img = img.resize((size, size), Image.Resampling.NEAREST)
    buf = io.BytesIO()
    img.convert(mode).save(buf, format=fmt)
    return buf.getvalue()


def test_metadata_describes_inputs_and_outputs(cnn_server: Server) -> None:
    meta = cnn_server.client.get("/v2/models/digits-cnn").json()
    assert meta["name"] == "digits-cnn"
    assert {"name": "input", "datatype": "FP32", "shape": [-1, 1, 8, 8]} in meta["inputs"]
    assert {"name": "image", "datatype": "BYTES", "shape": [-1]} in meta["inputs"]
    outputs = {o["name"]: o for o in meta["outputs"]}
    assert outputs["probabilities"] == {"name": "probabilities", "datatype": "FP32", "shape": [-1, 10]}
    assert outputs["label"] == {"name": "label", "datatype": "INT64", "shape": [-1]}


@pytest.mark.parametrize("protocol", ["v1", "v2-json", "v2-binary", "grpc-raw", "grpc-contents"])
def test_served_heldout_accuracy_equals_recorded(image_server: Server, cnn_heldout, models_dir, protocol: str) -> None:
    x, y = cnn_heldout
    labels = []
    for start in range(0, len(x), 64):
        chunk = x[start : start + 64]
        if protocol == "v1":
            response = image_server.v1({"instances": chunk.tolist()})
            assert response.status_code == 200, response.text
            labels += [p["label"] for p in response.json()["predictions"]]
        elif protocol == "v2-json":
            response = image_server.v2_tensor("input", chunk)
            assert response.status_code == 200, response.text
            out = {o["name"]: o for o in response.json()["outputs"]}
            assert out["label"]["datatype"] == "INT64" and out["label"]["shape"] == [len(chunk)]
            labels += out["label"]["data"]
        elif protocol == "v2-binary":
            result = image_server.v2_binary({"input": chunk})
            labels += result.get_output_by_name("label").as_numpy().tolist()
        else:
            result = image_server.grpc({"input": chunk}, raw=protocol == "grpc-raw")
            labels += result.get_output_by_name("label").as_numpy().tolist()
    served = float((np.array(labels) == y).mean())
    assert served == recorded_accuracy(models_dir, "digits-cnn")
    assert served >= 0.95


def test_v2_binary_answers_probabilities_bit_for_bit_like_json(image_server: Server, cnn_heldout) -> None:
    x, _ = cnn_heldout
    binary = image_server.v2_binary({"input": x[:16]}).get_output_by_name("probabilities").as_numpy()
    as_json = image_server.v2_tensor("input", x[:16]).json()
    probs = next(o for o in as_json["outputs"] if o["name"] == "probabilities")
    np.testing.assert_allclose(binary, np.array(probs["data"], dtype=np.float32).reshape(16, 10), rtol=1e-6)
    assert binary.dtype == np.float32 and binary.shape == (16, 10)
    np.testing.assert_allclose(binary.sum(axis=1), 1.0, rtol=1e-5)


def test_encoded_images_over_every_protocol(image_server: Server, cnn_heldout, models_dir) -> None:
    x, y = cnn_heldout
    n = 120
    pngs = [png(img[0]) for img in x[:n]]
    v1 = image_server.v1({"instances": [{"image": {"b64": base64.b64encode(p).decode()}} for p in pngs]})
    assert v1.status_code == 200, v1.text
    v1_labels = np.array([p["label"] for p in v1.json()["predictions"]])
    v2 = image_server.v2(
        [{"name": "image", "datatype": "BYTES", "shape": [n], "data": [base64.b64encode(p).decode() for p in pngs]}]
    )
    assert v2.status_code == 200, v2.text
    v2_labels = np.array(next(o for o in v2.json()["outputs"] if o["name"] == "label")["data"])
    grpc_labels = image_server.grpc({"image": np.array(pngs, dtype=object)}).get_output_by_name("label").as_numpy()
    tensor_labels = image_server.v2_binary({"input": x[:n]}).get_output_by_name("label").as_numpy()
    assert (v1_labels == v2_labels).all() and (v2_labels == grpc_labels).all()
    # PNG quantises pixels to 8 bits: the same digits, nearly the same answers
    assert (v1_labels == tensor_labels).mean() >= 0.98
    assert (v1_labels == y[:n]).mean() >= recorded_accuracy(models_dir, "digits-cnn") - 0.03


def test_images_of_other_sizes_and_formats_are_resized(image_server: Server, cnn_heldout) -> None:
    x, y = cnn_heldout
    cases = [png(x[i][0], "JPEG", size=64, mode="RGB") for i in range(30)]
    response = image_server.v1({"instances": [{"b64": base64.b64encode(c).decode()} for c in cases]})
    assert response.status_code == 200, response.text
    labels = np.array([p["label"] for p in response.json()["predictions"]])
    assert (labels == y[:30]).mean() >= 0.8


def test_top_k_in_v1_and_v2(image_server: Server, cnn_heldout) -> None:
    x, _ = cnn_heldout
    v1 = image_server.v1({"instances": x[:3].tolist(), "parameters": {"top_k": 3}}).json()["predictions"]
    for p in v1:
        top = p["top_k"]
        assert len(top) == 3 and top[0]["label"] == p["label"] and top[0]["class_name"] == str(p["label"])
        assert top[0]["probability"] >= top[1]["probability"] >= top[2]["probability"]
    v2 = image_server.v2_binary({"input": x[:3]}, parameters={"top_k": 2})
    top_labels = v2.get_output_by_name("top_k_labels").as_numpy()
    assert top_labels.shape == (3, 2)
    assert (top_labels[:, 0] == v2.get_output_by_name("label").as_numpy()).all()


def test_concurrent_requests_are_batched_and_equal_unbatched(image_server: Server, cnn_heldout) -> None:
    x, _ = cnn_heldout
    singles = [
        image_server.v2_binary({"input": x[i : i + 1]}).get_output_by_name("probabilities").as_numpy()[0]
        for i in range(48)
    ]
    before = batch_stats(image_server)
    with ThreadPoolExecutor(16) as pool:
        concurrent = list(
            pool.map(
                lambda i: (
                    image_server.v2_binary({"input": x[i : i + 1]}).get_output_by_name("probabilities").as_numpy()[0]
                ),
                range(48),
            )
        )
    after = batch_stats(image_server)
    whole = image_server.v2_binary({"input": x[:48]}).get_output_by_name("probabilities").as_numpy()
    np.testing.assert_allclose(np.stack(concurrent), np.stack(singles), atol=1e-5)
    np.testing.assert_allclose(whole, np.stack(singles), atol=1e-5)
    assert (whole.argmax(1) == np.stack(singles).argmax(1)).all()
    batches, items = after[0] - before[0], after[1] - before[1]
    assert items == 48
    assert batches < 48, "concurrent requests should have shared forward passes"


def test_concurrent_grpc_calls_are_batched(image_server: Server, cnn_heldout) -> None:
    """grpc.aio hands the server one call per event-loop turn; calls must still share forward passes."""
    from kserve import InferenceGRPCClient, InferInput, InferRequest

    x, _ = cnn_heldout
    n = 64

    async def calls() -> list[np.ndarray]:
        client = InferenceGRPCClient(image_server.grpc_url, timeout=60, retries=0)
        try:

            async def one(i: int) -> np.ndarray:
                tensor = InferInput("input", [1, 1, 8, 8], "FP32")
                tensor.set_data_from_numpy(x[i : i + 1], binary_data=True)
                response = await client.infer(InferRequest(image_server.name, [tensor]))
                return response.get_output_by_name("probabilities").as_numpy()[0]

            rounds = []
            for _ in range(5):  # several rounds: the batcher learns that waiting pays
                rounds.append(await asyncio.gather(*(one(i) for i in range(n))))
            return rounds[-1]
        finally:
            await client.close()

    before = batch_stats(image_server)
    probabilities = asyncio.run(calls())
    after = batch_stats(image_server)
    whole = image_server.v2_binary({"input": x[:n]}).get_output_by_name("probabilities").as_numpy()
    np.testing.assert_allclose(np.stack(probabilities), whole, atol=1e-5)
    batches, items = after[0] - before[0], after[1] - before[1]
    assert items == 5 * n
    assert items / batches >= 2, f"gRPC calls ran {items / batches:.2f} to a forward pass: not batched"


def batch_stats(server: Server) -> tuple[float, float]:
    """(number of batches, items) from the server's maas_batch_size histogram."""
    values = {}
    for line in server.metrics().splitlines():
        for key in ("maas_batch_size_count", "maas_batch_size_sum"):
            if line.startswith(key + "{") and f'model="{server.name}"' in line:
                values[key] = float(line.rsplit(" ", 1)[1])
    return values["maas_batch_size_count"], values["maas_batch_size_sum"]


def test_an_image_export_that_differs_from_torch_fails_the_load(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Tracing keeps only the branch its example took: the check against torch catches the rest."""
    import torch

    from predictors.errors import ConfigError
    from predictors.families import image_onnx

    class Branchy(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.linear = torch.nn.Linear(64, 10)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            logits = self.linear(x.flatten(1))
            return logits * 2 if x.sum() > 0 else logits  # the export's example is all zeros

    class Plain(Branchy):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.linear(x.flatten(1))

    monkeypatch.setenv("MAAS_CACHE_DIR", str(tmp_path / "cache"))
    (tmp_path / "maas.yaml").write_text("family: image\n")
    torch.manual_seed(0)
    module = Plain().eval()
    plain = image_onnx.onnx_classifier(module, (1, 8, 8), tmp_path, threads=1)
    assert plain.path.is_file() and plain.path.parent == image_onnx.cache_dir()
    images = torch.rand(3, 1, 8, 8)
    with torch.inference_mode():
        np.testing.assert_allclose(plain(images.numpy()), module(images).numpy(), rtol=1e-5, atol=1e-6)
    with pytest.raises(ConfigError, match=r"differs from torch by .* serve it with image.runtime torch"):
        image_onnx.onnx_classifier(Branchy().eval(), (1, 8, 8), tmp_path, threads=1)
