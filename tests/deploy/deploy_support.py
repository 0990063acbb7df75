"""Shared pieces of the deployment tests: rendering the chart, and validators.

Kubernetes' own kinds are checked with kubernetes-validate (strict); KServe, Gateway API, Istio
and Prometheus Operator kinds with the project's schema, tests/deploy/kserve-schema.yaml. The embedded pod
parts of those (containers, volumes, tolerations, affinity) are wrapped in a Pod and checked by
kubernetes-validate too, so nothing we write goes unchecked.
"""

from __future__ import annotations

import copy
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import helm_python
import jsonschema
import kubernetes_validate
import yaml

REPO = Path(__file__).resolve().parents[2]
CHART = REPO / "helm" / "maas"
MANIFESTS = REPO / "manifests"
KUBE_VERSION = "1.30.0"
SCHEMA = yaml.safe_load((Path(__file__).with_name("kserve-schema.yaml")).read_text())
PROJECT_KINDS = {
    "InferenceService",
    "ServingRuntime",
    "ClusterServingRuntime",
    "PodMonitor",
    "ServiceMonitor",
    "RequestAuthentication",
    "AuthorizationPolicy",
    "GatewayClass",
    "Gateway",
}

Obj = dict[str, Any]


@dataclass
class Rendered:
    """What one `helm template` produced: the parsed objects and the NOTES.txt text."""

    objects: list[Obj]
    notes: str

    def of_kind(self, kind: str) -> list[Obj]:
        return [o for o in self.objects if o["kind"] == kind]

    def one(self, kind: str, name: str) -> Obj:
        found = [o for o in self.of_kind(kind) if o["metadata"]["name"] == name]
        assert len(found) == 1, f"expected one {kind}/{name}, found {len(found)}"
        return found[0]

    def isvc(self, name: str) -> Obj:
        return self.one("InferenceService", name)


def render_chart(
    chart: helm_python.Chart,
    values: Obj | None = None,
    *,
    name: str = "demo",
    namespace: str = "ml",
) -> Rendered:
    """Render with the real Helm engine (values schema included) and parse every manifest."""
    manifests = chart.render(values or {}, name=name, namespace=namespace)
    objects = [
        doc
        for path, text in sorted(manifests.items())
        if not path.endswith("NOTES.txt")
        for doc in yaml.safe_load_all(text)
        if doc
    ]
    notes = next((t for p, t in manifests.items() if p.endswith("NOTES.txt")), "")
    return Rendered(objects, notes)


def model(name: str, family: str = "image", **settings: Any) -> Obj:
    """A model entry of the chart's `models` list."""
    return {"name": name, "family": family, "storageUri": f"pvc://maas-models/{name}", **settings}


def _pod_parts(obj: Obj) -> Iterator[tuple[str, Obj]]:
    """The Kubernetes pod pieces embedded in a KServe object, each wrapped as a Pod."""
    spec = obj["spec"]
    if obj["kind"] in ("ServingRuntime", "ClusterServingRuntime"):
        pod_spec = {
            k: spec[k]
            for k in ("containers", "volumes", "imagePullSecrets", "nodeSelector", "tolerations")
            if k in spec
        }
        yield "runtime pod", pod_spec
    elif obj["kind"] == "InferenceService":
        predictors = [spec["predictor"]] + [c["predictor"] for c in spec.get("canary", [])]
        for predictor in predictors:
            container = {"name": "kserve-container", "image": predictor["model"].get("image", "predictor")}
            for key in ("env", "resources"):
                if key in predictor["model"]:
                    container[key] = predictor["model"][key]
            pod_spec = {"containers": [container]}
            for key in ("nodeSelector", "tolerations", "affinity", "serviceAccountName"):
                if key in predictor:
                    pod_spec[key] = predictor[key]
            yield "predictor pod", pod_spec


def check_object(obj: Obj) -> None:
    """Validate one object: Kubernetes kinds strictly, KServe kinds against the project schema."""
    if obj["kind"] in PROJECT_KINDS:
        jsonschema.Draft202012Validator(SCHEMA).validate(obj)
        for what, pod_spec in _pod_parts(obj):
            pod = {
                "apiVersion": "v1",
                "kind": "Pod",
                "metadata": {"name": f"{obj['metadata']['name']}-{what.replace(' ', '-')}"},
                "spec": copy.deepcopy(pod_spec),
            }
            kubernetes_validate.validate(pod, KUBE_VERSION, strict=True)
    else:
        kubernetes_validate.validate(obj, KUBE_VERSION, strict=True)


FAMILIES = ("image", "sequence", "transformer", "generative")
# The folders of the PVC maas-models the examples read (manifests/, helm/examples/), and the
# reference model (scripts/reference_models.py) the README's step 3 copies into each.
MODEL_FOLDERS = {
    "image": "digits-cnn",
    "sequence": "digits-lstm",
    "transformer": "minilm",
    "generative": "digits-vae",
    "text-generation": "tiny-gpt",
    "chat": "tiny-chat",
}


def check_maas_runtime(runtime: Obj, *, grpc: bool = True) -> None:
    """The contract every maas ServingRuntime keeps, from the chart or from manifests/."""
    spec = runtime["spec"]
    assert [(f["name"], f["version"]) for f in spec["supportedModelFormats"]] == [
        (f"maas-{family}", "1") for family in FAMILIES
    ]
    assert spec["protocolVersions"] == (["v1", "v2", "grpc-v2"] if grpc else ["v1", "v2"])
    assert spec["annotations"]["prometheus.kserve.io/port"] == "8080"
    assert spec["annotations"]["prometheus.kserve.io/path"] == "/metrics"
    (container,) = spec["containers"]
    assert container["name"] == "kserve-container"
    assert container["args"][:2] == ["--model_name={{.Name}}", "--model_dir=/mnt/models"]
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert ports == ({"http1": 8080, "h2c": 8081} if grpc else {"http1": 8080})
    security = container["securityContext"]
    assert security["runAsNonRoot"] is True
    assert security["readOnlyRootFilesystem"] is True
    assert security["allowPrivilegeEscalation"] is False
    assert security["capabilities"] == {"drop": ["ALL"]}
    volumes = {v["name"]: v for v in spec["volumes"]}
    mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
    assert volumes[mounts["/dev/shm"]]["emptyDir"]["medium"] == "Memory"
    # A read-only root needs a writable HOME and TMPDIR.
    assert "medium" not in volumes[mounts["/tmp"]]["emptyDir"]
    env = {e["name"]: e["value"] for e in container["env"]}
    assert env["HOME"] == env["TMPDIR"] == "/tmp"
