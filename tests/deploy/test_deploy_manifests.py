"""The static manifests in manifests/: valid objects, a runtime that keeps the contract, and
kustomizations that cover every file."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from deploy_support import FAMILIES, MANIFESTS, check_maas_runtime, check_object

KUSTOMIZATION = "kustomization.yaml"
MANIFEST_FILES = sorted(p for p in MANIFESTS.rglob("*.yaml") if p.name != KUSTOMIZATION)


def load(path: Path) -> dict:
    (doc,) = [d for d in yaml.safe_load_all(path.read_text()) if d]
    return doc


def isvcs() -> dict[str, dict]:
    docs = (load(p) for p in MANIFEST_FILES)
    return {d["metadata"]["name"]: d for d in docs if d["kind"] == "InferenceService"}


@pytest.mark.parametrize("path", MANIFEST_FILES, ids=lambda p: str(p.relative_to(MANIFESTS)))
def test_every_manifest_validates(path):
    check_object(load(path))


def test_both_runtimes_keep_the_contract_and_match():
    cluster = load(MANIFESTS / "clusterservingruntime.yaml")
    namespaced = load(MANIFESTS / "servingruntime.yaml")
    assert (cluster["kind"], namespaced["kind"]) == ("ClusterServingRuntime", "ServingRuntime")
    check_maas_runtime(cluster)
    assert namespaced["spec"] == cluster["spec"]
    assert namespaced["metadata"] == cluster["metadata"]


def test_one_cpu_model_per_family():
    cpu = {name: i for name, i in isvcs().items() if not name.endswith("-gpu")}
    formats = sorted(i["spec"]["predictor"]["model"]["modelFormat"]["name"] for i in cpu.values())
    assert formats == sorted(f"maas-{family}" for family in FAMILIES)
    for isvc in cpu.values():
        predictor = isvc["spec"]["predictor"]
        assert predictor["model"]["runtime"] == "maas"
        limits = predictor["model"]["resources"]["limits"]
        assert not any(resource.endswith("/gpu") for resource in limits)
        assert "nodeSelector" not in predictor and "tolerations" not in predictor


def test_gpu_variant():
    predictor = isvcs()["maas-generative-gpu"]["spec"]["predictor"]
    assert predictor["model"]["resources"]["limits"]["nvidia.com/gpu"] == 1
    assert predictor["nodeSelector"] == {"nvidia.com/gpu.present": "true"}
    assert {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"} in predictor["tolerations"]


def kustomized(directory: Path) -> set[Path]:
    """Files a kustomization builds, following directory resources (bases) as kustomize does."""
    spec = yaml.safe_load((directory / KUSTOMIZATION).read_text())
    assert spec["kind"] == "Kustomization"
    assert spec["apiVersion"] == "kustomize.config.k8s.io/v1beta1"
    files = set()
    for resource in spec["resources"]:
        target = (directory / resource).resolve()
        assert target.exists(), f"{directory / KUSTOMIZATION} lists missing {resource}"
        files |= kustomized(target) if target.is_dir() else {target}
    return files


def test_kustomizations_cover_every_manifest():
    base = kustomized(MANIFESTS)
    gpu = kustomized(MANIFESTS / "gpu")
    assert gpu == base | {(MANIFESTS / "gpu" / "isvc-generative-gpu.yaml").resolve()}
    # The namespaced runtime is applied on its own (kubectl apply -n NS -f servingruntime.yaml).
    standalone = {(MANIFESTS / "servingruntime.yaml").resolve()}
    assert gpu | standalone == {p.resolve() for p in MANIFEST_FILES}
    names = [(d["kind"], d["metadata"]["name"]) for d in map(load, gpu)]
    assert len(names) == len(set(names))
