"""The Helm chart, rendered by the real Helm engine for several value scenarios."""

from __future__ import annotations

from typing import Any

import helm_python
import pytest
import yaml
from deploy_support import CHART, KUBE_VERSION, check_maas_runtime, check_object, model


def env_of(isvc: dict[str, Any]) -> dict[str, str]:
    return {e["name"]: e["value"] for e in isvc["spec"]["predictor"]["model"].get("env", [])}


EVERYTHING = {
    "models": [
        model(
            "resnet",
            "image",
            gpu={"count": 1, "type": "NVIDIA-L4"},
            canary={"storageUri": "pvc://maas-models/resnet-v2", "trafficPercent": 10},
        ),
        model(
            "lstm",
            "sequence",
            autoscaling={
                "class": "keda",
                "minReplicas": 0,
                "maxReplicas": 4,
                "scaleMetric": "prometheus",
                "scaleTarget": 20,
            },
        ),
        model(
            "bert",
            "transformer",
            deploymentMode="Knative",
            autoscaling={"class": "kpa", "minReplicas": 0, "maxReplicas": 5},
        ),
        model("gpt", "generative", autoscaling={"class": "keda", "maxReplicas": 2}),
    ],
    "controller": {"enabled": True, "prometheusUrl": "http://prometheus.monitoring:9090"},
    "metrics": {"podMonitor": {"enabled": True}, "serviceMonitor": {"enabled": True}},
    "networkPolicy": {"enabled": True, "from": [{"ipBlock": {"cidr": "10.0.0.0/8"}}]},
    "imagePullSecrets": [{"name": "regcred"}],
    "auth": {"enabled": True, "issuer": "https://issuer.example.com", "jwksUri": "https://issuer.example.com/jwks"},
}


@pytest.mark.parametrize("values", [{}, EVERYTHING], ids=["defaults", "everything"])
def test_lint_strict_is_clean(values):
    report = helm_python.lint(CHART, values, strict=True, kube_version=f"v{KUBE_VERSION}")
    assert report["errors"] == []
    # Severity 1 is information (helm suggests an icon); 2 and 3 are warnings and errors.
    assert [m for m in report["messages"] if m["severity"] >= 2] == []


@pytest.mark.parametrize("values", [{}, EVERYTHING], ids=["defaults", "everything"])
def test_every_rendered_object_validates(render, values):
    rendered = render(values)
    kinds = {o["kind"] for o in rendered.objects}
    for obj in rendered.objects:
        check_object(obj)
    if values:
        assert kinds == {
            "ServingRuntime",
            "InferenceService",
            "Deployment",
            "ServiceAccount",
            "Role",
            "RoleBinding",
            "PodMonitor",
            "ServiceMonitor",
            "NetworkPolicy",
            "Pod",
            "RequestAuthentication",
            "AuthorizationPolicy",
        }


def test_defaults_install_only_the_runtime(render):
    rendered = render()
    (runtime,) = rendered.objects
    assert runtime["kind"] == "ServingRuntime"
    assert runtime["metadata"]["name"] == "demo-maas"
    assert runtime["metadata"]["namespace"] == "ml"
    check_maas_runtime(runtime)
    container = runtime["spec"]["containers"][0]
    assert container["image"] == "ghcr.io/maas-project/maas-predictor:0.1.0"
    assert container["securityContext"]["runAsUser"] == 1000
    assert "No models are configured" in rendered.notes


def test_runtime_kind_image_and_extra_args(render):
    rendered = render(
        {
            "runtime": {
                "kind": "ClusterServingRuntime",
                "name": "maas",
                "runAsUser": None,
                "extraArgs": ["--workers=2"],
            },
            "image": {"repository": "registry.local/maas", "tag": "dev", "pullPolicy": "Never"},
        }
    )
    runtime = rendered.one("ClusterServingRuntime", "maas")
    check_maas_runtime(runtime)
    assert "namespace" not in runtime["metadata"]
    container = runtime["spec"]["containers"][0]
    assert container["image"] == "registry.local/maas:dev"
    assert container["imagePullPolicy"] == "Never"
    assert container["args"][-1] == "--workers=2"
    assert "runAsUser" not in container["securityContext"]


