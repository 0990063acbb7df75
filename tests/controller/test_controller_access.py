"""Errors a user can cause before the controller reaches the cluster: each is one line on
stderr with exit code 10 (``ExitCode.NO_ACCESS``), never a traceback."""

from __future__ import annotations

import io
import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from controller_fakes.kserve import NS
from controller_fakes.kube_api import FakeApiServer, write_kubeconfig
from maas_controller.cli import build_parser, main
from maas_controller.errors import EXIT_CODES, ExitCode
from maas_controller.kube import describe_transport_error

LAUNCHER = Path(__file__).resolve().parents[2] / "scripts" / "controller.py"


@pytest.fixture(autouse=True)
def no_ambient_cluster(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No kubeconfig of the developer's and no in-cluster config leak into these tests."""
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.delenv("KUBECONFIG", raising=False)
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
def silent_server() -> Iterator[str]:
    """A port that accepts connections (the kernel's backlog) but never answers."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen(8)
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"


def run_cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str]:
    """The CLI's ``main``; asserts one line on stderr and nothing else printed."""
    out, err = io.StringIO(), io.StringIO()
    code = main(["status", "m", "-n", NS, *argv], out=out, err=err)
    stray = capsys.readouterr()
    lines = err.getvalue().splitlines()
    assert out.getvalue() == "" and stray.out == "" and stray.err == "", stray
    assert len(lines) == 1 and lines[0].startswith("error: "), lines
    return code, lines[0]


def test_no_kubeconfig_says_set_kubeconfig(capsys: pytest.CaptureFixture[str]):
    code, line = run_cli(capsys)
    assert code == ExitCode.NO_ACCESS == 10
    assert "no kubeconfig found" in line and "set KUBECONFIG or pass --kubeconfig" in line


def test_kubeconfig_env_pointing_at_nothing(capsys, monkeypatch: pytest.MonkeyPatch, tmp_path: Path):
    monkeypatch.setenv("KUBECONFIG", str(tmp_path / "absent"))
    code, line = run_cli(capsys)
    assert code == 10 and f"KUBECONFIG={tmp_path / 'absent'}" in line


def test_missing_kubeconfig_file(capsys, tmp_path: Path):
    code, line = run_cli(capsys, "--kubeconfig", str(tmp_path / "nope"))
    assert code == 10 and "does not exist" in line and "--kubeconfig" in line


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("clusters: [\n", "is malformed"),
        ("- a\n- b\n", "not a kubeconfig"),
        ("just: text\n", "not a kubeconfig"),
        ("", "is empty"),
        ("clusters: []\ncontexts: [{name: a, context: {}}]\nusers: []\n", "sets no current-context"),
        ("clusters: 7\nusers: []\ncontexts: []\ncurrent-context: x\n", "is malformed"),
    ],
    ids=["bad-yaml", "list", "no-kubeconfig-keys", "empty", "no-current-context", "wrong-types"],
)
def test_malformed_kubeconfig(capsys, tmp_path: Path, text: str, message: str):
    path = tmp_path / "kubeconfig"
    path.write_text(text)
    code, line = run_cli(capsys, "--kubeconfig", str(path))
    assert code == 10 and message in line and str(path) in line


def test_unknown_context_lists_the_known_ones(capsys, tmp_path: Path):
    kubeconfig = write_kubeconfig(tmp_path / "kubeconfig", "http://127.0.0.1:9")
    code, line = run_cli(capsys, "--kubeconfig", kubeconfig, "--context", "nope")
    assert code == 10 and "context 'nope' is not in kubeconfig" in line and "(it has: fake)" in line


def test_connection_refused(capsys, tmp_path: Path):
    server = f"http://127.0.0.1:{closed_port()}"
    code, line = run_cli(capsys, "--kubeconfig", write_kubeconfig(tmp_path / "kubeconfig", server))
    assert code == 10 and f"cannot reach the Kubernetes API at {server}" in line and "connection refused" in line


def test_request_timeout(capsys, tmp_path: Path, silent_server: str):
    kubeconfig = write_kubeconfig(tmp_path / "kubeconfig", silent_server)
    code, line = run_cli(capsys, "--kubeconfig", kubeconfig, "--request-timeout", "100ms")
    assert code == 10 and "timed out after 0.1s" in line


def test_tls_error(capsys, tmp_path: Path, api: FakeApiServer):
    server = api.url.replace("http://", "https://")  # the fake speaks plain HTTP
    code, line = run_cli(capsys, "--kubeconfig", write_kubeconfig(tmp_path / "kubeconfig", server))
    assert code == 10 and "TLS error" in line and "certificate-authority" in line


def test_unresolvable_host_is_named():
    from urllib3.exceptions import MaxRetryError, NameResolutionError

    lookup = NameResolutionError("k8s.invalid", None, socket.gaierror(-2, "unknown"))  # type: ignore[arg-type]
    error = MaxRetryError(None, "/", lookup)  # type: ignore[arg-type]
    assert describe_transport_error(error) == "cannot resolve the host name"


@pytest.mark.parametrize(("status", "message"), [(401, "log in again"), (403, "lacks the RBAC permission")])
def test_unauthorized_and_forbidden(capsys, tmp_path: Path, api: FakeApiServer, status: int, message: str):
    api.fail_next("GET", "/inferenceservices/m", code=status)
    code, line = run_cli(capsys, "--kubeconfig", write_kubeconfig(tmp_path / "kubeconfig", api.url))
    assert code == 10 and f"(HTTP {status})" in line and message in line
    if status == 403:
        assert f"to get inferenceservices.serving.kserve.io in namespace {NS}" in line


@pytest.mark.parametrize("case", ["no-kubeconfig", "closed-port"])
def test_launcher_prints_one_line_without_traceback(case: str, tmp_path: Path):
    argv = [sys.executable, str(LAUNCHER), "status", "m"]
    if case == "closed-port":
        argv += ["--kubeconfig", write_kubeconfig(tmp_path / "kubeconfig", f"http://127.0.0.1:{closed_port()}")]
    env = {**os.environ, "HOME": str(tmp_path)}
    result = subprocess.run(argv, capture_output=True, text=True, timeout=60, env=env, check=False)
    assert result.returncode == 10
    assert "Traceback" not in result.stderr and len(result.stderr.splitlines()) == 1, result.stderr
    assert result.stdout == ""


def test_help_lists_every_exit_code(capsys: pytest.CaptureFixture[str]):
    for argv in (["--help"], ["status", "--help"]):
        with pytest.raises(SystemExit) as info:
            build_parser().parse_args(argv)
        assert info.value.code == 0
        text = capsys.readouterr().out
        for code, meaning in EXIT_CODES.items():
            assert f"{int(code):>3}  {meaning}" in text
    assert set(EXIT_CODES) == set(ExitCode)
