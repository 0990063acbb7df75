"""Bad values fail when the chart renders, with a message that names the value at fault."""

from __future__ import annotations

import helm_python
import pytest
from deploy_support import CHART, model

BAD_VALUES = [
    # Caught by values.schema.json: types, enums, unknown keys.
    pytest.param(
        {"models": [model("m", gpu={"count": "two"})]},
        ["/models/0/gpu/count", "want integer"],
        id="gpu-count-two",
    ),
    pytest.param(
        {"models": [model("m", "audio")]},
        ["/models/0/family", "must be one of"],
        id="unknown-family",
    ),
    pytest.param({"models": [model("m", gpus=1)]}, ["/models/0", "gpus"], id="typo-in-model"),
    pytest.param(
        {"defaults": {"autoscaling": {"minReplica": 0}}},
        ["/defaults/autoscaling", "minReplica"],
        id="typo-in-defaults",
    ),
    pytest.param(
        {"models": [model("m", deploymentMode="Serverles")]},
        ["/models/0/deploymentMode"],
        id="unknown-deployment-mode",
    ),
    pytest.param(
        {"models": [model("m", autoscaling={"class": "vpa"})]},
        ["/models/0/autoscaling/class"],
        id="unknown-autoscaler",
    ),
    pytest.param({"models": [model("M_1")]}, ["/models/0/name"], id="name-not-a-dns-label"),
    pytest.param(
        {"models": [{"name": "m", "family": "image"}]},
        ["/models/0", "storageUri"],
        id="missing-storage-uri",
    ),
    pytest.param(
        {"models": [model("m", canary={"storageUri": "s3://b/m", "trafficPercent": 120})]},
        ["/models/0/canary/trafficPercent"],
        id="canary-over-100-percent",
    ),
    pytest.param(
        {"models": [model("m", timeoutSeconds=0)]},
        ["/models/0/timeoutSeconds", "minimum"],
        id="timeout-zero",
    ),
    pytest.param(
        {"defaults": {"timeoutSeconds": "2m"}},
        ["/defaults/timeoutSeconds", "want"],
        id="timeout-not-seconds",
    ),
    pytest.param({"runtime": {"kind": "ClusterRuntime"}}, ["/runtime/kind"], id="unknown-runtime-kind"),
    pytest.param({"controller": {"enable": True}}, ["/controller", "enable"], id="typo-in-controller"),
    # Caught by the templates: rules that span several values.
    pytest.param(
        {"models": [model("m", autoscaling={"minReplicas": 3, "maxReplicas": 2})]},
        ["models[0] (m)", "autoscaling.minReplicas (3) is above autoscaling.maxReplicas (2)"],
        id="min-above-max",
    ),
    pytest.param(
        {"models": [model("m", autoscaling={"class": "hpa", "minReplicas": 0})]},
        ["models[0] (m)", "autoscaling.minReplicas 0", "class hpa", "deploymentMode Standard"],
        id="scale-to-zero-standard-hpa",
    ),
    pytest.param(
        {"models": [model("m", deploymentMode="Knative", autoscaling={"class": "hpa", "minReplicas": 0})]},
        ["autoscaling.minReplicas 0", "class hpa", "deploymentMode Knative"],
        id="scale-to-zero-knative-hpa",
    ),
    pytest.param(
        {"models": [model("m", autoscaling={"class": "keda", "minReplicas": 0, "scaleMetric": "cpu"})]},
        ["autoscaling.minReplicas 0", "class keda"],
        id="scale-to-zero-keda-cpu",
    ),
    pytest.param(
        {"models": [model("m", autoscaling={"class": "kpa"})]},
        ["models[0] (m)", 'autoscaling.class "kpa"', "deploymentMode Standard"],
        id="kpa-in-standard",
    ),
    pytest.param(
        {"models": [model("m", deploymentMode="Serverless", autoscaling={"class": "keda"})]},
        ['autoscaling.class "keda"', "deploymentMode Serverless"],
        id="keda-in-knative",
    ),
    pytest.param(
        {"models": [model("m", autoscaling={"class": "hpa", "scaleMetric": "rps"})]},
        ['autoscaling.scaleMetric "rps"', "class hpa", "cpu, memory"],
        id="hpa-with-rps",
    ),
    pytest.param(
        {"models": [model("m", autoscaling={"class": "hpa", "scaleTarget": 150})]},
        ["autoscaling.scaleTarget (150)", "1-100"],
        id="cpu-target-over-100",
    ),
    pytest.param(
        {"models": [model("m", autoscaling={"class": "keda", "scaleMetric": "prometheus"})]},
        ["autoscaling.scaleTarget is required"],
        id="prometheus-without-target",
    ),
    pytest.param(
        {"models": [model("m"), model("m", "sequence")]},
        ["models[1] (m)", 'name "m"'],
        id="duplicate-names",
    ),
    pytest.param(
        {"models": [model("m", device="cuda")]},
        ["models[0] (m)", "device cuda", "gpu.count"],
        id="cuda-without-gpu",
    ),
    pytest.param(
        {"models": [model("m", gpu={"type": "NVIDIA-L4"})]},
        ['gpu.type "NVIDIA-L4"', "gpu.count is 0"],
        id="gpu-type-without-count",
    ),
    pytest.param(
        {"models": [model("m", canary={"storageUri": "s3://b/m2", "trafficPercent": 10, "replicas": 2})]},
        ["canary.replicas (2)", "autoscaling.minReplicas (1)"],
        id="canary-larger-than-stable",
    ),
    pytest.param(
        {
            "models": [
                model(
                    "m",
                    deploymentMode="Knative",
                    autoscaling={"class": "kpa"},
                    canary={"storageUri": "s3://b/m2", "trafficPercent": 10, "replicas": 1},
                )
            ]
        },
        ["canary.name and canary.replicas are Standard-mode settings"],
        id="canary-replicas-in-knative",
    ),
    pytest.param(
        {"models": [model("m")], "auth": {"enabled": True, "jwksUri": "https://i.example/jwks"}},
        ["auth.issuer"],
        id="auth-without-issuer",
    ),
    pytest.param(
        {"models": [model("m")], "auth": {"enabled": True, "issuer": "i", "jwksUri": "http://plain"}},
        ["/auth/jwksUri"],
        id="auth-jwks-not-https",
    ),
    pytest.param({"auth": {"enabled": True, "secret": "x"}}, ["/auth", "secret"], id="auth-no-secrets-in-values"),
]


@pytest.mark.parametrize(("values", "fragments"), BAD_VALUES)
def test_bad_values_fail_at_render_time_naming_the_value(chart, values, fragments):
    with pytest.raises(helm_python.HelmError) as failure:
        chart.render(values, name="demo", namespace="ml")
    message = str(failure.value)
    for fragment in fragments:
        assert fragment in message


@pytest.mark.parametrize(("values", "fragments"), BAD_VALUES[:3])
def test_lint_reports_bad_values(values, fragments):
    report = helm_python.lint(CHART, values, strict=True)
    assert any(fragments[0] in error for error in report["errors"])
