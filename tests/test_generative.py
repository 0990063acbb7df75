"""Generative family over real sockets: seeded samples judged by the served digits CNN, latents,
PNG output, the VAE's encode/reconstruct, per-mode batching and bad input."""

from __future__ import annotations

import base64
import io
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import orjson
import pytest
from PIL import Image

from predictors.families.generative import seeded_latents
from predictors.tensors import deserialize_bytes
from tests.serving import Server
from tests.test_bad_input import Case, assert_4xx_and_ready, v2_json
from tests.test_image import png
from tests.test_transformer import as_array, metrics_of, v2_outputs


def images_of(server: Server, **parameters) -> np.ndarray:  # type: ignore[no-untyped-def]
    """Images for V2 parameters alone (no inputs), over the binary extension."""
    return server.v2_binary({}, parameters=parameters).get_output_by_name("image").as_numpy()


def cnn_probabilities(cnn_server: Server, images: np.ndarray) -> np.ndarray:
    return cnn_server.v2_binary({"input": images}).get_output_by_name("probabilities").as_numpy()


@pytest.mark.parametrize("name", ["digits-vae", "digits-gan"])
def test_served_samples_are_digits_as_recorded(request, cnn_server: Server, models_dir: Path, name: str) -> None:
    server: Server = request.getfixturevalue({"digits-vae": "vae_server", "digits-gan": "gan_server"}[name])
    recorded = metrics_of(models_dir, name)
    images = images_of(server, num_samples=recorded["samples"], seed=recorded["sample_seed"])
    assert images.shape == (recorded["samples"], 1, 8, 8) and images.dtype == np.float32
    assert images.min() >= 0.0 and images.max() <= 1.0
    probabilities = cnn_probabilities(cnn_server, images)
    share = float((probabilities.max(axis=1) > recorded["confidence_threshold"]).mean())
    print(f"{name}: {share:.3f} of {len(images)} samples classified with confidence > 0.9")
    assert share == pytest.approx(recorded["confident_share"], abs=0.01)
    classes = np.bincount(probabilities.argmax(axis=1), minlength=10)
    assert (classes > 0).sum() >= 8, f"samples should cover the digits, got {classes}"


def test_a_seed_always_gives_the_same_images(vae_server: Server, gan_server: Server) -> None:
    for server in (vae_server, gan_server):
        first = images_of(server, num_samples=5, seed=11)
        np.testing.assert_array_equal(images_of(server, num_samples=5, seed=11), first)
        assert not np.allclose(images_of(server, num_samples=5, seed=12), first)
        v1 = server.v1({"parameters": {"num_samples": 5, "seed": 11}})
        assert v1.status_code == 200, v1.text
        np.testing.assert_allclose([p["image"] for p in v1.json()["predictions"]], first, atol=1e-6)
        grpc = server.grpc({}, parameters={"num_samples": 5, "seed": 11})
        np.testing.assert_allclose(grpc.get_output_by_name("image").as_numpy(), first, atol=1e-6)


def test_latents_in_give_the_seeds_images(gan_server: Server) -> None:
    latents = seeded_latents(5, 3, 16)  # what a seed stands for, as the module docstring says
    from_latents = gan_server.v2_binary({"latent": latents}).get_output_by_name("image").as_numpy()
    np.testing.assert_allclose(from_latents, images_of(gan_server, num_samples=3, seed=5), atol=1e-6)
    v1 = gan_server.v1({"instances": latents.tolist()}).json()["predictions"]
    np.testing.assert_allclose([p["image"] for p in v1], from_latents, atol=1e-6)


def decode_png(raw: bytes) -> np.ndarray:
    with Image.open(io.BytesIO(raw)) as img:
        assert img.format == "PNG" and img.mode == "L" and img.size == (8, 8)
        return np.asarray(img)


