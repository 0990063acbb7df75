"""The plain manifests in manifests/, rendered by the real ``kubectl kustomize``: every
kustomization builds, every object it renders validates (Kubernetes' own schemas, the project's
KServe and Gateway API schema), the predictor image comes from the ``images:`` entries of
manifests/images/, and each set holds what the README and docs/deploy.md say."""

from __future__ import annotations

import functools
import re
import shutil
import subprocess
from pathlib import Path

import jsonschema
import pytest
import yaml
from deploy_support import FAMILIES, MANIFESTS, MODEL_FOLDERS, SCHEMA, Obj, check_maas_runtime, check_object

KUBECTL = shutil.which("kubectl")
pytestmark = pytest.mark.skipif(
    KUBECTL is None, reason="kubectl is not installed: the manifests are rendered with `kubectl kustomize`"
)

KUSTOMIZATION = "kustomization.yaml"
FOLDERS = sorted(p.parent for p in MANIFESTS.rglob(KUSTOMIZATION))
IMAGES = MANIFESTS / "images"


def rel(directory: Path) -> str:
    return str(directory.relative_to(MANIFESTS.parent))


def spec(directory: Path) -> Obj:
    loaded: Obj = yaml.safe_load((directory / KUSTOMIZATION).read_text())
    return loaded


