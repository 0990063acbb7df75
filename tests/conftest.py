"""Shared fixtures: reference models trained once per run, servers started once per module."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from tests.serving import ROOT, Server, start_server


def reference_models_dir() -> Path:
    """Where the tests' reference models live: ``MAAS_TEST_MODELS``, else the checkout's ``.models``
    (the folder ``scripts/quickstart.sh serve`` builds into)."""
    return Path(os.environ.get("MAAS_TEST_MODELS") or ROOT / ".models").resolve()


def pytest_collection_finish(session: pytest.Session) -> None:
    """Build the reference models once, before any test runs and outside every per-test timeout,
    when a collected test needs them. The script rebuilds only the models whose code changed."""
    if session.config.option.collectonly or not any("models_dir" in item.fixturenames for item in session.items):
        return
    out = reference_models_dir()
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    if reporter is not None:
        reporter.write_line(f"reference models: scripts/reference_models.py --out {out}")
    build = subprocess.run(
        [sys.executable, "scripts/reference_models.py", "--out", str(out)],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    if reporter is not None:
        for line in build.stdout.splitlines():
            reporter.write_line(f"  {line}")
    if build.returncode != 0:
        pytest.exit(f"building the reference models into {out} failed:\n{build.stdout}{build.stderr}", returncode=3)


@pytest.fixture(scope="session")
def models_dir() -> Path:
    """The reference models, built before the session's first test (``pytest_collection_finish``)."""
    return reference_models_dir()


@pytest.fixture(scope="session")
def log_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("logs")


@pytest.fixture(scope="session")
def cnn_server(models_dir: Path, log_dir: Path) -> Iterator[Server]:
    server = start_server(
        models_dir / "digits-cnn",
        "digits-cnn",
        "--max_batch_size",
        "64",
        "--max_request_mb",
        "8",
        "--max_tensor_elements",
        "1000000",
        log_dir=log_dir,
    )
    yield server
    server.stop()


@pytest.fixture(scope="session")
def lstm_server(models_dir: Path, log_dir: Path) -> Iterator[Server]:
    server = start_server(models_dir / "digits-lstm", "digits-lstm", "--max_batch_size", "64", log_dir=log_dir)
    yield server
    server.stop()


@pytest.fixture(scope="session")
def cnn_heldout(models_dir: Path) -> tuple[np.ndarray, np.ndarray]:
    data = np.load(models_dir / "digits-cnn" / "heldout.npz")
    return data["x"], data["y"]


@pytest.fixture(scope="session")
def lstm_heldout(models_dir: Path) -> tuple[np.ndarray, np.ndarray]:
    data = np.load(models_dir / "digits-lstm" / "heldout.npz")
    return data["x"], data["y"]


CHAOS_MODULE = '''
"""Test scaffolding: the digits CNN with an injectable delay per forward pass, which raises a
simulated out-of-memory error for any batch holding a row whose first pixel is 777, or more
than ``max_rows`` rows (0: any number)."""
import time

from predictors.zoo import ConvClassifier


class ChaosNet(ConvClassifier):
    def __init__(self, delay: float = 0.0, max_rows: int = 0, **kwargs):
        super().__init__(**kwargs)
        self.delay = delay
        self.max_rows = max_rows

    def forward(self, x):
        if bool((x[:, 0, 0, 0] == 777).any()) or 0 < self.max_rows < len(x):
            raise MemoryError("CUDA out of memory (simulated)")
        time.sleep(self.delay)
        return super().forward(x)
'''


def chaos_model(models_dir: Path, target: Path, delay: float, max_rows: int = 0) -> Path:
    """A copy of the digits CNN served through ``ChaosNet`` (same weights, same answers)."""
    import shutil

    import yaml

    shutil.copytree(models_dir / "digits-cnn", target)
    (target / "chaos.py").write_text(CHAOS_MODULE)
    config = yaml.safe_load((target / "maas.yaml").read_text())
    config["name"] = "chaos"
    config["module"]["class"] = "chaos.py:ChaosNet"
    config["module"]["kwargs"]["delay"] = delay
    config["module"]["kwargs"]["max_rows"] = max_rows
    config.setdefault("image", {})["runtime"] = "torch"  # its faults are Python: a traced graph drops them
    (target / "maas.yaml").write_text(yaml.safe_dump(config))
    return target


