"""``scripts/controller.py rollout`` end to end against the real Prometheus: the Kubernetes API is
the fake one (controller_fakes), the canary's pods are real maas servers that Prometheus scrapes
under the names KServe gives them, and the load is sent by the test while the rollout runs.

A healthy canary is promoted step by step; a canary answering errors, or answering slower than
``--max-p99-ms``, is rolled back at its first step with exit code 7 and the failing gate named,
with the number the gate saw matching what the test sent.
"""

from __future__ import annotations

import io
import json
import re
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from controller_fakes.kserve import FakeKServe
from controller_fakes.kube_api import FakeApiServer, write_kubeconfig
from maas_controller.cli import main
from obs_support import (
    ROLLOUT_NS,
    ROLLOUTS,
    SLOW,
    Call,
    Prometheus,
    Record,
    edge_above,
    quantile_bounds,
    rollout_pods,
    send,
)

from tests.serving import ROOT

NS = ROLLOUT_NS
LAUNCHER = ROOT / "scripts" / "controller.py"
INTERVAL, WINDOW = "2s", "4s"


@pytest.fixture
def kubeconfig(tmp_path: Path) -> Iterator[str]:
    api = FakeApiServer().start()
    FakeKServe().install(api)
    yield write_kubeconfig(tmp_path / "kubeconfig", api.url)
    api.stop()


def ctl(kubeconfig: str, *argv: str) -> tuple[int, str, str]:
    """A controller command in this process (the rollouts themselves run as scripts)."""
    out, err = io.StringIO(), io.StringIO()
    code = main([*argv, "--kubeconfig", kubeconfig, "-n", NS, "--poll", "50ms"], out=out, err=err)
    return code, out.getvalue(), err.getvalue()


class Load:
    """Requests sent over and over in a thread until stopped, each recorded."""

    def __init__(self, step: Callable[[Record], object]) -> None:
        self.record = Record()
        self._stop = threading.Event()
        self._step = step
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            self._step(self.record)

    def __enter__(self) -> Load:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(30)