def kustomize(directory: Path) -> list[Obj]:
    """``kubectl kustomize DIRECTORY``, parsed; a failure shows kustomize's own message."""
    assert KUBECTL is not None
    done = subprocess.run([KUBECTL, "kustomize", str(directory)], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, f"kubectl kustomize {rel(directory)} failed:\n{done.stderr}"
    return [doc for doc in yaml.safe_load_all(done.stdout) if doc]


@functools.cache
def build(directory: Path) -> tuple[Obj, ...]:
    return tuple(kustomize(directory))


def of_kind(objects: tuple[Obj, ...], kind: str) -> dict[str, Obj]:
    return {o["metadata"]["name"]: o for o in objects if o["kind"] == kind}


def images_of(obj: Obj) -> list[str]:
    """Every container image an object names (runtime containers, an InferenceService's model)."""
    if obj["kind"] in ("ServingRuntime", "ClusterServingRuntime"):
        return [c["image"] for c in obj["spec"]["containers"]]
    if obj["kind"] == "InferenceService":
        model = obj["spec"]["predictor"]["model"]
        return [model["image"]] if "image" in model else []
    return []


def image_entries(directory: Path = IMAGES) -> dict[str, str]:
    """The ``images:`` entries of the images component: placeholder name -> newName:newTag."""
    return {e["name"]: f"{e['newName']}:{e['newTag']}" for e in spec(directory)["images"]}


def test_the_folders_are_what_the_docs_list():
    assert {rel(f) for f in FOLDERS} == {
        "manifests",
        "manifests/cpu",
        "manifests/gpu",
        "manifests/images",
        "manifests/ingress",
        "manifests/models",
        "manifests/namespaced",
        "manifests/runtime",
    }


@pytest.mark.parametrize("directory", FOLDERS, ids=rel)
def test_every_kustomization_renders_and_every_object_validates(directory):
    objects = build(directory)
    if spec(directory)["kind"] == "Component":
        assert objects == ()  # a component adds transformations, not objects
        return
    assert objects, f"{rel(directory)} renders nothing"
    for obj in objects:
        check_object(obj)
    keys = [(o["kind"], o["metadata"].get("namespace"), o["metadata"]["name"]) for o in objects]
    assert len(keys) == len(set(keys)), f"{rel(directory)} renders an object twice"


def test_every_manifest_file_is_in_a_kustomization():
    listed = set()
    for directory in FOLDERS:
        for entry in spec(directory).get("resources", []):
            target = (directory / entry).resolve()
            assert target.exists(), f"{rel(directory)}/{KUSTOMIZATION} lists missing {entry}"
            if target.is_file():
                listed.add(target)
    files = {p.resolve() for p in MANIFESTS.rglob("*.yaml") if p.name not in (KUSTOMIZATION, "kustomizeconfig.yaml")}
    assert files == listed


def test_every_image_comes_from_the_images_entries():
    entries = image_entries()
    assert set(entries) == {"maas-predictor", "maas-predictor-cuda"}
    assert entries["maas-predictor-cuda"] == entries["maas-predictor"] + "-cuda"
    # The files name only the placeholders ...
    source_images = set(
        re.findall(r"^\s*image:\s*(\S+)", "".join(p.read_text() for p in MANIFESTS.rglob("*.yaml")), re.M)
    )
    assert source_images == set(entries)
    # ... and every rendered container runs the image its entry sets.
    seen = set()
    for directory in FOLDERS:
        for obj in build(directory):
            for image in images_of(obj):
                assert image in entries.values(), f"{rel(directory)}: {obj['metadata']['name']} runs {image}"
                seen.add(image)
    assert seen == set(entries.values())
    runtime = of_kind(build(MANIFESTS), "ClusterServingRuntime")["maas"]
    assert images_of(runtime) == [entries["maas-predictor"]]
    gpu = of_kind(build(MANIFESTS / "gpu"), "InferenceService")["maas-generative-gpu"]
    assert images_of(gpu) == [entries["maas-predictor-cuda"]]


def test_editing_the_images_entries_moves_every_set_to_your_registry(tmp_path):
    copy = tmp_path / "manifests"
    shutil.copytree(MANIFESTS, copy)
    component = copy / "images" / KUSTOMIZATION
    text = component.read_text().replace(
        "newName: ghcr.io/maas-project/maas-predictor", "newName: registry.example.com/ml/maas-predictor"
    )
    component.write_text(text.replace("newTag: 0.1.0", "newTag: 1.2.3"))
    images = {
        image
        for directory in (copy, copy / "gpu", copy / "namespaced")
        for obj in kustomize(directory)
        for image in images_of(obj)
    }
    assert images == {
        "registry.example.com/ml/maas-predictor:1.2.3",
        "registry.example.com/ml/maas-predictor:1.2.3-cuda",
    }


def test_both_runtimes_keep_the_contract_and_match():
    (cluster,) = build(MANIFESTS / "runtime")
    namespaced = of_kind(build(MANIFESTS / "namespaced"), "ServingRuntime")["maas"]
    assert cluster["kind"] == "ClusterServingRuntime"
    check_maas_runtime(cluster)
    assert namespaced["spec"] == cluster["spec"]
    assert namespaced["metadata"] == cluster["metadata"]


def test_one_cpu_model_per_family_reading_the_pvc():
    isvcs = of_kind(build(MANIFESTS), "InferenceService")
    assert sorted(isvcs) == sorted(f"maas-{family}" for family in FAMILIES)
    for family in FAMILIES:
        predictor = isvcs[f"maas-{family}"]["spec"]["predictor"]
        model = predictor["model"]
        assert model["modelFormat"]["name"] == f"maas-{family}"
        assert model["runtime"] == "maas"
        assert model["storageUri"] == f"pvc://maas-models/{family}"
        assert {"name": "MAAS_FAMILY", "value": family} in model["env"]
        assert not any(resource.endswith("/gpu") for resource in model["resources"]["limits"])
        assert "nodeSelector" not in predictor and "tolerations" not in predictor
        assert "image" not in model  # the runtime's image


def test_the_sets_compose_as_documented():
    def names(directory: Path) -> set[tuple[str, str]]:
        return {(o["kind"], o["metadata"]["name"]) for o in build(directory)}

    cpu = names(MANIFESTS / "cpu")
    assert names(MANIFESTS) == cpu | {("ClusterServingRuntime", "maas")}
    assert names(MANIFESTS / "gpu") == names(MANIFESTS) | {("InferenceService", "maas-generative-gpu")}
    assert names(MANIFESTS / "namespaced") == cpu | {("ServingRuntime", "maas")}
    # The namespaced set serves the very same models.
    same = {o["metadata"]["name"]: o for o in build(MANIFESTS / "namespaced") if o["kind"] == "InferenceService"}
    assert same == of_kind(build(MANIFESTS), "InferenceService")


def test_gpu_variant():
    isvc = of_kind(build(MANIFESTS / "gpu"), "InferenceService")["maas-generative-gpu"]
    predictor = isvc["spec"]["predictor"]
    model = predictor["model"]
    assert model["storageUri"] == "pvc://maas-models/generative"
    assert model["image"].endswith("-cuda")
    assert model["resources"]["limits"]["nvidia.com/gpu"] == 1
    env = {e["name"]: e["value"] for e in model["env"]}
    assert (env["MAAS_DEVICE"], env["MAAS_DTYPE"]) == ("cuda", "float16")
    assert predictor["nodeSelector"] == {"nvidia.com/gpu.present": "true"}
    assert {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"} in predictor["tolerations"]


def test_every_model_reads_a_folder_of_the_models_pvc():
    (pvc,) = build(MANIFESTS / "models")
    assert (pvc["kind"], pvc["metadata"]["name"]) == ("PersistentVolumeClaim", "maas-models")
    assert "namespace" not in pvc["metadata"]  # lands in the namespace `kubectl apply -n` names
    for directory in FOLDERS:
        for isvc in of_kind(build(directory), "InferenceService").values():
            uri = isvc["spec"]["predictor"]["model"]["storageUri"]
            assert uri.startswith("pvc://maas-models/") and uri.rsplit("/", 1)[1] in MODEL_FOLDERS, uri


def test_ingress_is_the_gateway_kserve_routes_through():
    objects = build(MANIFESTS / "ingress")
    (gateway_class,) = of_kind(objects, "GatewayClass").values()
    gateway = of_kind(objects, "Gateway")["kserve-ingress-gateway"]
    assert gateway_class["spec"]["controllerName"] == "gateway.envoyproxy.io/gatewayclass-controller"
    # KServe's default `kserveIngressGateway` is kserve/kserve-ingress-gateway.
    assert gateway["metadata"]["namespace"] == "kserve"
    assert gateway["spec"]["gatewayClassName"] == gateway_class["metadata"]["name"]
    (listener,) = gateway["spec"]["listeners"]
    assert (listener["protocol"], listener["port"]) == ("HTTP", 80)
    assert listener["allowedRoutes"]["namespaces"]["from"] == "All"  # routes live in the models' namespaces


def test_the_schema_rejects_a_misspelt_gateway_field():
    gateway = dict(of_kind(build(MANIFESTS / "ingress"), "Gateway")["kserve-ingress-gateway"])
    gateway["spec"] = {**gateway["spec"], "listeners": [{"name": "http", "port": 80, "protocoll": "HTTP"}]}
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.Draft202012Validator(SCHEMA).validate(gateway)
