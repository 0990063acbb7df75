"""The chart's worked examples, helm/examples/values-*.yaml (the README's step 4): they pass
``helm lint --strict`` and the values schema, every object they render validates, and they serve
what the README says they serve."""

from __future__ import annotations

from pathlib import Path

import helm_python
import pytest
import yaml
from deploy_support import CHART, FAMILIES, KUBE_VERSION, MODEL_FOLDERS, REPO, check_object

EXAMPLES = sorted((REPO / "helm" / "examples").glob("values-*.yaml"))


def values_of(path: Path) -> dict:
    loaded: dict = yaml.safe_load(path.read_text())
    return loaded


def env_of(isvc: dict) -> dict[str, str]:
    return {e["name"]: e.get("value", "") for e in isvc["spec"]["predictor"]["model"].get("env", [])}


def test_there_is_a_cpu_and_a_gpu_example():
    assert [p.name for p in EXAMPLES] == ["values-cpu.yaml", "values-gpu.yaml"]


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.name)
def test_example_lints_and_every_object_validates(render, path):
    report = helm_python.lint(CHART, values_of(path), strict=True, kube_version=f"v{KUBE_VERSION}")
    assert report["errors"] == []
    assert [m for m in report["messages"] if m["severity"] >= 2] == []
    rendered = render(values_of(path), name="maas-examples", namespace="maas")
    for obj in rendered.objects:
        check_object(obj)
    isvcs = rendered.of_kind("InferenceService")
    assert [i["metadata"]["name"] for i in isvcs] == [m["name"] for m in values_of(path)["models"]]
    for isvc in isvcs:
        model = isvc["spec"]["predictor"]["model"]
        assert model["runtime"] == "maas-examples"  # named after the release: no clash with manifests/' `maas`
        assert model["storageUri"].rsplit("/", 1)[1] in MODEL_FOLDERS
        assert f"/v2/models/{isvc['metadata']['name']}/infer" in rendered.notes


def test_cpu_example_serves_every_family_and_text_generation(render):
    rendered = render(values_of(REPO / "helm" / "examples" / "values-cpu.yaml"), name="maas-examples", namespace="maas")
    isvcs = {i["metadata"]["name"]: i for i in rendered.of_kind("InferenceService")}
    families = {name: env_of(i)["MAAS_FAMILY"] for name, i in isvcs.items()}
    assert families == {
        "digits": "image",
        "digits-seq": "sequence",
        "minilm": "transformer",
        "digits-vae": "generative",
        "tiny-gpt": "transformer",
        "tiny-chat": "transformer",
    }
    assert set(families.values()) == set(FAMILIES)
    assert isvcs["tiny-gpt"]["spec"]["predictor"]["model"]["storageUri"] == "pvc://maas-models/text-generation"
    chat = isvcs["tiny-chat"]["spec"]["predictor"]
    assert chat["model"]["storageUri"] == "pvc://maas-models/chat"
    assert chat["timeout"] == 120  # a streamed answer must end within the HTTPRoute's request timeout
    (runtime,) = rendered.of_kind("ServingRuntime")
    (container,) = runtime["spec"]["containers"]
    assert container["image"] == "ghcr.io/maas-project/maas-predictor:0.1.0"  # --set image.repository moves it
    for isvc in isvcs.values():
        assert "nvidia.com/gpu" not in isvc["spec"]["predictor"]["model"].get("resources", {}).get("limits", {})


def test_gpu_example_is_text_generation_on_the_cuda_image(render):
    values = values_of(REPO / "helm" / "examples" / "values-gpu.yaml")
    values["image"]["repository"] = "registry.example.com/ml/maas-predictor"  # the README's --set
    rendered = render(values, name="maas-gpu", namespace="maas")
    (runtime,) = rendered.of_kind("ServingRuntime")
    assert runtime["spec"]["containers"][0]["image"] == "registry.example.com/ml/maas-predictor:0.1.0-cuda"
    (isvc,) = rendered.of_kind("InferenceService")
    predictor = isvc["spec"]["predictor"]
    assert predictor["model"]["storageUri"] == "pvc://maas-models/chat"  # tiny-chat: a chat template
    assert predictor["timeout"] == 600
    assert predictor["model"]["resources"]["limits"]["nvidia.com/gpu"] == 1
    env = env_of(isvc)
    assert (env["MAAS_FAMILY"], env["MAAS_DEVICE"], env["MAAS_DTYPE"]) == ("transformer", "cuda", "float16")
    assert predictor["nodeSelector"]["nvidia.com/gpu.present"] == "true"
    assert "http://$GATEWAY/openai/v1/chat/completions" in rendered.notes
    assert '"model": "llm"' in rendered.notes


def test_cpu_example_notes_show_the_openai_api_of_the_chat_model(render):
    """NOTES give each transformer the OpenAI base URL and a chat call, plain and streamed, with
    the request timeout a stream must end within."""
    values = values_of(REPO / "helm" / "examples" / "values-cpu.yaml")
    notes = render(values, name="maas-examples", namespace="maas").notes
    chat = notes[notes.index("== tiny-chat ") :]
    assert "-o jsonpath='{.status.url}')/openai/v1" in chat
    assert 'base_url="http://$GATEWAY/openai/v1", default_headers={"Host": HOST}' in chat
    assert '"model": "tiny-chat"' in chat and '"stream": true' in chat and "curl -N " in chat
    assert "timeout: 120 s (timeoutSeconds" in chat
    digits = notes[notes.index("== digits ") : notes.index("== digits-seq ")]
    assert "/openai/v1" not in digits  # only transformers serve the OpenAI API


def test_text_generation_folder_holds_a_text_generation_model():
    """The reference model copied to text-generation/ is tiny-gpt, built with task: text-generation."""
    builder = (REPO / "scripts" / "reference_models.py").read_text()
    tiny_gpt = builder[builder.index("def tiny_gpt(") :]
    assert '"task": "text-generation"' in tiny_gpt[: tiny_gpt.index("\ndef ")]
    assert MODEL_FOLDERS["text-generation"] == "tiny-gpt"


def test_chat_folder_holds_the_chat_model():
    """chat/ is tiny-chat, which the OpenAI API's chat/completions needs: it has a chat template."""
    assert MODEL_FOLDERS["chat"] == "tiny-chat"
    chat = (REPO / "scripts" / "reference_chat.py").read_text()
    assert '"task": "text-generation"' in chat and "chat_template" in chat
