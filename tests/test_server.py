"""Server behaviour: metrics, readiness only after load, storage URIs, clear start-up failures."""

from __future__ import annotations

import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import numpy as np
import pytest
import yaml

from tests.serving import ROOT, Server, spawn, start_server


def sample(text: str, name: str, **labels: str) -> float:
    """The value of one Prometheus sample, or 0 when absent."""
    for line in text.splitlines():
        if line.startswith(name + "{") and all(f'{k}="{v}"' in line for k, v in labels.items()):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


def test_metrics_count_requests_by_protocol_and_status(cnn_server: Server) -> None:
    x = np.zeros((3, 1, 8, 8), dtype=np.float32)
    before = cnn_server.metrics()
    assert cnn_server.v1({"instances": x.tolist()}).status_code == 200
    assert cnn_server.v2_tensor("input", x).status_code == 200
    cnn_server.grpc({"input": x})
    assert cnn_server.v2_tensor("input", x[:, :, :4]).status_code == 400
    after = cnn_server.metrics()
    for protocol, status in [("v1", "200"), ("v2", "200"), ("grpc", "200"), ("v2", "400")]:
        delta = sample(after, "maas_requests_total", model="digits-cnn", protocol=protocol, status=status) - sample(
            before, "maas_requests_total", model="digits-cnn", protocol=protocol, status=status
        )
        assert delta == 1, (protocol, status)
    for histogram in (
        "maas_batch_size",
        "maas_queue_time_seconds",
        "maas_forward_time_seconds",
        "maas_request_duration_seconds",
    ):
        assert sample(after, f"{histogram}_count", model="digits-cnn") > 0, histogram
    assert "request_predict_seconds" in after  # kserve's own metrics are still there


def test_unknown_model_requests_are_counted_without_new_labels(cnn_server: Server) -> None:
    assert cnn_server.client.post("/v2/models/xyz-123/infer", json={}).status_code == 404
    text = cnn_server.metrics()
    assert 'model="xyz-123"' not in text
    assert sample(text, "maas_requests_total", model="_unknown", protocol="v2", status="404") >= 1


SLOW_MODULE = """
import time
from predictors.zoo import ConvClassifier

class SlowNet(ConvClassifier):
    def __init__(self, delay: float, **kwargs):
        time.sleep(delay)
        super().__init__(**kwargs)
"""


def slow_copy(models_dir: Path, tmp_path: Path, delay: float) -> Path:
    model_dir = tmp_path / "slow"
    shutil.copytree(models_dir / "digits-cnn", model_dir)
    (model_dir / "model.py").write_text(SLOW_MODULE)
    config = yaml.safe_load((model_dir / "maas.yaml").read_text())
    config["module"]["class"] = "model.py:SlowNet"
    config["module"]["kwargs"]["delay"] = delay
    (model_dir / "maas.yaml").write_text(yaml.safe_dump(config))
    return model_dir


def test_live_while_loading_ready_only_after_load(models_dir: Path, tmp_path: Path) -> None:
    proc, http_port, _, _ = spawn(slow_copy(models_dir, tmp_path, 8.0), "--model_name", "slow", log_dir=tmp_path)
    url = f"http://127.0.0.1:{http_port}"
    seen_loading = False
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                live = httpx.get(f"{url}/v2/health/live", timeout=5)
                ready = httpx.get(f"{url}/v2/models/slow/ready", timeout=5)
            except httpx.TransportError:
                time.sleep(0.1)
                continue
            assert live.status_code == 200
            if ready.status_code == 200:
                break
            assert ready.status_code == 503
            infer = httpx.post(f"{url}/v2/models/slow/infer", json={"inputs": []}, timeout=5)
            if infer.status_code != 503:  # the load ended between the two calls: a ready model's 400
                assert infer.status_code == 400 and httpx.get(f"{url}/v2/models/slow/ready").status_code == 200
                break
            assert "not ready" in infer.json()["error"]
            seen_loading = True
            time.sleep(0.2)
        assert seen_loading, "the server should answer liveness while the model loads"
        assert httpx.get(f"{url}/v2/models/slow/ready").status_code == 200
        x = np.zeros((1, 1, 8, 8), dtype=np.float32)
        body = {"inputs": [{"name": "input", "datatype": "FP32", "shape": [1, 1, 8, 8], "data": x.ravel().tolist()}]}
        assert httpx.post(f"{url}/v2/models/slow/infer", json=body).status_code == 200
    finally:
        proc.terminate()
        proc.wait(30)


