"""scripts/kind_e2e.sh stays valid shell; scripts/call_model.py calls a V2 server correctly."""

from __future__ import annotations

import json
import shutil
import subprocess
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import call_model
import pytest
from deploy_support import REPO

KIND_E2E = REPO / "scripts" / "kind_e2e.sh"

METADATA = {
    "name": "m",
    "inputs": [
        {"name": "pixels", "datatype": "FP32", "shape": [-1, 3, 2, 2]},
        {"name": "text", "datatype": "BYTES", "shape": [-1]},
        {"name": "ids", "datatype": "INT64", "shape": [1, 4]},
    ],
}


def test_kind_e2e_script_parses():
    subprocess.run(["bash", "-n", str(KIND_E2E)], check=True)


@pytest.mark.skipif(shutil.which("shellcheck") is None, reason="shellcheck is not installed")
def test_kind_e2e_script_passes_shellcheck():
    result = subprocess.run(["shellcheck", "-x", str(KIND_E2E)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout


def test_v2_request_fills_every_input_from_metadata():
    request = call_model.v2_request(METADATA)
    pixels, text, ids = request["inputs"]
    assert (pixels["shape"], pixels["data"]) == ([1, 3, 2, 2], [0.0] * 12)
    assert (text["shape"], text["data"], text["datatype"]) == ([1], ["hello"], "BYTES")
    assert (ids["shape"], ids["data"]) == ([1, 4], [0, 0, 0, 0])


class FakeV2(BaseHTTPRequestHandler):
    """A V2 predictor serving model `m`; `ready` is a class switch for the not-ready case."""

    ready = True
    received: list[dict] = []

    def _send(self, status: int, body: dict) -> None:
        payload = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def do_GET(self) -> None:
        answers = {
            "/v1/models/m": {"name": "m", "ready": self.ready},
            "/v2/health/ready": {"ready": self.ready},
            "/v2/models/m/ready": {"name": "m", "ready": self.ready},
            "/v2/models/m": METADATA,
        }
        if self.path in answers:
            self._send(200, answers[self.path])
        else:
            self._send(404, {"error": f"no route {self.path}"})

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        FakeV2.received.append(body)
        self._send(
            200,
            {
                "model_name": "m",
                "outputs": [{"name": "y", "shape": [1], "datatype": "FP32", "data": [0.5]}],
            },
        )

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def fake_server() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), FakeV2)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    FakeV2.ready, FakeV2.received = True, []
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def test_call_model_over_rest(fake_server, capsys):
    assert call_model.main(["--model", "m", "--http", fake_server]) == 0
    assert FakeV2.received == [call_model.v2_request(METADATA)]
    assert "v2   m: ready, 3 input(s) -> y" in capsys.readouterr().out


def test_call_model_fails_when_the_model_is_not_ready(fake_server, capsys):
    FakeV2.ready = False
    assert call_model.main(["--model", "m", "--http", fake_server]) == 1
    assert "FAILED m: V1 /v1/models/m is not ready" in capsys.readouterr().err
    assert FakeV2.received == []


def test_call_model_fails_on_an_unknown_model(fake_server, capsys):
    assert call_model.main(["--model", "other", "--http", fake_server]) == 1
    assert "HTTP Error 404" in capsys.readouterr().err