def rollout(kubeconfig: str, prom: Prometheus, name: str, max_p99_ms: int = 250) -> subprocess.CompletedProcess[str]:
    """The README's rollout command with short steps, run as a script."""
    return subprocess.run(
        [
            sys.executable,
            str(LAUNCHER),
            "rollout",
            name,
            "--storage-uri",
            f"s3://models/{name}/2",
            "--steps",
            "50,100",
            "--interval",
            INTERVAL,
            "--window",
            WINDOW,
            "--max-error-rate",
            "0.01",
            "--max-p99-ms",
            str(max_p99_ms),
            "--require-traffic",
            "--prometheus",
            prom.url,
            "--kubeconfig",
            kubeconfig,
            "-n",
            NS,
            "--poll",
            "100ms",
            "-o",
            "json",
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def stand_up(kubeconfig: str, name: str) -> str:
    """Deploy v1 of ``name``; returns the pod its canary will run as (scraped from the start:
    see obs_support.ROLLOUTS)."""
    mode = ROLLOUTS[name][0]
    code, _, err = ctl(
        kubeconfig,
        "deploy",
        name,
        "--storage-uri",
        f"s3://models/{name}/1",
        "--model-format",
        "maas-image",
        "--mode",
        mode,
    )
    assert code == 0, err
    return rollout_pods(name)[1]


def warm(prom: Prometheus, pod: str) -> None:
    """Two scrapes of the canary after its load began: rate() has something to work with."""
    prom.wait_for_scrape(pod, prom.wait_for_scrape(pod, time.time()))


def history(kubeconfig: str, name: str) -> list[dict]:
    code, out, err = ctl(kubeconfig, "history", name, "-o", "json")
    assert code == 0, err
    return json.loads(out)


def test_healthy_canary_is_promoted_step_by_step(kubeconfig: str, prom: Prometheus, fleet):
    good = fleet["digits-cnn"]
    canary_pod = stand_up(kubeconfig, "healthy")
    with Load(lambda r: send(r, good, "digits-cnn", "v2", "ok")) as load:
        warm(prom, canary_pod)
        result = rollout(kubeconfig, prom, "healthy")
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["phase"] == "succeeded"
    # each step was judged on Prometheus numbers, not waved through for lack of traffic
    judged = re.findall(r"healthy \(error rate (\d\.\d{4}), p99 (\d+)ms\)", result.stderr)
    assert len(judged) == 1 and "promoted v2: error rate" in result.stderr, result.stderr
    ceiling = edge_above(max(c.latency for c in load.record.calls)) * 1000
    for error_rate, p99 in [*judged, re.findall(r"promoted v2: error rate (\d\.\d{4}), p99 (\d+)ms", result.stderr)[0]]:
        assert float(error_rate) == 0.0 and 0 <= float(p99) <= ceiling  # (sub-ms rounds to 0ms)
    assert {c.status for c in load.record.calls} == {200}
    entries = history(kubeconfig, "healthy")
    assert [(e["outcome"], e["percent"]) for e in entries] == [
        ("rolled-out", 100),
        ("canary", 50),
        ("canary", 100),
        ("promoted", 100),
    ]


def test_canary_answering_errors_is_rolled_back(kubeconfig: str, prom: Prometheus, fleet):
    """Standard mode; the canary (NAME-predictor-canary) fails every other request with a 500."""
    stable, failing = fleet["digits-cnn"], fleet["failing"]
    canary_pod = stand_up(kubeconfig, "broken")
    flips = {"n": 0}

    def step(record: Record) -> None:
        flips["n"] += 1
        send(record, failing, "failing", "v2", "poison" if flips["n"] % 2 else "ok")
        send(Record(), stable, "digits-cnn", "v2", "ok")  # the stable version keeps serving

    with Load(step) as load:
        warm(prom, canary_pod)
        result = rollout(kubeconfig, prom, "broken")
    assert result.returncode == 7, result.stderr
    match = re.search(r"rolled back v2: step 1/2 \(50%\): error rate (\d\.\d{4}) > 0.01", result.stderr)
    assert match, result.stderr
    sent = load.record.calls
    assert abs(float(match[1]) - sum(c.status == 500 for c in sent) / len(sent)) < 0.1
    code, out, err = ctl(kubeconfig, "status", "broken", "-o", "json")
    assert code == 0, err
    status = json.loads(out)
    assert status["canary"] is None and status["stable"]["version"] == "v1"
    last = history(kubeconfig, "broken")[-1]
    assert (last["version"], last["outcome"], last["percent"]) == ("v2", "rolled-back", 0)
    assert "error rate" in last["detail"]


def test_canary_answering_slowly_is_rolled_back(kubeconfig: str, prom: Prometheus, fleet):
    """Knative mode; the canary revision's model sleeps CHAOS_DELAY per forward pass, over the
    200 ms p99 the rollout allows, and answers everything else right."""
    slow = fleet["chaos"]
    canary_pod = stand_up(kubeconfig, "sluggish")
    with Load(lambda r: send(r, slow, "chaos", "v2", "ok", floors=SLOW)) as load:
        warm(prom, canary_pod)
        result = rollout(kubeconfig, prom, "sluggish", max_p99_ms=200)
    assert result.returncode == 7, result.stderr
    match = re.search(r"rolled back v2: step 1/2 \(50%\): p99 (\d+)ms > 200ms", result.stderr)
    assert match, result.stderr
    sent: list[Call] = load.record.calls
    assert {c.status for c in sent} == {200}
    low, high = quantile_bounds(0.99, [c.floor for c in sent], [c.latency for c in sent], slack=1.5)
    assert low * 1000 <= float(match[1]) <= high * 1000
    last = history(kubeconfig, "sluggish")[-1]
    assert (last["outcome"], last["percent"]) == ("rolled-back", 0) and "p99" in last["detail"]
