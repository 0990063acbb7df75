"""The README's ``<!-- readme: controller -->`` blocks, run as written against the fake cluster.

Each command is taken from README.md (``tests/readme_blocks.py``) and run as a subprocess through
``bash`` from the repository root, as a user would after activating the venv, with ``KUBECONFIG``
naming a kubeconfig that points at a ``FakeApiServer`` on 127.0.0.1 with ``FakeKServe`` installed
(so the commands that wait for Ready finish). After each command, its effect is checked on the
fake server's objects. ``kubectl`` is the real one, against the same kubeconfig (the fake serves
the discovery documents it needs); ``KUBECACHEDIR`` keeps its discovery cache in the test's folder.

What differs from the README, and why:

- the rollout's ``--prometheus http://prometheus.monitoring:9090`` becomes the URL of a
  ``FakePrometheus`` that reports a healthy canary (error rate 0.001, p99 120 ms), so it promotes;
- the rollout's ``--interval 60s`` becomes ``--interval 1s``: the controller reads the wall clock
  (there is no clock setting a separate process could be given), and four steps of 60s would take
  minutes. ``--window`` is not given in the README and stays at its default, max(interval, 60s),
  so the queries use the same ``[60s]`` window as the command as written;
- the annotate block is followed by the reconcile loop the chart runs,
  ``python scripts/controller.py run --namespace models``, one pass at a time (``--once``): the
  README's ``maas.io/rollout-interval=60s`` stands, so the test checks that the first pass starts
  step 1 (10%) and the next ones see it Ready and keep observing it, not the promotion.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from controller_fakes.kserve import ISVC, NS, FakeKServe
from controller_fakes.kube_api import FakeApiServer, write_kubeconfig
from controller_fakes.prometheus import FakePrometheus

from tests.readme_blocks import ROOT, blocks

NAME = "resnet"
README_PROMETHEUS = "--prometheus http://prometheus.monitoring:9090"
README_INTERVAL = "--interval 60s"
RUN_ONCE = f"python scripts/controller.py run --namespace {NS} --once"


def controller_blocks() -> list[list[str]]:
    found = [b.commands() for b in blocks() if b.kind == "controller"]
    assert len(found) == 3, f"expected 3 controller blocks in README.md, found {len(found)}"
    return found


class Cluster:
    """A fake API server with fake KServe, a kubeconfig for it, and a shell to run commands in."""

    def __init__(self, api: FakeApiServer, tmp_path: Path) -> None:
        self.api = api
        kubeconfig = write_kubeconfig(tmp_path / "kubeconfig", api.url)
        self.env = {
            **os.environ,
            "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",  # the venv's python
            "KUBECONFIG": kubeconfig,
            "KUBECACHEDIR": str(tmp_path / "kube-cache"),
        }
        for leaked in ("KUBERNETES_SERVICE_HOST", "MAAS_NAMESPACE"):  # in a pod: not its in-cluster config
            self.env.pop(leaked, None)

    def sh(self, command: str) -> str:
        done = subprocess.run(["bash", "-c", command], cwd=ROOT, env=self.env, capture_output=True, text=True,
                              timeout=180)  # fmt: skip
        assert done.returncode == 0, f"{command}\nexit {done.returncode}\n{done.stdout}\n{done.stderr}"
        return done.stdout

    def isvc(self) -> dict[str, Any]:
        obj = self.api.get(ISVC, NS, NAME)
        assert obj is not None, f"no InferenceService {NS}/{NAME}"
        return obj

    def split(self) -> tuple[str, str, str | None, int]:
        """(stable URI, stable version, canary URI, canary percent) from the Standard-mode spec."""
        isvc = self.isvc()
        assert isvc["metadata"]["annotations"]["serving.kserve.io/deploymentMode"] == "Standard"
        canaries = isvc["spec"].get("canary") or []
        assert len(canaries) <= 1
        canary = canaries[0] if canaries else None
        return (
            isvc["spec"]["predictor"]["model"]["storageUri"],
            isvc["metadata"]["annotations"]["maas.io/version"],
            canary["predictor"]["model"]["storageUri"] if canary else None,
            canary["trafficPercent"] if canary else 0,
        )

    def ready(self) -> bool:
        status = self.isvc().get("status") or {}
        ready = {c["type"]: c["status"] for c in status.get("conditions") or []}.get("Ready") == "True"
        return ready and status.get("observedGeneration") == self.isvc()["metadata"]["generation"]


@pytest.fixture
def cluster(api: FakeApiServer, kserve: FakeKServe, tmp_path: Path) -> Cluster:
    return Cluster(api, tmp_path)


@pytest.fixture
def healthy_prometheus() -> Iterator[FakePrometheus]:
    server = FakePrometheus(answer=lambda q: 120.0 if "histogram_quantile" in q else 0.001).start()
    yield server
    server.stop()


def run_versions_block(cluster: Cluster, commands: list[str]) -> None:
    """deploy, canary, status, promote, rollback --to v1, history: each one's effect on the cluster."""
    deploy, canary, status, promote, rollback, history = commands
    assert deploy.startswith("python scripts/controller.py deploy resnet -n models ")

    cluster.sh(deploy)
    assert cluster.split() == ("s3://models/resnet/1", "v1", None, 0)
    assert cluster.isvc()["spec"]["predictor"]["model"]["modelFormat"]["name"] == "maas-image"
    assert cluster.ready()

    cluster.sh(canary)
    assert cluster.split() == ("s3://models/resnet/1", "v1", "s3://models/resnet/2", 10)
    assert cluster.isvc()["metadata"]["annotations"]["maas.io/canary-version"] == "v2"
    assert cluster.ready()

    shown = cluster.sh(status)
    assert "v1" in shown and "v2" in shown and "90" in shown and "10" in shown, shown

    cluster.sh(promote)
    assert cluster.split() == ("s3://models/resnet/2", "v2", None, 0)
    assert cluster.ready()

    cluster.sh(rollback)
    assert cluster.split() == ("s3://models/resnet/1", "v1", None, 0)
    assert cluster.ready()

    entries = json.loads(cluster.sh(history))
    assert [(e["version"], e["storageUri"], e["command"], e["outcome"], e["percent"]) for e in entries] == [
        ("v1", "s3://models/resnet/1", "deploy", "rolled-out", 100),
        ("v2", "s3://models/resnet/2", "canary", "canary", 10),
        ("v2", "s3://models/resnet/2", "promote", "promoted", 100),
        ("v1", "s3://models/resnet/1", "rollback", "restored", 100),
    ]


