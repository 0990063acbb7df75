"""Fixtures of the observability tests: maas servers, a real Prometheus scraping them, and a load
whose every request the tests know.

The servers: ``digits-cnn`` (the reference CNN, fast), ``chaos`` (the CNN through ``ChaosNet``
sleeping ``CHAOS_DELAY`` per forward pass, one item per batch, a queue of one and a 150 ms queue
deadline: slow answers, 429 and 503 under a burst, 500 for a row starting with 777), ``loading``
(a model whose load never ends: every request 503, and no version in its maas.yaml),
``tiny-gpt`` (text generation, sent texts of exactly GEN_TOKENS tokens) and ``failing``
(``ChaosNet`` without delay, for the controller's rollback). A ``dead`` target points at a port nobody listens on.

``traffic`` primes every series, waits for a scrape, sends the measured load, waits for the next
scrape, and returns the calls with, per model, the two scrape timestamps around the load: a
query at the second with a range reaching just before the first sees exactly the measured calls.
"""

from __future__ import annotations

import shutil
import signal
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
import yaml

HERE = Path(__file__).resolve().parent
for folder in (HERE, HERE.parent / "controller", HERE.parent / "deploy"):
    if str(folder) not in sys.path:
        sys.path.insert(0, str(folder))

import helm_python  # noqa: E402
from deploy_support import Rendered, render_chart  # noqa: E402
from obs_support import (  # noqa: E402
    CHAOS_DELAY,
    CHAOS_QUEUE_WAIT,
    CHART,
    DEAD_POD,
    LIVE_ALERTS,
    NOT_INSTALLED,
    OBS,
    PODS,
    PROMETHEUS,
    PROMTOOL,
    ROLLOUT_NS,
    ROLLOUTS,
    SLOW,
    Prometheus,
    Record,
    Traffic,
    Window,
    address,
    burst,
    chaos_load,
    cnn_load,
    generation_load,
    in_parallel,
    loading_load,
    rollout_pods,
    rule_groups,
    send,
)

from tests.conftest import chaos_model  # noqa: E402
from tests.serving import Server, free_port, spawn  # noqa: E402

LOADER = '''
"""Test scaffolding: the digits CNN whose construction (inside the server's load) never ends."""
import time

from predictors.zoo import ConvClassifier


class NeverLoads(ConvClassifier):
    def __init__(self, **kwargs):
        time.sleep(3600)
        super().__init__(**kwargs)
'''


@pytest.fixture(scope="session")
def chart() -> Iterator[helm_python.Chart]:
    with helm_python.Chart.load(CHART) as loaded:
        yield loaded


@pytest.fixture(scope="session")
def render(chart: helm_python.Chart):
    def _render(values: dict | None = None, **kwargs: str) -> Rendered:
        return render_chart(chart, values, **kwargs)

    return _render


@pytest.fixture(scope="session")
def promtool() -> str:
    if not PROMTOOL:
        pytest.skip(NOT_INSTALLED)
    return PROMTOOL


def never_loading_model(models_dir: Path, target: Path) -> Path:
    shutil.copytree(models_dir / "digits-cnn", target)
    (target / "never_loads.py").write_text(LOADER)
    config = yaml.safe_load((target / "maas.yaml").read_text())
    config["name"] = "loading"
    config.pop("version", None)  # maas_model_info says "unknown"
    config["module"]["class"] = "never_loads.py:NeverLoads"
    config.setdefault("image", {})["runtime"] = "torch"
    (target / "maas.yaml").write_text(yaml.safe_dump(config))
    return target


@dataclass
class Fleet:
    servers: dict[str, Server]

    def __getitem__(self, name: str) -> Server:
        return self.servers[name]