OFFLINE = {"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
RUNTIMES = ["torch", "onnxruntime"]  # image models and the transformer encoder tasks are served on both


def serve(model_dir: Path, name: str, log_dir: Path, *args: str) -> Iterator[Server]:
    env = {**OFFLINE, "MAAS_CACHE_DIR": str(log_dir / "cache")}  # ONNX exports stay inside the test run
    server = start_server(model_dir, name, "--max_batch_size", "64", *args, log_dir=log_dir, env=env)
    yield server
    server.stop()


def with_runtime(model_dir: Path, runtime: str, out: Path) -> Path:
    """``model_dir`` served on ``runtime``: its files linked, ``image.runtime`` or
    ``transformer.runtime`` set in maas.yaml."""
    import yaml

    config = yaml.safe_load((model_dir / "maas.yaml").read_text())
    section = "image" if config.get("family") == "image" else "transformer"
    if (config.get(section) or {}).get("runtime", "torch") == runtime:
        return model_dir
    target = out / f"{model_dir.name}-{runtime}"
    target.mkdir(parents=True)
    for file in model_dir.iterdir():
        if file.name != "maas.yaml":
            (target / file.name).symlink_to(file.resolve())
    config.setdefault(section, {})["runtime"] = runtime
    (target / "maas.yaml").write_text(yaml.safe_dump(config))
    return target


@pytest.fixture(scope="session", params=RUNTIMES)
def minilm_server(request: pytest.FixtureRequest, models_dir: Path) -> Iterator[Server]:
    yield from serve_on_runtime(request, models_dir / "minilm", "minilm")


@pytest.fixture(scope="session")
def gpt_server(models_dir: Path, log_dir: Path) -> Iterator[Server]:
    yield from serve(models_dir / "tiny-gpt", "tiny-gpt", log_dir)


@pytest.fixture(scope="session")
def vae_server(models_dir: Path, log_dir: Path) -> Iterator[Server]:
    yield from serve(models_dir / "digits-vae", "digits-vae", log_dir, "--max_tensor_elements", "1000000")


@pytest.fixture(scope="session")
def gan_server(models_dir: Path, log_dir: Path) -> Iterator[Server]:
    yield from serve(models_dir / "digits-gan", "digits-gan", log_dir)


@pytest.fixture(scope="session")
def tiny_bert_dirs(models_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Untrained tiny BERT classifiers (sequence and token) with MiniLM's tokenizer, as model directories."""
    from tests.tiny_bert import tiny_bert_dirs as build

    return build(models_dir / "minilm", tmp_path_factory.mktemp("bert"))


def serve_on_runtime(request: pytest.FixtureRequest, model_dir: Path, name: str) -> Iterator[Server]:
    """``model_dir`` served on the runtime the fixture is parametrized with."""
    out = request.getfixturevalue("tmp_path_factory").mktemp("runtime")
    yield from serve(with_runtime(model_dir, request.param, out), name, request.getfixturevalue("log_dir"))


@pytest.fixture(scope="session", params=RUNTIMES)
def image_server(request: pytest.FixtureRequest, models_dir: Path) -> Iterator[Server]:
    """The digits CNN on each runtime (``cnn_server`` serves its reference config, for the rest)."""
    yield from serve_on_runtime(request, models_dir / "digits-cnn", "digits-cnn")


@pytest.fixture(scope="session", params=RUNTIMES)
def seqcls_server(request: pytest.FixtureRequest, tiny_bert_dirs: dict[str, Path]) -> Iterator[Server]:
    yield from serve_on_runtime(request, tiny_bert_dirs["sequence"], "sentiment")


@pytest.fixture(scope="session", params=RUNTIMES)
def tokcls_server(request: pytest.FixtureRequest, tiny_bert_dirs: dict[str, Path]) -> Iterator[Server]:
    yield from serve_on_runtime(request, tiny_bert_dirs["token"], "entities")