def test_png_output_on_request(vae_server: Server) -> None:
    images = images_of(vae_server, num_samples=4, seed=3)
    expected = np.round(images[:, 0] * 255).astype(np.uint8)
    # binary PNG bytes (parsed here: kserve's client turns every BYTES output into UTF-8 text)
    body = {"inputs": [], "parameters": {"num_samples": 4, "seed": 3, "png": True, "binary_data_output": True}}
    response = vae_server.client.post("/v2/models/digits-vae/infer", json=body)
    length = int(response.headers["inference-header-content-length"])
    raw, offset = {}, length
    for output in orjson.loads(response.content[:length])["outputs"]:
        size = output["parameters"]["binary_data_size"]
        raw[output["name"]], offset = response.content[offset : offset + size], offset + size
    assert set(raw) == {"image", "png"}
    np.testing.assert_array_equal(np.stack([decode_png(r) for r in deserialize_bytes("png", raw["png"])]), expected)
    # JSON answers binary BYTES as base64, and asking for output 'png' is enough
    body = {"inputs": [], "parameters": {"num_samples": 4, "seed": 3}, "outputs": [{"name": "png"}]}
    out = v2_outputs(vae_server.client.post("/v2/models/digits-vae/infer", json=body))
    assert list(out) == ["png"] and out["png"]["parameters"] == {"content_type": "base64"}
    decoded = [decode_png(base64.b64decode(text)) for text in out["png"]["data"]]
    np.testing.assert_array_equal(np.stack(decoded), expected)
    v1 = vae_server.v1({"parameters": {"num_samples": 4, "seed": 3, "png": True}}).json()["predictions"]
    np.testing.assert_array_equal(np.stack([decode_png(base64.b64decode(p["png"]["b64"])) for p in v1]), expected)


def test_vae_reconstructs_held_out_digits_as_recorded(vae_server: Server, cnn_server: Server, models_dir) -> None:
    heldout = np.load(models_dir / "digits-vae" / "heldout.npz")
    x, y = heldout["x"], heldout["y"]
    reconstructed = vae_server.v2_binary({"image": x}).get_output_by_name("image").as_numpy()
    accuracy = float((cnn_probabilities(cnn_server, reconstructed).argmax(1) == y).mean())
    assert accuracy == pytest.approx(metrics_of(models_dir, "digits-vae")["reconstruction_accuracy"], abs=0.005)
    # the same digits as PNG, over V2 and V1 (8-bit pixels: nearly the same reconstructions)
    pngs = [png(image[0]) for image in x[:40]]
    encoded = np.empty(len(pngs), dtype=object)
    encoded[:] = pngs
    from_png = vae_server.v2_binary({"png": encoded}).get_output_by_name("image").as_numpy()
    np.testing.assert_allclose(from_png, reconstructed[:40], atol=0.05)
    v1 = vae_server.v1({"instances": [{"b64": base64.b64encode(p).decode()} for p in pngs[:5]]})
    np.testing.assert_allclose([p["image"] for p in v1.json()["predictions"]], from_png[:5], atol=1e-6)


def test_vae_encode_then_generate_equals_reconstruct(vae_server: Server, models_dir) -> None:
    x = np.load(models_dir / "digits-vae" / "heldout.npz")["x"][:6]
    encoded = vae_server.v2_binary({"image": x}, parameters={"mode": "encode"})
    latent, log_variance = (encoded.get_output_by_name(n).as_numpy() for n in ("latent", "log_variance"))
    assert latent.shape == log_variance.shape == (6, 8)
    decoded = vae_server.v2_binary({"latent": latent}).get_output_by_name("image").as_numpy()
    reconstructed = vae_server.v2_binary({"image": x}, parameters={"mode": "reconstruct"})
    np.testing.assert_allclose(decoded, reconstructed.get_output_by_name("image").as_numpy(), atol=1e-6)
    v1 = vae_server.v1({"instances": x.tolist(), "parameters": {"mode": "encode"}}).json()["predictions"]
    np.testing.assert_allclose([p["latent"] for p in v1], latent, atol=1e-6)


def test_concurrent_requests_of_every_mode_equal_each_alone(vae_server: Server, models_dir) -> None:
    x = np.load(models_dir / "digits-vae" / "heldout.npz")["x"][:30]

    def ask(i: int) -> np.ndarray:
        mode = ("generate", "encode", "reconstruct")[i % 3]
        if mode == "generate":
            return images_of(vae_server, num_samples=1 + i % 4, seed=i)
        answer = vae_server.v2_binary({"image": x[i : i + 1 + i % 2]}, parameters={"mode": mode})
        return answer.get_output_by_name("latent" if mode == "encode" else "image").as_numpy()

    alone = [ask(i) for i in range(30)]
    with ThreadPoolExecutor(12) as pool:
        together = list(pool.map(ask, range(30)))
    for a, b in zip(alone, together):
        np.testing.assert_allclose(b, a, atol=1e-6)


