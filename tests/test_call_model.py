"""scripts/call_model.py against real servers of every family: one run of the script, as a
command, calls V1, V2 and gRPC and passes; failures print the server's own message and exit 1."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import call_model
import pytest

from tests.conftest import serve
from tests.serving import ROOT, Server, free_port

SCRIPT = ROOT / "scripts" / "call_model.py"

# the servers, one per family (fixtures), and what the request built from each model's metadata
# sends (see call_model's docstring)
SERVERS = ["cnn_server", "lstm_server", "minilm_server_torch", "gpt_server", "vae_server"]
SENT = {
    "digits-cnn": "input FP32 [1, 1, 8, 8]",  # image: the tensor input, not the PNG one
    "digits-lstm": "input FP32 [1, 8, 8], lengths INT64 [1]",  # sequence: rows and their lengths
    "minilm": "text BYTES [1]",  # transformer, embedding
    "tiny-gpt": "text BYTES [1]",  # transformer, text generation
    "digits-vae": "no inputs, num_samples=1, seed=0",  # generative: samples from a seed
}


def run(*args: str) -> subprocess.CompletedProcess[str]:
    """The script as a user runs it (its own command line: kserve must not parse it)."""
    return subprocess.run([sys.executable, str(SCRIPT), *args], cwd=ROOT, capture_output=True, text=True, timeout=120)


@pytest.fixture(scope="module")
def minilm_server_torch(models_dir: Path, log_dir: Path) -> Iterator[Server]:
    """MiniLM on torch only (conftest's minilm_server serves it on torch and on onnxruntime)."""
    yield from serve(models_dir / "minilm", "minilm", log_dir)


@pytest.fixture(params=SERVERS)
def server(request: pytest.FixtureRequest) -> Server:
    served: Server = request.getfixturevalue(request.param)
    return served


def test_calls_every_protocol(server: Server):
    done = run("--model", server.name, "--http", server.url, "--grpc", server.grpc_url)
    assert done.returncode == 0, done.stdout + done.stderr
    sent = SENT[server.name]
    lines = done.stdout.splitlines()
    assert lines[0].startswith(f"v1   {server.name}: ready, 1 prediction(s)")
    assert lines[1].startswith(f"v2   {server.name}: ready, {sent} -> ")
    assert lines[2].startswith(f"grpc {server.name}: ready, {sent} -> ")
    assert done.stderr == ""


def test_the_request_is_what_the_server_answers(server: Server):
    """The V2 body the script sends is accepted as is, and V1 likewise."""
    metadata = server.client.get(f"/v2/models/{server.name}").json()
    request = call_model.build_request(metadata)
    assert request.describe() == SENT[server.name]
    assert server.client.post(f"/v2/models/{server.name}/infer", json=request.v2()).status_code == 200
    assert server.client.post(f"/v1/models/{server.name}:predict", json=request.v1()).status_code == 200


def test_host_header_and_parameters_pass_through(cnn_server: Server, capsys: pytest.CaptureFixture[str]):
    args = ["--model", "digits-cnn", "--http", cnn_server.url, "--host", "digits-maas.example.com"]
    assert call_model.main([*args, "--parameters", '{"top_k": 3}']) == 0
    assert "top_k_labels" in capsys.readouterr().out


def test_a_bad_request_shows_the_servers_message(gpt_server: Server):
    done = run("--model", "tiny-gpt", "--http", gpt_server.url, "--parameters", '{"max_new_tokens": 0}')
    assert done.returncode == 1
    assert done.stderr.startswith(
        "FAILED tiny-gpt: POST /v1/models/tiny-gpt:predict: HTTP 400: parameter 'max_new_tokens'"
    )
    assert "Bad Request" not in done.stderr


def test_an_unknown_model_shows_the_servers_message(cnn_server: Server):
    done = run("--model", "nope", "--http", cnn_server.url)
    assert done.returncode == 1
    assert done.stderr == "FAILED nope: GET /v1/models/nope: HTTP 404: Model with name nope does not exist.\n"


def test_a_grpc_failure_shows_its_status(cnn_server: Server, lstm_server: Server):
    """REST reaches the LSTM; gRPC reaches the CNN's server, which has no model digits-lstm."""
    done = run("--model", "digits-lstm", "--http", lstm_server.url, "--grpc", cnn_server.grpc_url)
    assert done.returncode == 1
    assert done.stdout.startswith("v1   digits-lstm: ready")
    assert done.stderr.startswith(f"FAILED digits-lstm: gRPC NOT_FOUND from {cnn_server.grpc_url}: ")
    assert "Traceback" not in done.stderr


def test_an_unreachable_server_fails_in_one_line():
    url = f"http://127.0.0.1:{free_port()}"
    done = run("--model", "m", "--http", url, "--timeout", "5")
    assert done.returncode == 1
    assert done.stderr.startswith(f"FAILED m: GET /v1/models/m: cannot reach {url}: ")
    assert len(done.stderr.splitlines()) == 1


def test_bad_parameters_are_a_usage_error():
    done = run("--model", "m", "--http", "http://127.0.0.1:1", "--parameters", "[1]")
    assert done.returncode == 2
    assert "must be a JSON object" in done.stderr


@pytest.mark.parametrize(
    ("metadata", "body"),
    [
        ({"inputs": []}, {"inputs": [], "parameters": {"num_samples": 1, "seed": 0}}),
        (
            {"inputs": [{"name": "latent", "datatype": "FP32", "shape": [-1, 16]}]},
            {"inputs": [], "parameters": {"num_samples": 1, "seed": 0}},
        ),
        (
            {
                "inputs": [
                    {"name": "x", "datatype": "INT32", "shape": [-1, 2]},
                    {"name": "y", "datatype": "FP32", "shape": [3]},
                ]
            },
            {"inputs": [{"name": "x", "datatype": "INT32", "shape": [1, 2], "data": [0, 0]}]},
        ),
    ],
)
def test_requests_for_other_metadata(metadata, body):
    assert call_model.v2_request(metadata) == body
