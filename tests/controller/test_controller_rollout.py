"""Progressive rollout: healthy steps, automatic rollback, resume after an interruption."""

from __future__ import annotations

import json
from collections.abc import Callable

import pytest
from controller_fakes.kserve import ISVC, NS, FakeKServe
from controller_fakes.kube_api import FakeApiServer
from controller_fakes.prometheus import FakePrometheus
from maas_controller.commands import Controller
from maas_controller.errors import RolledBack, ValidationError
from maas_controller.model import ANN_ROLLOUT_STATE, Mode
from maas_controller.prometheus import Prometheus, Thresholds, queries
from maas_controller.rollout import Rollout, RolloutPlan, Tick


def healthy(query: str) -> float | None:
    return 0.001 if "maas_requests_total" in query else 120.0


def plan(**overrides: object) -> RolloutPlan:
    values: dict = {
        "storage_uri": "s3://models/m/2",
        "steps": (10, 50, 100),
        "interval": 60.0,
        "thresholds": Thresholds(0.01, 250.0),
        "ready_timeout": 120.0,
    }
    values.update(overrides)
    return RolloutPlan(**values)


def percents(api: FakeApiServer, ctl: Controller) -> list[int]:
    return [e["percent"] for e in ctl.history("m") if e["command"] == "rollout"]


def test_healthy_rollout_promotes(
    api: FakeApiServer, ctl: Controller, deployed: str, prometheus: FakePrometheus, mode: Mode
):
    prometheus.answer = healthy
    ticks: list[Tick] = []
    rollout = Rollout(ctl, Prometheus(prometheus.url))
    final = rollout.run("m", plan(), poll=5.0, report=ticks.append)
    assert final.phase == "succeeded"
    assert ctl.status("m")["stable"] == {"version": "v2", "storageUri": "s3://models/m/2", "percent": 100}
    assert [e["outcome"] for e in ctl.history("m")] == ["rolled-out", "canary", "canary", "canary", "promoted"]
    assert percents(api, ctl) == [10, 50, 100, 100]
    assert any("observing" in t.message for t in ticks)
    # every step was judged only after `interval` of Ready time
    assert len([q for q in prometheus.queries if "histogram_quantile" in q]) == 3
    target = "m-predictor-00002" if mode is Mode.KNATIVE else "m-predictor-canary"
    assert f'pod=~"{target}-.*"' in prometheus.queries[0]
    assert f'namespace="{NS}"' in prometheus.queries[0]
    # finished rollouts are no-ops when run again
    assert rollout.tick("m", plan()).phase == "succeeded"


@pytest.mark.parametrize("bad", ["errors", "latency"])
def test_unhealthy_canary_is_rolled_back(
    api: FakeApiServer, ctl: Controller, deployed: str, prometheus: FakePrometheus, bad: str
):
    def answer(query: str) -> float | None:
        if "maas_requests_total" in query:
            return 0.2 if bad == "errors" else 0.0
        return 900.0 if bad == "latency" else 10.0

    prometheus.answer = answer
    with pytest.raises(RolledBack, match=r"error rate 0.2000 > 0.01|p99 900ms > 250ms") as info:
        Rollout(ctl, Prometheus(prometheus.url)).run("m", plan(), poll=5.0)
    assert info.value.exit_code == 7
    status = ctl.status("m")
    assert status["canary"] is None and status["stable"]["version"] == "v1"
    last = ctl.history("m")[-1]
    assert (last["version"], last["outcome"], last["percent"]) == ("v2", "rolled-back", 0)
    assert "step 1/3" in last["detail"]
    state = json.loads(api.get(ISVC, NS, "m")["metadata"]["annotations"][ANN_ROLLOUT_STATE])
    assert state["phase"] == "rolled-back"


def test_canary_never_ready_is_rolled_back(kserve: FakeKServe, ctl: Controller, deployed: str):
    kserve.broken_uris.add("s3://models/m/2")
    with pytest.raises(RolledBack, match="not Ready after 120s"):
        Rollout(ctl).run("m", plan(), poll=10.0)
    assert ctl.status("m")["stable"]["storageUri"] == "s3://models/m/1"


def test_interrupted_rollout_resumes(
    api: FakeApiServer, make_controller: Callable[..., Controller], clock, deployed: str, prometheus: FakePrometheus
):
    prometheus.answer = healthy
    ctl = make_controller()
    real_sleep = clock.sleep
    calls = {"n": 0}

    def interrupt_in_step_two(seconds: float) -> None:
        state = api.get(ISVC, NS, "m")["metadata"]["annotations"].get(ANN_ROLLOUT_STATE, "{}")
        if json.loads(state).get("step") == 1:
            raise KeyboardInterrupt
        calls["n"] += 1
        real_sleep(seconds)

    clock.sleep = interrupt_in_step_two
    with pytest.raises(KeyboardInterrupt):
        Rollout(ctl, Prometheus(prometheus.url)).run("m", plan(), poll=5.0)
    assert ctl.status("m")["canary"]["percent"] == 50

    clock.sleep = real_sleep  # a new process, the same command
    ticks: list[Tick] = []
    final = Rollout(make_controller(), Prometheus(prometheus.url)).run("m", plan(), poll=5.0, report=ticks.append)
    assert final.phase == "succeeded"
    assert "step 2/3" in ticks[0].message  # it did not start over
    assert percents(api, ctl) == [10, 50, 100, 100]


def test_manual_rollback_cancels_a_rollout(ctl: Controller, deployed: str):
    rollout = Rollout(ctl)
    rollout.tick("m", plan())
    ctl.rollback("m")
    tick = rollout.tick("m", plan())  # as the run loop does: it leaves the user's choice alone
    assert (tick.phase, tick.done) == ("cancelled", True)
    assert ctl.status("m")["canary"] is None
    assert rollout.tick("m", plan(), restart_failed=True).message.startswith("started")


def test_rollout_continues_a_manual_canary(ctl: Controller, deployed: str):
    ctl.canary("m", "s3://models/m/2", 30)
    tick = Rollout(ctl).tick("m", plan())
    assert "step 2/3 (50%)" in tick.message


def test_no_traffic_policy(prometheus: FakePrometheus):
    prometheus.answer = lambda query: None
    health = Prometheus(prometheus.url).health("x", "1m")
    assert Thresholds().judge(health)[0]
    assert not Thresholds(require_traffic=True).judge(health)[0]


def test_queries_select_canary_and_count_5xx():
    error_rate, p99 = queries('pod=~"r-.*"', "2m")
    assert error_rate == (
        '(sum(rate(maas_requests_total{pod=~"r-.*",status=~"5.."}[2m])) or vector(0)) / '
        'sum(rate(maas_requests_total{pod=~"r-.*"}[2m]))'
    )
    assert p99 == (
        'histogram_quantile(0.99, sum by (le) (rate(maas_request_duration_seconds_bucket{pod=~"r-.*"}[2m]))) * 1000'
    )


@pytest.mark.parametrize(
    "bad",
    [
        {"steps": (10, 50)},
        {"steps": (50, 10, 100)},
        {"storage_uri": "nope"},
        {"selector": "{unknown}"},
        {"thresholds": Thresholds(2.0, 250.0)},
    ],
)
def test_plan_validation(bad: dict):
    with pytest.raises(ValidationError):
        plan(**bad)