def test_versions_and_rollout_blocks_run_as_written(cluster: Cluster, healthy_prometheus: FakePrometheus):
    """The first block, then the rollout block on top of it, as a user would run them in turn."""
    versions, rollout, _ = controller_blocks()
    run_versions_block(cluster, versions)

    [command] = rollout
    assert README_PROMETHEUS in command and README_INTERVAL in command, command
    command = command.replace(README_PROMETHEUS, f"--prometheus {healthy_prometheus.url}")
    command = command.replace(README_INTERVAL, "--interval 1s")
    cluster.sh(command)

    assert cluster.split() == ("s3://models/resnet/3", "v3", None, 0)  # promoted (without waiting for Ready)
    state = json.loads(cluster.isvc()["metadata"]["annotations"]["maas.io/rollout-state"])
    assert (state["version"], state["steps"], state["phase"]) == ("v3", [10, 25, 50, 100], "succeeded")
    # every step was judged on the canary's pods only, with the default window
    assert len(healthy_prometheus.queries) == 8, healthy_prometheus.queries
    assert all('namespace="models",pod=~"resnet-predictor-canary-.*"' in q for q in healthy_prometheus.queries)
    assert all("[60s]" in q for q in healthy_prometheus.queries)
    entries = json.loads(cluster.sh("python scripts/controller.py history resnet -n models -o json"))
    steps = [(e["version"], e["outcome"], e["percent"]) for e in entries if e["command"] == "rollout"]
    assert steps == [*(("v3", "canary", p) for p in (10, 25, 50, 100)), ("v3", "promoted", 100)], steps


@pytest.mark.skipif(shutil.which("kubectl") is None, reason="kubectl is not installed")
def test_annotate_block_drives_the_run_loop(cluster: Cluster):
    """``kubectl annotate`` as written; then passes of ``run --once`` start the rollout it asks for."""
    versions, _, annotate = controller_blocks()
    cluster.sh(versions[0])  # the README's deploy: resnet at v1
    assert cluster.split() == ("s3://models/resnet/1", "v1", None, 0)

    [command] = annotate
    assert command.startswith("kubectl annotate isvc resnet -n models "), command
    cluster.sh(command)
    annotations = cluster.isvc()["metadata"]["annotations"]
    assert annotations["maas.io/rollout-storage-uri"] == "s3://models/resnet/3"
    assert annotations["maas.io/rollout-interval"] == "60s"

    cluster.sh(RUN_ONCE)  # one pass: step 1 of 4, without waiting for anything
    assert cluster.split() == ("s3://models/resnet/1", "v1", "s3://models/resnet/3", 10)
    state = json.loads(cluster.isvc()["metadata"]["annotations"]["maas.io/rollout-state"])
    assert (state["version"], state["steps"], state["step"], state["phase"]) == (
        "v3",
        [10, 25, 50, 100],
        0,
        "progressing",
    )

    for _ in range(4):  # later passes see the step Ready, then observe it for the annotated 60s
        if state["readyAt"] is not None:
            break
        cluster.sh(RUN_ONCE)
        state = json.loads(cluster.isvc()["metadata"]["annotations"]["maas.io/rollout-state"])
    assert state["readyAt"] is not None and state["step"] == 0
    assert cluster.split() == ("s3://models/resnet/1", "v1", "s3://models/resnet/3", 10)
