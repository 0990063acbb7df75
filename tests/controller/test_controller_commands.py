"""deploy, canary, promote, rollback, status, history in both deployment modes."""

from __future__ import annotations

import pytest
from controller_fakes.kserve import CONFIGMAPS, ISVC, NS, FakeKServe
from controller_fakes.kube_api import FakeApiServer
from maas_controller.commands import Controller
from maas_controller.errors import Conflict, NotFound, ValidationError, WaitTimeout
from maas_controller.model import Mode


def spec(api: FakeApiServer, name: str = "m") -> dict:
    return api.get(ISVC, NS, name)


def outcomes(ctl: Controller, name: str = "m") -> list[tuple[str, str, str]]:
    return [(e["command"], e["version"], e["outcome"]) for e in ctl.history(name)]


def test_deploy_creates_and_waits_for_ready(api: FakeApiServer, ctl: Controller, mode: Mode):
    result = ctl.deploy("m", "s3://models/m/1", model_format="maas-image", mode=mode)
    assert result.changed and result.traffic == {"v1": 100}
    obj = spec(api)
    assert obj["spec"]["predictor"]["model"] == {"modelFormat": {"name": "maas-image"}, "storageUri": "s3://models/m/1"}
    assert obj["metadata"]["annotations"]["maas.io/version"] == "v1"
    assert obj["status"]["observedGeneration"] == obj["metadata"]["generation"]
    cm = api.get(CONFIGMAPS, NS, "m-maas-history")
    assert cm["metadata"]["ownerReferences"][0]["uid"] == obj["metadata"]["uid"]
    assert outcomes(ctl) == [("deploy", "v1", "rolled-out")]
    status = ctl.status("m")
    assert status["ready"] and status["mode"] == mode.value
    assert status["stable"] == {"version": "v1", "storageUri": "s3://models/m/1", "percent": 100}
    assert sum(t["percent"] for t in status["traffic"]) == 100


def test_deploy_needs_model_format_to_create(api: FakeApiServer, ctl: Controller):
    with pytest.raises(NotFound, match="--model-format"):
        ctl.deploy("m", "s3://models/m/1")
    assert api.writes() == []


def test_canary_promote(api: FakeApiServer, ctl: Controller, deployed: str, mode: Mode):
    result = ctl.canary("m", "s3://models/m/2", 10)
    assert result.traffic == {"v1": 90, "v2": 10}
    obj = spec(api)
    if mode is Mode.KNATIVE:
        assert obj["spec"]["predictor"]["canaryTrafficPercent"] == 10
        assert obj["spec"]["predictor"]["model"]["storageUri"] == "s3://models/m/2"
        assert obj["metadata"]["annotations"]["maas.io/stable-storage-uri"] == "s3://models/m/1"
        traffic = obj["status"]["components"]["predictor"]["traffic"]
        assert {t["tag"]: t["percent"] for t in traffic} == {"latest": 10, "prev": 90}
    else:
        assert "canaryTrafficPercent" not in obj["spec"]["predictor"]
        assert obj["spec"]["predictor"]["model"]["storageUri"] == "s3://models/m/1"
        [canary] = obj["spec"]["canary"]
        assert canary["trafficPercent"] == 10
        assert canary["predictor"]["model"] == {"modelFormat": {"name": "maas-image"}, "storageUri": "s3://models/m/2"}
        assert obj["status"]["canaryStatuses"][0]["trafficPercent"] == 10
    assert ctl.canary("m", "s3://models/m/2", 25).traffic == {"v1": 75, "v2": 25}
    status = ctl.status("m")
    assert status["canary"] == {"version": "v2", "storageUri": "s3://models/m/2", "percent": 25}

    assert ctl.promote("m").traffic == {"v2": 100}
    obj = spec(api)
    assert obj["spec"]["predictor"]["model"]["storageUri"] == "s3://models/m/2"
    assert "canaryTrafficPercent" not in obj["spec"]["predictor"]
    assert "canary" not in obj["spec"]
    assert obj["metadata"]["annotations"]["maas.io/version"] == "v2"
    assert "maas.io/canary-version" not in obj["metadata"]["annotations"]
    assert outcomes(ctl) == [
        ("deploy", "v1", "rolled-out"),
        ("canary", "v2", "canary"),
        ("canary", "v2", "canary"),
        ("promote", "v2", "promoted"),
    ]


def test_rerunning_commands_is_a_no_op(api: FakeApiServer, ctl: Controller, deployed: str):
    ctl.canary("m", "s3://models/m/2", 10, version="v2")
    before = len(api.writes("/inferenceservices/m"))
    again = ctl.canary("m", "s3://models/m/2", 10, version="v2")
    assert not again.changed and again.traffic == {"v1": 90, "v2": 10}
    ctl.promote("m")
    writes = len(api.writes("/inferenceservices/m"))
    assert writes == before + 1
    assert not ctl.promote("m").changed
    assert not ctl.deploy("m", "s3://models/m/2").changed
    assert len(api.writes("/inferenceservices/m")) == writes
    assert len(ctl.history("m")) == 3


