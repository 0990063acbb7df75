"""The `run` reconcile loop, driven by maas.io/rollout-* annotations."""

from __future__ import annotations

from dataclasses import replace

from controller_fakes.kserve import NS
from controller_fakes.kube_api import FakeApiServer
from controller_fakes.prometheus import FakePrometheus
from maas_controller.commands import Controller
from maas_controller.errors import ControllerError
from maas_controller.kube import Kube
from maas_controller.model import Mode
from maas_controller.prometheus import Prometheus
from maas_controller.reconcile import Reconciler
from maas_controller.rollout import RolloutPlan, Tick

DEFAULTS = RolloutPlan(storage_uri="s3://unused/default", interval=30.0, ready_timeout=300.0)


def request(kube: Kube, name: str, namespace: str = NS, **annotations: str) -> None:
    body = {"maas.io/rollout-" + k.replace("_", "-"): v for k, v in annotations.items()}
    kube.patch_isvc(namespace, name, {"metadata": {"annotations": body}})


def reconciler(ctl: Controller, namespace: str | None = NS, prometheus: str = "") -> Reconciler:
    return Reconciler(
        ctl.kube,
        replace(ctl.settings, namespace="ignored"),
        DEFAULTS,
        namespace,
        Prometheus(prometheus) if prometheus else None,
        ctl.clock,
        log=lambda message: None,
    )


def test_annotations_drive_a_rollout_to_the_end(ctl: Controller, deployed: str, mode: Mode, prometheus: FakePrometheus):
    prometheus.answer = lambda query: 0.0 if "total" in query else 50.0
    request(
        ctl.kube,
        "m",
        storage_uri="s3://models/m/2",
        version="v2",
        steps="20,100",
        interval="10s",
        max_error_rate="0.05",
        max_p99_ms="100",
    )
    loop = reconciler(ctl, prometheus=prometheus.url)
    seen: list[str] = []
    for _ in range(40):
        result = loop.reconcile_once()[(NS, "m")]
        assert isinstance(result, Tick)
        seen.append(result.message)
        if result.done:
            break
        ctl.clock.sleep(5.0)
    assert result.phase == "succeeded"
    assert any("step 1/2 (20%)" in m for m in seen) and any("step 2/2" in m for m in seen)
    assert ctl.status("m")["stable"]["version"] == "v2"
    # later passes leave it alone
    assert loop.reconcile_once()[(NS, "m")].phase == "succeeded"


def test_unannotated_services_are_ignored(api: FakeApiServer, ctl: Controller, deployed: str):
    writes = len(api.writes())
    assert reconciler(ctl).reconcile_once() == {}
    assert len(api.writes()) == writes


def test_bad_annotation_is_reported_as_event_and_loop_goes_on(api: FakeApiServer, ctl: Controller, deployed: str):
    ctl.deploy("other", "s3://models/o/1", model_format="maas-sequence")
    request(ctl.kube, "m", storage_uri="not a uri")
    request(ctl.kube, "other", storage_uri="s3://models/o/2", steps="100", interval="0s")
    results = reconciler(ctl).reconcile_once()
    assert isinstance(results[(NS, "m")], ControllerError)
    assert isinstance(results[(NS, "other")], Tick)
    events = [r.body for r in api.writes("/events")]
    assert any(e["type"] == "Warning" and "malformed storage URI" in e["message"] for e in events)


def test_all_namespaces_and_the_loop(ctl: Controller, make_controller, deployed: str):
    team = make_controller(namespace="team-b")
    team.deploy("n", "s3://models/n/1", model_format="maas-generative", mode=Mode.STANDARD)
    request(ctl.kube, "m", storage_uri="s3://models/m/2", steps="100", interval="0s")
    request(ctl.kube, "n", namespace="team-b", storage_uri="s3://models/n/2", steps="100", interval="0s")
    loop = reconciler(ctl, namespace=None)
    passes = iter(range(12))
    loop.run(1.0, should_stop=lambda: next(passes, None) is None)
    assert ctl.status("m")["stable"]["storageUri"] == "s3://models/m/2"
    assert team.status("n")["stable"]["storageUri"] == "s3://models/n/2"