def test_cpu_model(render):
    rendered = render({"models": [model("resnet", "image")]})
    isvc = rendered.isvc("resnet")
    annotations = isvc["metadata"]["annotations"]
    assert annotations["serving.kserve.io/deploymentMode"] == "Standard"
    assert annotations["serving.kserve.io/autoscalerClass"] == "hpa"
    assert isvc["metadata"]["labels"]["app.kubernetes.io/instance"] == "demo"
    predictor = isvc["spec"]["predictor"]
    assert predictor["model"]["modelFormat"] == {"name": "maas-image", "version": "1"}
    assert predictor["model"]["runtime"] == "demo-maas"
    assert predictor["model"]["storageUri"] == "pvc://maas-models/resnet"
    assert (predictor["minReplicas"], predictor["maxReplicas"]) == (1, 1)
    assert not {"nodeSelector", "tolerations", "resources"} & set(predictor)
    assert "resources" not in predictor["model"]
    assert env_of(isvc) == {"MAAS_FAMILY": "image", "MAAS_DEVICE": "auto", "MAAS_DTYPE": "auto"}
    assert "canary" not in isvc["spec"]


def test_gpu_model(render):
    values = {
        "models": [
            model(
                "llm",
                "generative",
                device="cuda",
                dtype="bfloat16",
                resources={"limits": {"memory": "24Gi"}},
                gpu={"count": 2, "type": "NVIDIA-A100-SXM4-80GB"},
                tolerations=[{"key": "dedicated", "operator": "Equal", "value": "ml", "effect": "NoSchedule"}],
                affinity={
                    "nodeAffinity": {
                        "requiredDuringSchedulingIgnoredDuringExecution": {
                            "nodeSelectorTerms": [
                                {
                                    "matchExpressions": [
                                        {
                                            "key": "topology.kubernetes.io/zone",
                                            "operator": "In",
                                            "values": ["a"],
                                        }
                                    ]
                                }
                            ]
                        }
                    }
                },
            )
        ]
    }
    predictor = render(values).isvc("llm")["spec"]["predictor"]
    assert predictor["model"]["resources"]["limits"] == {"memory": "24Gi", "nvidia.com/gpu": 2}
    assert predictor["nodeSelector"] == {
        "nvidia.com/gpu.present": "true",
        "nvidia.com/gpu.product": "NVIDIA-A100-SXM4-80GB",
    }
    assert {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"} in predictor["tolerations"]
    assert len(predictor["tolerations"]) == 2
    assert predictor["affinity"] == values["models"][0]["affinity"]
    assert env_of(render(values).isvc("llm"))["MAAS_DEVICE"] == "cuda"


def test_gpu_settings_are_configurable(render):
    gpu = {
        "count": 1,
        "resourceName": "amd.com/gpu",
        "type": "MI300X",
        "productLabel": "amd.com/gpu.product-name",
        "nodeSelector": {"amd.com/gpu.present": "true", "nvidia.com/gpu.present": None},
        "tolerations": [],
    }
    predictor = render({"models": [model("m", gpu=gpu)]}).isvc("m")["spec"]["predictor"]
    assert predictor["model"]["resources"] == {"limits": {"amd.com/gpu": 1}}
    assert predictor["nodeSelector"] == {
        "amd.com/gpu.present": "true",
        "amd.com/gpu.product-name": "MI300X",
    }
    assert "tolerations" not in predictor


def plain(cls: str, low: int, high: int, metric: str, target: int) -> tuple[dict, dict]:
    """Autoscaling values KServe takes as written (hpa, kpa), and the predictor fields they give."""
    fields = {"minReplicas": low, "maxReplicas": high, "scaleMetric": metric, "scaleTarget": target}
    return {"class": cls, **fields}, fields


def keda(low: int, high: int, metric: dict, **settings: object) -> tuple[dict, dict]:
    """KEDA values, and the predictor fields: KServe takes KEDA metrics only in autoScaling."""
    values = {"class": "keda", "minReplicas": low, "maxReplicas": high, **settings}
    return values, {"minReplicas": low, "maxReplicas": high, "autoScaling": {"metrics": [metric]}}


HPA = {"serving.kserve.io/autoscalerClass": "hpa"}
KEDA = {"serving.kserve.io/autoscalerClass": "keda"}
CPU_60 = {
    "type": "Resource",
    "resource": {"name": "cpu", "target": {"type": "Utilization", "averageUtilization": 60}},
}
PROMETHEUS = {
    "type": "External",
    "external": {
        "metric": {"backend": "prometheus", "serverAddress": "http://prom:9090", "query": "up"},
        "target": {"type": "Value", "value": "25"},
    },
}

AUTOSCALING = [
    pytest.param("Standard", HPA, *plain("hpa", 2, 6, "memory", 70), id="standard-hpa"),
    pytest.param(
        "Standard",
        {"serving.kserve.io/autoscalerClass": "none"},
        {"class": "none", "minReplicas": 3, "maxReplicas": 3},
        {"minReplicas": 3},
        id="standard-none",
    ),
    pytest.param(
        "Standard",
        KEDA,
        *keda(1, 4, CPU_60, scaleMetric="cpu", scaleTarget=60),
        id="standard-keda-cpu",
    ),
    pytest.param(
        "RawDeployment",
        KEDA,
        *keda(
            0,
            4,
            PROMETHEUS,
            scaleMetric="prometheus",
            scaleTarget=25,
            prometheus={"serverAddress": "http://prom:9090", "query": "up"},
        ),
        id="standard-keda-scale-to-zero",
    ),
    pytest.param(
        "Knative",
        {"autoscaling.knative.dev/class": "kpa.autoscaling.knative.dev"},
        *plain("kpa", 0, 8, "rps", 50),
        id="knative-kpa",
    ),
    pytest.param(
        "Serverless",
        {"autoscaling.knative.dev/class": "hpa.autoscaling.knative.dev", **HPA},
        *plain("hpa", 1, 3, "cpu", 80),
        id="knative-hpa",
    ),
]


@pytest.mark.parametrize(("mode", "annotations", "autoscaling", "predictor_fields"), AUTOSCALING)
def test_autoscaling_per_class(render, mode, autoscaling, annotations, predictor_fields):
    isvc = render({"models": [model("m", deploymentMode=mode, autoscaling=autoscaling)]}).isvc("m")
    check_object(isvc)
    written = {k: v for k, v in isvc["metadata"]["annotations"].items() if "autoscal" in k}
    assert written == annotations
    assert isvc["metadata"]["annotations"]["serving.kserve.io/deploymentMode"] == mode
    predictor = isvc["spec"]["predictor"]
    assert {k: v for k, v in predictor.items() if k not in ("model",)} == predictor_fields


def test_keda_defaults_to_cpu_and_to_the_models_request_rate(render):
    values = {
        "models": [
            model("a", autoscaling={"class": "keda", "maxReplicas": 2}),
            model(
                "b",
                autoscaling={
                    "class": "keda",
                    "minReplicas": 0,
                    "maxReplicas": 2,
                    "scaleMetric": "prometheus",
                    "scaleTarget": 5,
                },
            ),
        ]
    }
    rendered = render(values)
    (metric,) = rendered.isvc("a")["spec"]["predictor"]["autoScaling"]["metrics"]
    assert metric["resource"] == {
        "name": "cpu",
        "target": {"type": "Utilization", "averageUtilization": 80},
    }
    (metric,) = rendered.isvc("b")["spec"]["predictor"]["autoScaling"]["metrics"]
    assert metric["external"]["metric"]["query"] == 'sum(rate(maas_requests_total{namespace="ml",model="b"}[1m]))'


def test_knative_canary_routes_a_share_to_the_new_revision(render):
    canary = {"storageUri": "pvc://maas-models/bert-v2", "trafficPercent": 25}
    isvc = render({"models": [model("bert", "transformer", deploymentMode="Knative", canary=canary)]}).isvc("bert")
    check_object(isvc)
    predictor = isvc["spec"]["predictor"]
    assert predictor["canaryTrafficPercent"] == 25
    # Knative: the predictor is the new revision; the previous one keeps the remaining 75%.
    assert predictor["model"]["storageUri"] == "pvc://maas-models/bert-v2"
    assert "canary" not in isvc["spec"]


def test_standard_canary_is_a_second_predictor(render):
    canary = {
        "storageUri": "pvc://maas-models/bert-v2",
        "trafficPercent": 30,
        "name": "v2",
        "replicas": 1,
    }
    values = {
        "models": [
            model(
                "bert",
                "transformer",
                canary=canary,
                autoscaling={"minReplicas": 2, "maxReplicas": 4},
            )
        ]
    }
    isvc = render(values).isvc("bert")
    check_object(isvc)
    assert "canaryTrafficPercent" not in isvc["spec"]["predictor"]
    assert isvc["spec"]["predictor"]["model"]["storageUri"] == "pvc://maas-models/bert"
    (entry,) = isvc["spec"]["canary"]
    assert entry["trafficPercent"] == 30
    assert entry["predictor"]["name"] == "v2"
    assert entry["predictor"]["minReplicas"] == 1
    assert entry["predictor"]["model"] == {
        "modelFormat": {"name": "maas-transformer", "version": "1"},
        "runtime": "demo-maas",
        "storageUri": "pvc://maas-models/bert-v2",
    }
    # KServe gives the canary fixed replicas and rejects autoscaling fields on it.
    assert not {"maxReplicas", "scaleMetric", "scaleTarget", "autoScaling"} & set(entry["predictor"])


def test_standard_canary_name_defaults(render):
    values = {"models": [model("m", canary={"storageUri": "s3://b/m2", "trafficPercent": 0})]}
    (entry,) = render(values).isvc("m")["spec"]["canary"]
    assert (entry["predictor"]["name"], entry["trafficPercent"]) == ("canary", 0)
    assert "minReplicas" not in entry["predictor"]


def test_batching_and_env_reach_the_predictor(render):
    values = {
        "defaults": {"batching": {"maxBatchSize": 32, "maxBatchDelayMs": 0}},
        "models": [
            model("a", batching={"maxQueueSize": 256}),
            model(
                "b",
                batching={"maxBatchSize": 1},
                env=[{"name": "MAAS_DTYPE", "value": "float16"}, {"name": "EXTRA", "value": "x"}],
            ),
        ],
    }
    rendered = render(values)
    env_a = env_of(rendered.isvc("a"))
    assert (env_a["MAAS_MAX_BATCH_SIZE"], env_a["MAAS_MAX_BATCH_DELAY_MS"]) == ("32", "0")
    assert env_a["MAAS_MAX_QUEUE_SIZE"] == "256"
    env_b = rendered.isvc("b")["spec"]["predictor"]["model"]["env"]
    names = [e["name"] for e in env_b]
    assert len(names) == len(set(names)), "a model's own env replaces the chart's setting"
    assert env_of(rendered.isvc("b"))["MAAS_DTYPE"] == "float16"
    assert env_of(rendered.isvc("b"))["MAAS_MAX_BATCH_SIZE"] == "1"
    assert env_of(rendered.isvc("b"))["EXTRA"] == "x"


def test_models_override_chart_defaults(render):
    values = {
        "defaults": {
            "deploymentMode": "Knative",
            "gpu": {"count": 1},
            "autoscaling": {"class": "kpa", "minReplicas": 1, "maxReplicas": 3},
            "nodeSelector": {"pool": "ml"},
            "annotations": {"team": "vision"},
            "serviceAccountName": "models",
        },
        "models": [
            model("a"),
            model(
                "b",
                gpu={"count": 0},
                deploymentMode="Standard",
                autoscaling={"class": "hpa", "maxReplicas": 2},
                nodeSelector={"pool": "cpu"},
            ),
            model("c", autoscaling={"minReplicas": 0}, runtime="my-runtime"),
        ],
    }
    rendered = render(values)
    a, b, c = (rendered.isvc(n)["spec"]["predictor"] for n in "abc")
    assert a["model"]["resources"]["limits"]["nvidia.com/gpu"] == 1
    assert a["nodeSelector"] == {"pool": "ml", "nvidia.com/gpu.present": "true"}
    assert a["serviceAccountName"] == "models"
    assert a["model"]["runtime"] == "demo-maas-knative"
    assert rendered.isvc("a")["metadata"]["annotations"]["team"] == "vision"
    assert "resources" not in b["model"]
    assert b["nodeSelector"] == {"pool": "cpu"}
    assert (b["minReplicas"], b["maxReplicas"]) == (1, 2)
    assert b["model"]["runtime"] == "demo-maas"
    assert (c["minReplicas"], c["maxReplicas"]) == (0, 3)  # 0 overrides the default of 1
    assert c["model"]["runtime"] == "my-runtime"


def test_several_models_and_the_knative_runtime(render):
    values = {
        "models": [
            model(f"m{i}", family) for i, family in enumerate(("image", "sequence", "transformer", "generative"))
        ]
    }
    rendered = render(values)
    assert [i["metadata"]["name"] for i in rendered.of_kind("InferenceService")] == [
        "m0",
        "m1",
        "m2",
        "m3",
    ]
    assert [r["metadata"]["name"] for r in rendered.of_kind("ServingRuntime")] == ["demo-maas"]
    assert [p["metadata"]["name"] for p in rendered.of_kind("Pod")] == [f"demo-maas-test-m{i}" for i in range(4)]

    values["models"][2]["deploymentMode"] = "Knative"
    values["models"][2]["autoscaling"] = {"class": "kpa"}
    rendered = render(values)
    runtimes = {r["metadata"]["name"]: r for r in rendered.of_kind("ServingRuntime")}
    assert set(runtimes) == {"demo-maas", "demo-maas-knative"}
    # Knative admits a single container port: its runtime serves HTTP only.
    check_maas_runtime(runtimes["demo-maas-knative"], grpc=False)
    assert rendered.isvc("m2")["spec"]["predictor"]["model"]["runtime"] == "demo-maas-knative"


def test_runtime_can_be_left_to_the_cluster(render):
    rendered = render({"runtime": {"create": False}, "models": [model("m")]})
    assert rendered.of_kind("ServingRuntime") == []
    assert rendered.isvc("m")["spec"]["predictor"]["model"]["runtime"] == "demo-maas"


def test_helm_test_calls_each_models_readiness_endpoint(render):
    rendered = render(
        {
            "models": [
                model("resnet"),
                model("bert", "transformer", deploymentMode="Knative", autoscaling={"class": "kpa"}),
            ]
        }
    )
    pods = {p["metadata"]["name"]: p for p in rendered.of_kind("Pod")}
    assert set(pods) == {"demo-maas-test-resnet", "demo-maas-test-bert"}
    for name in ("resnet", "bert"):
        pod = pods[f"demo-maas-test-{name}"]
        assert pod["metadata"]["annotations"]["helm.sh/hook"] == "test"
        assert pod["spec"]["restartPolicy"] == "Never"
        command = pod["spec"]["containers"][0]["command"]
        assert command[0] == "curl" and "--fail" in command
        assert command[-1] == f"http://{name}-predictor.ml.svc.cluster.local/v2/models/{name}/ready"


def test_notes_tell_how_to_call_each_model(render):
    notes = render({"models": [model("resnet"), model("bert", "transformer")]}).notes
    for name in ("resnet", "bert"):
        assert f"/v1/models/{name}" in notes
        assert f"/v2/models/{name}/infer" in notes
        assert f"service/{name}-predictor 8080:80 8081:8081" in notes
        assert f"--model {name} --http http://127.0.0.1:8080 --grpc 127.0.0.1:8081" in notes  # gRPC
    assert "helm test demo -n ml" in notes
    bert = notes[notes.index("== bert ") :]
    assert "$(kubectl get inferenceservice bert -n ml -o jsonpath='{.status.url}')/openai/v1" in bert
    assert "curl -N " in bert and '"stream": true' in bert
    assert "KServe's default, 60 s" in bert  # the request timeout a stream must end within
    assert "/openai/v1" not in notes[: notes.index("== bert ")]  # resnet: an image model


def test_timeout_seconds_is_the_predictor_timeout(render):
    """`timeoutSeconds` becomes spec.predictor.timeout (KServe writes it on the model's HTTPRoute);
    unset, KServe's default applies and the field is left out."""
    rendered = render({"defaults": {"timeoutSeconds": 300}, "models": [model("a"), model("b", timeoutSeconds=None)]})
    assert rendered.isvc("a")["spec"]["predictor"]["timeout"] == 300
    assert "timeout" not in rendered.isvc("b")["spec"]["predictor"]
    for isvc in rendered.of_kind("InferenceService"):
        check_object(isvc)


@pytest.mark.parametrize("all_namespaces", [False, True])
def test_version_controller(render, all_namespaces):
    values = {
        "controller": {
            "enabled": True,
            "allNamespaces": all_namespaces,
            "namespace": "models",
            "prometheusUrl": "http://prom:9090",
            "interval": "1m",
        }
    }
    rendered = render(values)
    for obj in rendered.objects:
        check_object(obj)
    deployment = rendered.one("Deployment", "demo-maas-controller")
    pod = deployment["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    assert container["command"] == ["python", "/app/scripts/controller.py"]
    expected = ["run", "--namespace=models", "--prometheus-url=http://prom:9090", "--interval=1m"]
    if all_namespaces:
        expected.insert(2, "--all-namespaces")
    assert container["args"] == expected
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert {m["mountPath"] for m in container["volumeMounts"]} == {"/tmp"}
    assert deployment["spec"]["selector"]["matchLabels"] == {
        "app.kubernetes.io/name": "maas",
        "app.kubernetes.io/instance": "demo",
        "app.kubernetes.io/component": "controller",
    }

    role_kind, binding_kind = ("ClusterRole", "ClusterRoleBinding") if all_namespaces else ("Role", "RoleBinding")
    role = rendered.one(role_kind, "demo-maas-controller")
    rules = {(tuple(r["apiGroups"]), tuple(r["resources"])): set(r["verbs"]) for r in role["rules"]}
    assert rules == {
        (("serving.kserve.io",), ("inferenceservices",)): {
            "get",
            "list",
            "watch",
            "create",
            "update",
            "patch",
        },
        (("serving.kserve.io",), ("inferenceservices/status",)): {"get"},
        (("",), ("configmaps",)): {"get", "list", "watch", "create", "update", "patch"},
        (("",), ("events",)): {"create", "patch"},
    }
    binding = rendered.one(binding_kind, "demo-maas-controller")
    assert binding["roleRef"] == {
        "apiGroup": "rbac.authorization.k8s.io",
        "kind": role_kind,
        "name": "demo-maas-controller",
    }
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": pod["serviceAccountName"], "namespace": "ml"}]
    if not all_namespaces:
        assert role["metadata"]["namespace"] == binding["metadata"]["namespace"] == "models"
    assert rendered.one("ServiceAccount", pod["serviceAccountName"])["metadata"]["namespace"] == "ml"


def test_controller_is_off_by_default(render):
    kinds = {o["kind"] for o in render({"models": [model("m")]}).objects}
    assert not kinds & {"Deployment", "Role", "ClusterRole", "ServiceAccount"}


def test_monitors_and_network_policy_select_the_models(render):
    rendered = render(EVERYTHING)
    names = ["resnet", "lstm", "bert", "gpt"]
    selector = {"matchExpressions": [{"key": "serving.kserve.io/inferenceservice", "operator": "In", "values": names}]}
    pod_monitor = rendered.one("PodMonitor", "demo-maas")
    assert pod_monitor["spec"]["selector"] == selector
    assert {(e["port"], e["path"]) for e in pod_monitor["spec"]["podMetricsEndpoints"]} == {
        ("http1", "/metrics"),
        ("user-port", "/metrics"),
    }
    assert rendered.one("ServiceMonitor", "demo-maas")["spec"]["selector"] == selector
    policy = rendered.one("NetworkPolicy", "demo-maas-models")["spec"]
    assert policy["podSelector"] == selector
    (rule,) = policy["ingress"]
    assert {p["port"] for p in rule["ports"]} == {8080, 8081, 8012, 9091}
    assert {"ipBlock": {"cidr": "10.0.0.0/8"}} in rule["from"]
    assert {"podSelector": {}} in rule["from"]


def _documented(node: yaml.MappingNode, schema: dict, lines: list[str], path: str) -> list[str]:
    """Keys of values.yaml without a `# --` comment; a parent without one needs it on each child."""
    missing = []
    for key_node, value_node in node.value:
        key = key_node.value
        above = []
        for line in reversed(lines[: key_node.start_mark.line]):
            if not line.strip().startswith("#"):
                break
            above.append(line.strip())
        if any(line.startswith("# --") for line in above):
            continue
        prop = schema["properties"][key]
        while "$ref" in prop:
            prop = SCHEMA_DEFS[prop["$ref"].rsplit("/", 1)[1]]
        if "properties" in prop and isinstance(value_node, yaml.MappingNode):
            missing += _documented(value_node, prop, lines, f"{path}{key}.")
        else:
            missing.append(path + key)
    return missing


VALUES_SCHEMA = yaml.safe_load((CHART / "values.schema.json").read_text())
SCHEMA_DEFS = VALUES_SCHEMA["$defs"]


def test_every_value_has_a_doc_comment():
    text = (CHART / "values.yaml").read_text()
    assert _documented(yaml.compose(text), VALUES_SCHEMA, text.splitlines(), "") == []