def test_metadata(vae_server: Server, gan_server: Server) -> None:
    vae = vae_server.client.get("/v2/models/digits-vae").json()
    assert [i["name"] for i in vae["inputs"]] == ["latent", "image", "png"]
    assert {"name": "image", "datatype": "FP32", "shape": [-1, 1, 8, 8]} in vae["outputs"]
    assert {"name": "log_variance", "datatype": "FP32", "shape": [-1, 8]} in vae["outputs"]
    gan = gan_server.client.get("/v2/models/digits-gan").json()
    assert gan["inputs"] == [{"name": "latent", "datatype": "FP32", "shape": [-1, 16]}]
    assert [o["name"] for o in gan["outputs"]] == ["image", "png"]


def v1(**body) -> dict:  # type: ignore[no-untyped-def,type-arg]
    return {"json": body}


IMAGE = np.zeros((1, 1, 8, 8), dtype=np.float32)
GENERATIVE_CASES = [
    Case("latent-wrong-size", "v2", v2_json([1, 7], [0.0] * 7, name="latent"), 400, "dimension 1 must be 8"),
    Case("latent-beyond-fp32", "v2", v2_json([1, 8], [1e39] * 8, name="latent"), 400, "out of range for FP32"),
    Case("latent-and-seed", "v2", v2_json([1, 8], [0.0] * 8, name="latent", parameters={"seed": 1}), 400, "not both"),
    Case("no-inputs-no-samples", "v2", {"json": {"inputs": []}}, 400, "non-empty list"),
    Case("samples-zero", "v1", v1(parameters={"num_samples": 0}), 400, "'num_samples' must be an integer from 1"),
    Case("samples-too-many", "v1", v1(parameters={"num_samples": 1025}), 400, "1 to 1024"),
    Case("samples-float", "v1", v1(parameters={"num_samples": 2.0}), 400, "'num_samples'"),
    Case("seed-negative", "v1", v1(parameters={"num_samples": 1, "seed": -3}), 400, "'seed'"),
    Case("png-not-bool", "v1", v1(parameters={"num_samples": 1, "png": "yes"}), 400, "'png' must be true or false"),
    Case("unknown-mode", "v1", v1(parameters={"num_samples": 1, "mode": "dream"}), 400, "'mode' must be one of"),
    Case("encode-without-images", "v1", v1(parameters={"mode": "encode", "num_samples": 2}), 400, "needs images"),
    Case(
        "encode-latents",
        "v2",
        v2_json([1, 8], [0.0] * 8, name="latent", parameters={"mode": "encode"}),
        400,
        "exactly one",
    ),
    Case(
        "generate-images",
        "v2",
        v2_json([1, 1, 8, 8], [0.0] * 64, name="image", parameters={"mode": "generate"}),
        400,
        "not images",
    ),
    Case("image-wrong-shape", "v2", v2_json([1, 1, 7, 8], [0.0] * 56, name="image"), 400, "dimension 2 must be 8"),
    Case(
        "png-not-an-image",
        "v2",
        v2_json([1], ["bm90IGFuIGltYWdl"], datatype="BYTES", name="png"),
        400,
        "not a decodable",
    ),
    Case("v1-ragged-latents", "v1", v1(instances=[[0.0] * 8, [0.0] * 7]), 400, "rectangular"),
    Case("v1-strings", "v1", v1(instances=["a"]), 400, "instances[0]"),
]
GAN_CASES = [
    Case("gan-encode", "v1", v1(instances=IMAGE.tolist(), parameters={"mode": "encode"}), 400, "needs a VAE"),
    Case("gan-image-input", "v2", v2_json([1, 1, 8, 8], [0.0] * 64, name="image"), 400, "unknown input(s) ['image']"),
    Case("gan-latent-size", "v2", v2_json([1, 8], [0.0] * 8, name="latent"), 400, "dimension 1 must be 16"),
]


@pytest.mark.parametrize("case", GENERATIVE_CASES, ids=[c.id for c in GENERATIVE_CASES])
def test_vae_bad_input(vae_server: Server, case: Case) -> None:
    assert_4xx_and_ready(vae_server, case, {"image": IMAGE})


@pytest.mark.parametrize("case", GAN_CASES, ids=[c.id for c in GAN_CASES])
def test_gan_bad_input(gan_server: Server, case: Case) -> None:
    assert_4xx_and_ready(gan_server, case, {"latent": np.zeros((2, 16), dtype=np.float32)})


def test_json_output_of_v2_generation(gan_server: Server) -> None:
    out = v2_outputs(gan_server.v2([], {"num_samples": 2, "seed": 0}))
    assert out["image"]["datatype"] == "FP32" and out["image"]["shape"] == [2, 1, 8, 8]
    np.testing.assert_allclose(as_array(out["image"]), images_of(gan_server, num_samples=2, seed=0), atol=1e-6)