def test_storage_uri_file_scheme(models_dir: Path, log_dir: Path) -> None:
    server = start_server(f"file://{models_dir / 'digits-lstm'}", "digits-lstm", log_dir=log_dir)
    try:
        assert server.v1({"instances": [[[0.0] * 8] * 4]}).status_code == 200
    finally:
        assert server.stop() == 0


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "predictors", "--host", "127.0.0.1", "--http_port", "0", "--grpc_port", "0", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )


def broken_copy(models_dir: Path, tmp_path: Path, edit) -> Path:  # type: ignore[no-untyped-def]
    model_dir = tmp_path / "broken"
    shutil.copytree(models_dir / "digits-cnn", model_dir)
    edit(model_dir)
    return model_dir


def set_config(key: str, value):  # type: ignore[no-untyped-def]
    def edit(model_dir: Path) -> None:
        config = yaml.safe_load((model_dir / "maas.yaml").read_text())
        target = config
        *parents, last = key.split(".")
        for part in parents:
            target = target[part]
        target[last] = value
        (model_dir / "maas.yaml").write_text(yaml.safe_dump(config))

    return edit


@pytest.mark.parametrize(
    ("edit", "code", "says"),
    [
        (lambda d: shutil.rmtree(d), 2, "does not exist"),
        (lambda d: (d / "maas.yaml").unlink(), 2, "has no model config"),
        (lambda d: (d / "maas.yaml").write_text("family: [unclosed"), 2, "cannot parse"),
        (set_config("family", "audio"), 2, "unknown model family 'audio'"),
        (lambda d: (d / "weights.pt").write_bytes(b"garbage"), 1, "corrupt"),
        (lambda d: (d / "weights.pt").unlink(), 1, "weights file"),
        (set_config("module.kwargs.hidden", 64), 1, "does not match its weights"),
        (set_config("module.class", "predictors.zoo:NoSuchNet"), 1, "cannot load module class"),
        (set_config("inputs", [{"name": "input", "datatype": "FP32", "shape": [-1, 3, 8, 8]}]), 1, "channels"),
    ],
    ids=[
        "missing-dir",
        "no-config",
        "bad-yaml",
        "unknown-family",
        "corrupt-weights",
        "no-weights",
        "config-weights-mismatch",
        "unknown-class",
        "channels-mismatch",
    ],
)
def test_broken_model_directory_fails_at_start(models_dir: Path, tmp_path: Path, edit, code: int, says: str) -> None:
    result = run_cli("--model_dir", str(broken_copy(models_dir, tmp_path, edit)))
    assert result.returncode == code, result.stderr[-3000:]
    assert says in result.stderr, result.stderr[-3000:]


@pytest.mark.parametrize(
    ("args", "code", "says"),
    [
        (["--max_batch_size", "0"], 2, "--max_batch_size"),
        (["--device", "tpu"], 2, "--device"),
        (["--dtype", "float16", "--device", "cpu"], 1, "needs CUDA"),
        (["--family", "nonsense"], 2, "unknown model family"),
        (["--workers", "2"], 2, "--workers must be 1"),
    ],
    ids=["batch-size", "device", "fp16-on-cpu", "family", "workers"],
)
def test_bad_settings_fail_at_start(models_dir: Path, args: list[str], code: int, says: str) -> None:
    result = run_cli("--model_dir", str(models_dir / "digits-cnn"), *args)
    assert result.returncode == code, result.stderr[-3000:]
    assert says in result.stderr


