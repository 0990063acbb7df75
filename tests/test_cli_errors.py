"""``python -m predictors`` run for real: every error a user can cause is one line on stderr naming
the problem, with the exit code ``--help`` documents, and no traceback."""

from __future__ import annotations

import importlib.util
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.serving import ROOT


def run(*args: str) -> subprocess.CompletedProcess[str]:
    cmd = [sys.executable, "-m", "predictors", "--host", "127.0.0.1", "--http_port", "0", "--grpc_port", "0", *args]
    return subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=120)


@pytest.fixture
def taken_port() -> Iterator[int]:
    """A port something else listens on."""
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        yield holder.getsockname()[1]


def assert_one_line(result: subprocess.CompletedProcess[str], code: int, says: str) -> None:
    assert result.returncode == code, result.stderr[-3000:]
    assert "Traceback" not in result.stdout + result.stderr, result.stderr[-3000:]
    assert result.stdout == ""
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr[-3000:]
    assert says in lines[0]


@pytest.mark.parametrize(
    ("args", "code", "says"),
    [
        ([], 2, "--model_dir"),
        (["--model_dir", "/nope"], 2, "/nope does not exist"),
        (["--model_dir", "{empty}"], 2, "has no model config"),
        (["--model_dir", "{cnn}", "--http_port", "eighty"], 2, "argument --http_port: invalid int value: 'eighty'"),
        (["--model_dir", "{cnn}", "--event-loop", "fast"], 2, "argument --event-loop: invalid choice"),
        (["--model_dir", "{cnn}", "--max_batch_size", "lots"], 2, "--max_batch_size"),
        (["--model_dir", "{cnn}", "--access_log", "maybe"], 2, "argument --access_log: expected a boolean"),
        (["--model_dir", "{cnn}", "--no_such_flag", "1"], 2, "unrecognized arguments: --no_such_flag"),
        (["--model_dir", "{cnn}", "--workers", "2"], 2, "--workers must be 1"),
        (["--model_dir", "{cnn}", "--grpc_port", "70000"], 2, "--grpc_port must be from 0 to 65535"),
        (["--model_dir", "{cnn}", "--max_threads", "0"], 2, "--max_threads must be at least 1"),
        (["--model_dir", "{cnn}", "--ssl_certfile", "/nope.pem"], 2, "--ssl_certfile /nope.pem does not exist"),
        (["--model_dir", "{cnn}", "--log_config_file", "/nope.yaml"], 2, "--log_config_file /nope.yaml"),
        pytest.param(
            ["--model_dir", "{cnn}", "--access_log_format", "%(h)s"],
            2,
            "needs the asgi-logger package",
            marks=pytest.mark.skipif(importlib.util.find_spec("asgi_logger") is not None, reason="asgi-logger is here"),
        ),
        (["--model_dir", "{cnn}", "--http_port", "{taken}"], 3, "(--http_port): Address already in use"),
        (["--model_dir", "{cnn}", "--grpc_port", "{taken}"], 3, "(--grpc_port): Address already in use"),
        (["--model_dir", "{cnn}", "--host", "no-such-host.invalid"], 3, "check --host"),
    ],
    ids=[
        "no-model-dir",
        "missing-dir",
        "no-maas-yaml",
        "bad-int",
        "bad-choice",
        "bad-setting",
        "bad-bool",
        "unknown-flag",
        "workers",
        "port-out-of-range",
        "no-grpc-threads",
        "missing-certificate",
        "missing-log-config",
        "access-log-format-without-asgi-logger",
        "http-port-in-use",
        "grpc-port-in-use",
        "unknown-host",
    ],
)
def test_a_user_error_is_one_line_with_its_exit_code(
    models_dir: Path, tmp_path: Path, taken_port: int, args: list[str], code: int, says: str
) -> None:
    values = {"empty": str(tmp_path), "cnn": str(models_dir / "digits-cnn"), "taken": str(taken_port)}
    assert_one_line(run(*(arg.format(**values) for arg in args)), code, says)


def test_a_failed_load_ends_with_one_error_line_and_no_traceback(models_dir: Path, tmp_path: Path) -> None:
    import shutil

    model_dir = tmp_path / "corrupt"
    shutil.copytree(models_dir / "digits-cnn", model_dir)
    (model_dir / "weights.pt").write_bytes(b"garbage")
    result = run("--model_dir", str(model_dir))
    assert result.returncode == 1, result.stderr[-3000:]
    assert "Traceback" not in result.stdout + result.stderr, result.stderr[-3000:]
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("error: cannot serve digits-cnn: weights file") and "is corrupt" in last


def test_help_documents_the_exit_codes() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "predictors", "--help"], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout
    assert "exit codes:" in out
    for code in ("1  the model failed to load", "2  a bad flag or setting", "3  the HTTP or gRPC port"):
        assert code in out
    assert "--access_log" in out
