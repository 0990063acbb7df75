"""What the server writes to its log: no deprecation warnings, no access log unless asked for
(``--access_log``), and readiness changes said once rather than a line per refused request."""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest

from tests.serving import Server, spawn, start_server
from tests.test_server import slow_copy

X = np.zeros((1, 1, 8, 8), dtype=np.float32)
V2_BODY = {"inputs": [{"name": "input", "datatype": "FP32", "shape": [1, 1, 8, 8], "data": [0.0] * 64}]}
ACCESS_LINE = re.compile(r'"(GET|POST) (\S+) HTTP/1\.1" \d{3}')


@pytest.fixture(scope="module")
def quiet_server(models_dir: Path, log_dir: Path) -> Iterator[Server]:
    """A fresh server with the default settings (FastAPI warns once per route and process)."""
    server = start_server(models_dir / "digits-cnn", "digits-cnn", log_dir=log_dir)
    yield server
    server.stop()


def call_every_kind_of_route(server: Server) -> None:
    """V1 and V2 inference (JSON and binary), metadata, readiness, a 404 and a 400 of each kind."""
    base = f"/v2/models/{server.name}"
    calls = [
        (server.v1({"instances": X.tolist()}), 200),
        (server.v2_tensor("input", X), 200),
        (server.client.get(base), 200),
        (server.client.get(f"{base}/ready"), 200),
        (server.client.get("/v2/health/ready"), 200),
        (server.client.get("/v2/health/live"), 200),
        (server.client.get("/v2"), 200),
        (server.client.get(f"/v1/models/{server.name}"), 200),
        (server.client.get("/v1/models"), 200),
        (server.client.get("/metrics"), 200),
        (server.client.get("/v2/models/nope"), 404),
        (server.client.get("/v1/models/nope"), 404),
        (server.client.post("/v2/models/nope/infer", json=V2_BODY), 404),
        (server.client.post("/v1/models/nope:predict", json={"instances": [[0.0]]}), 404),
        (server.client.get("/no/such/route"), 404),
        (server.client.post(f"{base}/infer", json={**V2_BODY, "id": 123}), 400),
        (server.v1({"instances": 3}), 400),
    ]
    assert [response.status_code for response, _ in calls] == [status for _, status in calls]
    assert not isinstance(server.v2_binary({"input": X}), httpx.Response)


def test_no_deprecation_warning_reaches_the_log(quiet_server: Server) -> None:
    call_every_kind_of_route(quiet_server)
    call_every_kind_of_route(quiet_server)
    log = quiet_server.logs()
    assert "deprecat" not in log.lower(), log[-4000:]
    assert "Traceback" not in log, log[-4000:]


def test_no_access_log_by_default(quiet_server: Server) -> None:
    call_every_kind_of_route(quiet_server)
    assert not ACCESS_LINE.search(quiet_server.logs()), quiet_server.logs()[-4000:]


def test_access_log_flag_writes_one_line_per_request(models_dir: Path, log_dir: Path) -> None:
    server = start_server(models_dir / "digits-cnn", "digits-cnn", "--access_log", "true", log_dir=log_dir)
    try:
        for i in range(5):
            assert server.client.get(f"/v2/health/live?probe={i}").status_code == 200
            assert server.client.post(f"/v2/models/{server.name}/infer?probe={i}", json=V2_BODY).status_code == 200
        time.sleep(0.2)  # the access logger writes stdout: let its last line land
        paths = [match.group(2) for match in ACCESS_LINE.finditer(server.logs())]
        for i in range(5):
            assert paths.count(f"/v2/health/live?probe={i}") == 1, paths
            assert paths.count(f"/v2/models/{server.name}/infer?probe={i}") == 1, paths
    finally:
        server.stop()


def test_maas_access_log_env_sets_the_default(monkeypatch: pytest.MonkeyPatch) -> None:
    from tests.test_cli_help import _server as server_parser

    assert server_parser().parse_args(["--model_dir", "m"]).access_log is False
    monkeypatch.setenv("MAAS_ACCESS_LOG", "true")
    assert server_parser().parse_args(["--model_dir", "m"]).access_log is True


def test_requests_refused_while_loading_are_logged_once_not_each(models_dir: Path, tmp_path: Path) -> None:
    model_dir = slow_copy(models_dir, tmp_path, 6.0)
    proc, http_port, grpc_port, log = spawn(model_dir, "--model_name", "slow", log_dir=tmp_path)
    server = Server(proc, "slow", http_port, grpc_port, log)
    try:
        deadline = time.monotonic() + 60
        refused = 0
        while time.monotonic() < deadline and refused < 5:
            try:
                statuses = [
                    server.v1({"instances": X.tolist()}).status_code,
                    server.v2_tensor("input", X).status_code,
                    server.client.get("/v2/models/slow/ready").status_code,
                    server.client.get("/v1/models/slow").status_code,
                    server.client.get("/v2/health/ready").status_code,
                ]
            except httpx.TransportError:
                time.sleep(0.1)
                continue
            if 200 in statuses:
                break  # loaded before five rounds: the rounds seen still count
            assert statuses == [503] * 5
            refused += 1
            time.sleep(0.2)
        assert refused >= 2, "the server should refuse requests while the model loads"
        while server.client.get("/v2/models/slow/ready").status_code != 200 and time.monotonic() < deadline:
            time.sleep(0.2)
        assert server.v2_tensor("input", X).status_code == 200
        text = server.logs()
        assert text.count("refusing requests for slow until it is ready (loading)") == 1, text[-4000:]
        assert "model slow ready in" in text
        assert not [line for line in text.splitlines() if " ERROR " in line or "ERROR:" in line], text[-4000:]
        assert "not ready" not in text, text[-4000:]  # no line per refused request
        assert "deprecat" not in text.lower()
    finally:
        server.stop()