def test_import_is_cheap() -> None:
    code = (
        "import sys, predictors, predictors.settings, predictors.config;"
        "print(sorted(m for m in ('torch', 'kserve', 'transformers') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_help_lists_maas_and_kserve_flags() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "predictors", "--help"], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout
    for flag in (
        "--model_dir",
        "--max_batch_size",
        "--max_batch_delay_ms",
        "--device",
        "--http_port",
        "--grpc_port",
        "--workers",
        "--enable_grpc",
    ):
        assert re.search(rf"\s{flag}\b", out), flag


def test_v2_inference_names_its_version_in_the_path_or_the_query(cnn_server: Server) -> None:
    body = {"inputs": [{"name": "input", "datatype": "FP32", "shape": [1, 1, 8, 8], "data": [0.0] * 64}]}
    base = f"/v2/models/{cnn_server.name}"
    answer = cnn_server.client.post(f"{base}/versions/1/infer", json=body)
    assert answer.status_code == 200 and answer.json()["model_name"] == cnn_server.name
    for path in (f"{base}/versions/7/infer", f"{base}/infer?model_version=7"):
        wrong = cnn_server.client.post(path, json=body)
        assert wrong.status_code == 404, wrong.text
        assert "no version '7'" in wrong.json()["error"]
    assert cnn_server.client.get(f"{base}/versions/1").json()["versions"] == ["1"]
    assert cnn_server.client.get(f"{base}/infer").status_code == 405  # only POST infers


def test_a_streamed_body_over_the_limit_is_refused_while_it_arrives(cnn_server: Server) -> None:
    """No content-length to check up front (chunked): the limit holds as the body is read."""

    def chunks():  # type: ignore[no-untyped-def]
        for _ in range(9):  # the fixture's limit is 8 MiB
            yield b"0" * (1 << 20)

    for path in (f"/v2/models/{cnn_server.name}/infer", f"/v1/models/{cnn_server.name}:predict"):
        answer = cnn_server.client.post(path, content=chunks(), headers={"content-type": "application/json"})
        assert answer.status_code == 413, answer.text
        assert "over the limit" in answer.json()["error"]
    assert cnn_server.client.get("/v2/health/ready").status_code == 200
    assert cnn_server.v2_tensor("input", np.zeros((1, 1, 8, 8), dtype=np.float32)).status_code == 200


def test_the_loaded_heap_is_frozen_once_the_model_is_ready(cnn_server: Server) -> None:
    found = re.search(r"froze (\d+) loaded objects", cnn_server.logs())
    assert found and int(found.group(1)) > 50_000, cnn_server.logs()[-2000:]


def test_readiness_gauges_follow_the_readiness_endpoints(models_dir: Path, tmp_path: Path) -> None:
    """``maas_model_ready`` says what ``/v2/models/NAME/ready`` says: 0 while loading, 1 once
    ready, 0 as soon as SIGTERM starts the drain (while /metrics is still served); and
    ``maas_model_info`` carries the version from maas.yaml and the family from the start."""
    proc, http_port, _, _ = spawn(
        slow_copy(models_dir, tmp_path, 3.0), "--model_name", "slow", "--drain_delay_s", "3", log_dir=tmp_path
    )
    url = f"http://127.0.0.1:{http_port}"

    def state() -> tuple[int, float, str]:
        # the gauge first: it turns 1 after the model's ready flag and 0 after the drain flag, so
        # a gauge of 1 while loading, or of 0 while draining, must be seen by the endpoint too
        text = httpx.get(f"{url}/metrics", timeout=5).text
        ready = httpx.get(f"{url}/v2/models/slow/ready", timeout=5).status_code
        return ready, sample(text, "maas_model_ready", model="slow"), text

    try:
        seen: set[tuple[int, float]] = set()
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                ready, gauge, text = state()
            except httpx.TransportError:
                time.sleep(0.1)
                continue
            assert sample(text, "maas_model_info", model="slow", version="1", family="image") == 1
            if ready == 200 and gauge == 0:  # the load ended between the two calls
                continue
            seen.add((ready, gauge))
            if ready == 200:
                break
            time.sleep(0.2)
        assert seen == {(503, 0.0), (200, 1.0)}, seen
        proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + 2.5  # inside the drain delay: still answering
        while time.monotonic() < deadline:
            ready, gauge, _ = state()
            if gauge == 0:
                assert ready == 503
                break
            time.sleep(0.05)  # the signal not handled yet, or handled between the two calls
        else:
            raise AssertionError("the model stayed ready after SIGTERM")
        assert httpx.get(f"{url}/v2/health/ready", timeout=5).status_code == 503
        assert proc.wait(30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(30)
