"""The deploy scripts: scripts/kind_e2e.sh and scripts/models_to_pvc.sh stay valid shell, and
models_to_pvc.sh, run against a fake ``kubectl`` that records what it is asked, checks its
arguments before touching the cluster and sends exactly the expected commands, in order.
(scripts/call_model.py is tested against real servers: tests/test_call_model.py.)"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import kubernetes_validate
import pytest
import yaml
from deploy_support import KUBE_VERSION, REPO

KIND_E2E = REPO / "scripts" / "kind_e2e.sh"
MODELS_TO_PVC = REPO / "scripts" / "models_to_pvc.sh"
SCRIPTS = [KIND_E2E, MODELS_TO_PVC]

FAKE_KUBECTL = f"""#!{sys.executable}
# A kubectl that records its arguments (and the manifest of `apply -f -`) as JSON lines, and fails
# the calls whose arguments start with FAKE_KUBECTL_FAIL.
import json, os, sys
args = sys.argv[1:]
entry = {{"args": args}}
if args[:1] == ["apply"] and args[-2:] == ["-f", "-"]:
    entry["stdin"] = sys.stdin.read()
with open(os.environ["FAKE_KUBECTL_LOG"], "a") as log:
    log.write(json.dumps(entry) + "\\n")
fail = os.environ.get("FAKE_KUBECTL_FAIL")
sys.exit(1 if fail and " ".join(args).startswith(fail) else 0)
"""


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: p.name)
def test_script_parses(script):
    subprocess.run(["bash", "-n", str(script)], check=True)


@pytest.mark.skipif(
    shutil.which("shellcheck") is None, reason="shellcheck is not installed (apt-get install shellcheck)"
)
@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: p.name)
def test_script_passes_shellcheck(script):
    result = subprocess.run(["shellcheck", "-x", str(script)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout


def model_dir(parent: Path, name: str) -> Path:
    directory = parent / name
    directory.mkdir(parents=True)
    (directory / "maas.yaml").write_text("family: image\n")
    return directory


class Run:
    """One run of models_to_pvc.sh with the fake kubectl first on PATH."""

    def __init__(self, tmp_path: Path, *args: str, fail: str = "") -> None:
        bin_dir = tmp_path / "bin"
        bin_dir.mkdir(exist_ok=True)
        kubectl = bin_dir / "kubectl"
        kubectl.write_text(FAKE_KUBECTL)
        kubectl.chmod(0o755)
        self.log = tmp_path / "kubectl.jsonl"
        self.log.unlink(missing_ok=True)
        env = {**os.environ, "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}", "FAKE_KUBECTL_LOG": str(self.log)}
        if fail:
            env["FAKE_KUBECTL_FAIL"] = fail
        done = subprocess.run(
            ["bash", str(MODELS_TO_PVC), *args], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60
        )
        self.returncode, self.stdout, self.stderr = done.returncode, done.stdout, done.stderr

    @property
    def calls(self) -> list[dict]:
        if not self.log.exists():
            return []
        return [json.loads(line) for line in self.log.read_text().splitlines()]

    @property
    def commands(self) -> list[list[str]]:
        return [call["args"] for call in self.calls]


def test_copies_each_directory_to_its_folder(tmp_path):
    model_dir(tmp_path, "cnn")
    model_dir(tmp_path, "lstm")
    run = Run(tmp_path, "-n", "ml", "-c", "store", "cnn=image", "lstm=nested/sequence")
    assert run.returncode == 0, run.stderr
    pod = ["store-loader", "-n", "ml", "-c", "loader", "--"]
    assert run.commands == [
        ["get", "pvc", "store", "-n", "ml", "-o", "name"],
        ["delete", "pod", "store-loader", "-n", "ml", "--ignore-not-found", "--wait"],
        ["apply", "-n", "ml", "-f", "-"],
        ["wait", "--for=condition=Ready", "pod/store-loader", "-n", "ml", "--timeout=180s"],
        ["exec", *pod, "rm", "-rf", "/mnt/models/image"],
        ["cp", "cnn", "ml/store-loader:/mnt/models/image", "-c", "loader"],
        ["exec", *pod, "test", "-f", "/mnt/models/image/maas.yaml"],
        ["exec", *pod, "rm", "-rf", "/mnt/models/nested/sequence"],
        ["exec", *pod, "mkdir", "-p", "/mnt/models/nested"],
        ["cp", "lstm", "ml/store-loader:/mnt/models/nested/sequence", "-c", "loader"],
        ["exec", *pod, "test", "-f", "/mnt/models/nested/sequence/maas.yaml"],
        ["delete", "pod", "store-loader", "-n", "ml", "--ignore-not-found", "--wait=false"],
    ]
    assert "pvc://store in ml now holds: image nested/sequence" in run.stdout


def test_the_helper_pod_is_valid_and_mounts_the_pvc(tmp_path):
    model_dir(tmp_path, "cnn")
    run = Run(tmp_path, "-n", "ml", "-i", "registry.example.com/ml/maas-predictor:0.1.0", "cnn=image")
    assert run.returncode == 0, run.stderr
    (manifest,) = [call["stdin"] for call in run.calls if "stdin" in call]
    pod = yaml.safe_load(manifest)
    kubernetes_validate.validate(pod, KUBE_VERSION, strict=True)
    assert pod["metadata"]["name"] == "maas-models-loader"
    spec = pod["spec"]
    assert spec["volumes"] == [{"name": "models", "persistentVolumeClaim": {"claimName": "maas-models"}}]
    (container,) = spec["containers"]
    assert container["image"] == "registry.example.com/ml/maas-predictor:0.1.0"
    assert container["volumeMounts"] == [{"name": "models", "mountPath": "/mnt/models"}]
    # The predictor's user writes, so the predictor can read; the restricted Pod Security profile holds.
    assert (spec["securityContext"]["runAsUser"], spec["securityContext"]["fsGroup"]) == (1000, 1000)
    assert spec["securityContext"]["runAsNonRoot"] is True
    assert container["securityContext"]["capabilities"] == {"drop": ["ALL"]}
    assert container["securityContext"]["allowPrivilegeEscalation"] is False


def test_without_the_pvc_it_says_how_to_create_it_and_starts_nothing(tmp_path):
    model_dir(tmp_path, "cnn")
    run = Run(tmp_path, "-n", "ml", "cnn=image", fail="get pvc")
    assert run.returncode == 1
    assert "no PVC maas-models in namespace ml (create it: kubectl apply -n ml -k manifests/models/)" in run.stderr
    assert run.commands == [["get", "pvc", "maas-models", "-n", "ml", "-o", "name"]]


def test_a_copy_that_did_not_arrive_fails_and_the_pod_is_still_deleted(tmp_path):
    model_dir(tmp_path, "cnn")
    run = Run(tmp_path, "-n", "ml", "cnn=image", fail="exec maas-models-loader -n ml -c loader -- test")
    assert run.returncode == 1
    assert "/mnt/models/image/maas.yaml is missing on the volume after the copy" in run.stderr
    assert run.commands[-1] == ["delete", "pod", "maas-models-loader", "-n", "ml", "--ignore-not-found", "--wait=false"]


def test_keep_leaves_the_pod(tmp_path):
    model_dir(tmp_path, "cnn")
    run = Run(tmp_path, "-k", "cnn=image")
    assert run.returncode == 0, run.stderr
    assert run.commands[-1][0] == "exec" and not any(c[:2] == ["delete", "pod"] for c in run.commands[2:])
    assert "keeping pod default/maas-models-loader" in run.stdout


def test_help(tmp_path):
    run = Run(tmp_path, "-h")
    assert run.returncode == 0
    assert run.stdout.startswith("usage: scripts/models_to_pvc.sh")
    assert run.commands == []


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ([], "no LOCAL_DIR=FOLDER pairs given"),
        (["cnn"], "'cnn' is not LOCAL_DIR=FOLDER"),
        (["=image"], "LOCAL_DIR is empty"),
        (["cnn=../up"], "FOLDER must be a relative path of plain names"),
        (["cnn=/abs"], "FOLDER must be a relative path of plain names"),
        (["cnn="], "FOLDER must be a relative path of plain names"),
        (["missing=image"], "missing is not a directory"),
        (["empty=image"], "empty has no maas.yaml (not a model directory)"),
        (["cnn=image", "cnn=image"], "FOLDER 'image' is given twice"),
        (["-n", "Bad_NS", "cnn=image"], "namespace 'Bad_NS' is not a DNS label"),
        (["-c", "Bad/PVC", "cnn=image"], "PVC name 'Bad/PVC' is not a DNS subdomain"),
        (["-z", "cnn=image"], "unknown option -z"),
        (["cnn=image", "-n"], "'-n' is not LOCAL_DIR=FOLDER"),
        (["-n"], "-n needs a value"),
    ],
)
def test_bad_arguments_fail_before_any_kubectl_call(tmp_path, args, message):
    model_dir(tmp_path, "cnn")
    (tmp_path / "empty").mkdir()
    run = Run(tmp_path, *args)
    assert run.returncode == 2, run.stderr
    assert message in run.stderr
    assert "usage: scripts/models_to_pvc.sh" in run.stderr
    assert run.commands == []