def test_rollback_abandons_canary(api: FakeApiServer, ctl: Controller, deployed: str):
    ctl.canary("m", "s3://models/m/2", 30)
    assert ctl.rollback("m").traffic == {"v1": 100}
    obj = spec(api)
    assert obj["spec"]["predictor"]["model"]["storageUri"] == "s3://models/m/1"
    assert "canary" not in obj["spec"] and "canaryTrafficPercent" not in obj["spec"]["predictor"]
    assert outcomes(ctl)[-1] == ("rollback", "v2", "rolled-back")
    assert ctl.status("m")["canary"] is None


def test_rollback_to_any_version(api: FakeApiServer, ctl: Controller, deployed: str):
    ctl.deploy("m", "s3://models/m/2")
    ctl.deploy("m", "s3://models/m/3", version="v3-beta")
    assert ctl.rollback("m").traffic == {"v2": 100}  # the previous one
    assert ctl.rollback("m", to="v1").traffic == {"v1": 100}  # older than the previous one
    assert spec(api)["spec"]["predictor"]["model"]["storageUri"] == "s3://models/m/1"
    assert not ctl.rollback("m", to="v1").changed
    assert ctl.rollback("m", to="v3-beta").traffic == {"v3-beta": 100}
    assert [o for _, _, o in outcomes(ctl)][-3:] == ["restored"] * 3


def test_unknown_version_and_bad_arguments_touch_nothing(api: FakeApiServer, ctl: Controller, deployed: str):
    writes = len(api.writes())
    with pytest.raises(ValidationError, match="unknown version 'v9'"):
        ctl.rollback("m", to="v9")
    with pytest.raises(ValidationError, match="percent"):
        ctl.canary("m", "s3://models/m/2", 101)
    with pytest.raises(ValidationError, match="percent"):
        ctl.canary("m", "s3://models/m/2", -1)
    with pytest.raises(ValidationError, match="malformed storage URI"):
        ctl.canary("m", "models/m/2", 10)
    with pytest.raises(ValidationError, match="malformed storage URI"):
        ctl.deploy("m", "ftp://x/y")
    with pytest.raises(ValidationError, match="already names"):
        ctl.deploy("m", "s3://models/m/2", version="v1")
    with pytest.raises(ValidationError, match="no earlier version"):
        ctl.rollback("m")
    assert len(api.writes()) == writes


def test_second_canary_conflicts(ctl: Controller, deployed: str):
    ctl.canary("m", "s3://models/m/2", 10)
    with pytest.raises(Conflict, match="canary v2 is in progress"):
        ctl.canary("m", "s3://models/m/3", 10)


def test_missing_isvc_is_not_found(ctl: Controller):
    with pytest.raises(NotFound) as info:
        ctl.promote("ghost")
    assert info.value.status == 404


def test_conflicting_patch_is_retried_after_reread(api: FakeApiServer, ctl: Controller, deployed: str):
    api.fail_next("PATCH", "/inferenceservices/m", code=409, times=2)
    assert ctl.canary("m", "s3://models/m/2", 10).traffic == {"v1": 90, "v2": 10}
    patches = [r for r in api.writes("/inferenceservices/m") if r.method == "PATCH"]
    assert len(patches) == 3
    assert all(p.body["metadata"]["resourceVersion"] for p in patches)


def test_stale_resource_version_is_a_real_conflict(api: FakeApiServer, ctl: Controller, deployed: str):
    """A concurrent write between our read and our patch makes the server answer 409."""
    original = ctl.kube.patch_isvc
    raced = []

    def racing_patch(namespace: str, name: str, patch: dict) -> dict:
        if not raced:  # someone else edits the object first
            raced.append(original(namespace, name, {"metadata": {"labels": {"team": "x"}}}))
        return original(namespace, name, patch)

    ctl.kube.patch_isvc = racing_patch  # type: ignore[method-assign]
    ctl.canary("m", "s3://models/m/2", 10)
    assert spec(api)["metadata"]["labels"] == {"team": "x"}
    assert spec(api)["metadata"]["annotations"]["maas.io/canary-version"] == "v2"


def test_422_keeps_its_type(api: FakeApiServer, ctl: Controller, deployed: str):
    from maas_controller.errors import Invalid

    api.fail_next("PATCH", "/inferenceservices/m", code=422)
    with pytest.raises(Invalid) as info:
        ctl.canary("m", "s3://models/m/2", 10)
    assert info.value.status == 422


def test_wait_times_out_with_a_clear_message(kserve: FakeKServe, ctl: Controller, deployed: str):
    kserve.broken_uris.add("s3://models/m/bad")
    with pytest.raises(WaitTimeout, match=r"timed out after 30s .* Ready"):
        ctl.canary("m", "s3://models/m/bad", 10)
    assert outcomes(ctl)[-1] == ("canary", "v2", "timed-out")