@pytest.fixture(scope="session")
def fleet(models_dir: Path, log_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Fleet]:
    """The four servers, started together (each waits for the others' CPU anyway)."""
    if not PROMETHEUS:
        pytest.skip(NOT_INSTALLED)
    work = tmp_path_factory.mktemp("obs-models")
    chaos = chaos_model(models_dir, work / "chaos", CHAOS_DELAY)
    failing = chaos_model(models_dir, work / "failing", 0.0)
    plans: dict[str, tuple[Path, list[str]]] = {
        "digits-cnn": (models_dir / "digits-cnn", ["--max_batch_size", "64"]),
        "chaos": (
            chaos,
            ["--max_batch_size", "1", "--max_queue_size", "1", "--max_queue_wait_ms", str(CHAOS_QUEUE_WAIT * 1000)],
        ),
        "loading": (never_loading_model(models_dir, work / "loading"), []),
        "failing": (failing, ["--model_name", "failing"]),
        "tiny-gpt": (models_dir / "tiny-gpt", []),
    }
    servers: dict[str, Server] = {}
    try:
        for name, (model_dir, args) in plans.items():
            proc, http_port, grpc_port, log = spawn(model_dir, *args, log_dir=log_dir)
            servers[name] = Server(proc, name, http_port, grpc_port, log)
        deadline = time.monotonic() + 120
        for name, server in servers.items():
            path = "/metrics" if name == "loading" else f"/v2/models/{name}/ready"
            while True:
                if server.proc.poll() is not None:
                    raise RuntimeError(f"{name} exited with {server.proc.returncode}:\n{server.logs()[-4000:]}")
                try:
                    if server.client.get(path).status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                if time.monotonic() > deadline:
                    raise RuntimeError(f"{name} not up in time:\n{server.logs()[-4000:]}")
                time.sleep(0.1)
        yield Fleet(servers)
    finally:
        for name, server in servers.items():
            server.stop(signal.SIGKILL if name == "loading" else signal.SIGTERM)


@pytest.fixture(scope="session")
def live_rules(render, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The chart's alert rules (LIVE_ALERTS values, namespace obs) as a Prometheus rules file."""
    (rule,) = render({"alerts": LIVE_ALERTS}, namespace=OBS).of_kind("PrometheusRule")
    path = tmp_path_factory.mktemp("rules") / "maas-rules.yaml"
    path.write_text(yaml.safe_dump(rule_groups(rule), sort_keys=False))
    return path


@pytest.fixture(scope="session")
def prom(fleet: Fleet, live_rules: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Prometheus]:
    server = Prometheus(tmp_path_factory.mktemp("prometheus"), [live_rules]).start()
    try:
        for model, pod in PODS.items():
            server.add_target(address(fleet[model]), OBS, pod)
        server.add_target(f"127.0.0.1:{free_port()}", OBS, DEAD_POD)
        for name, (_, stable, canary) in ROLLOUTS.items():
            for pod, target in zip(rollout_pods(name), (stable, canary)):
                server.add_target(address(fleet[target]), ROLLOUT_NS, pod)
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def traffic(prom: Prometheus, fleet: Fleet) -> Traffic:
    started = time.time()
    for pod in PODS.values():
        prom.wait_for_scrape(pod, started - 60)
    # Priming: one request of every kind, so that every series exists before the measured load
    # (a series' first sample counts what came before it, and rate() cannot see that part).
    primed = Record()
    in_parallel(
        (cnn_load, primed, fleet["digits-cnn"], 1),
        (loading_load, primed, fleet["loading"], 1),
        (generation_load, primed, fleet["tiny-gpt"], 1),
    )
    send(primed, fleet["chaos"], "chaos", "v2", "ok", floors=SLOW)
    send(primed, fleet["chaos"], "chaos", "v2", "poison")
    for _ in range(5):
        burst(primed, fleet["chaos"])
        if {429, 503} <= {c.status for c in primed.of(model="chaos")}:
            break
    primed_at = time.time()
    firsts = {model: prom.wait_for_scrape(pod, primed_at) for model, pod in PODS.items()}

    measured = Record()
    in_parallel(
        (cnn_load, measured, fleet["digits-cnn"], 12),
        (chaos_load, measured, fleet["chaos"], 3),
        (loading_load, measured, fleet["loading"], 4),
        (generation_load, measured, fleet["tiny-gpt"], 6),
    )
    loaded_at = time.time()
    lasts = {model: prom.wait_for_scrape(pod, loaded_at) for model, pod in PODS.items()}

    kinds = {(c.model, c.protocol, c.status) for c in primed.calls}
    unprimed = {(c.model, c.protocol, c.status) for c in measured.calls} - kinds
    assert not unprimed, f"the measured load made series the priming did not: {unprimed}"
    assert {c.status for c in measured.calls} >= {200, 400, 429, 500, 503}, sorted({c.status for c in measured.calls})
    windows = {model: Window(firsts[model], lasts[model]) for model in PODS}
    return Traffic(measured.calls, primed.calls, windows)
