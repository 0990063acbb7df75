"""The CLI end to end: a kubeconfig pointing at the fake API server, every command, formats."""

from __future__ import annotations

import io
import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from controller_fakes.kserve import NS
from controller_fakes.kube_api import FakeApiServer, write_kubeconfig
from controller_fakes.prometheus import FakePrometheus
from maas_controller.cli import main

COMMANDS = ["deploy", "canary", "promote", "rollback", "status", "history", "rollout", "run"]
LAUNCHER = Path(__file__).resolve().parents[2] / "scripts" / "controller.py"


@pytest.fixture
def kubeconfig(api: FakeApiServer, kserve, tmp_path: Path) -> str:
    return write_kubeconfig(tmp_path / "kubeconfig", api.url)


@pytest.fixture
def cli(kubeconfig: str, clock):
    def run(*argv: str) -> tuple[int, str, str]:
        out, err = io.StringIO(), io.StringIO()
        code = main([*argv, "--kubeconfig", kubeconfig, "-n", NS, "--poll", "1s"], clock=clock, out=out, err=err)
        return code, out.getvalue(), err.getvalue()

    return run


@pytest.mark.parametrize("command", COMMANDS)
def test_every_command_has_help(command: str, capsys: pytest.CaptureFixture[str]):
    with pytest.raises(SystemExit) as info:
        main([command, "--help"])
    assert info.value.code == 0
    help_text = capsys.readouterr().out
    assert "--namespace" in help_text and "--output" in help_text


@pytest.mark.parametrize("mode", ["Serverless", "Standard"])
def test_cli_session(cli, mode: str):
    code, out, _ = cli(
        "deploy", "m", "--storage-uri", "s3://models/m/1", "--model-format", "maas-transformer", "--mode", mode
    )
    assert code == 0 and "rolled-out v1" in out
    code, out, _ = cli("canary", "m", "--storage-uri", "s3://models/m/2", "--percent", "20", "-o", "json")
    assert code == 0 and json.loads(out)["traffic"] == {"v1": 80, "v2": 20}
    code, out, _ = cli("status", "m")
    assert code == 0 and f"mode={mode}" in out and "v2" in out and "ready=True" in out
    code, out, _ = cli("status", "m", "-o", "yaml")
    assert yaml.safe_load(out)["canary"]["percent"] == 20
    assert cli("promote", "m")[0] == 0
    code, out, _ = cli("rollback", "m", "--to", "v1", "-o", "json")
    assert code == 0 and json.loads(out)["traffic"] == {"v1": 100}
    code, out, _ = cli("history", "m")
    lines = out.splitlines()
    assert lines[0].split()[:5] == ["SEQ", "VERSION", "AT", "COMMAND", "OUTCOME"]
    assert [line.split()[4] for line in lines[1:]] == ["rolled-out", "canary", "promoted", "restored"]
    code, out, _ = cli("history", "m", "-o", "json")
    assert [e["seq"] for e in json.loads(out)] == [1, 2, 3, 4]


def test_cli_rollout_shows_progress_and_fails_with_exit_7(cli, prometheus: FakePrometheus):
    cli("deploy", "m", "--storage-uri", "s3://models/m/1", "--model-format", "maas-image")
    prometheus.answer = lambda query: 0.5 if "total" in query else 10.0
    code, out, err = cli(
        "rollout",
        "m",
        "--storage-uri",
        "s3://models/m/2",
        "--steps",
        "10,100",
        "--interval",
        "30s",
        "--prometheus",
        prometheus.url,
    )
    assert code == 7
    assert "started: step 1/2 (10%)" in err and "rolled back v2" in err
    prometheus.answer = lambda query: 0.0 if "total" in query else 10.0
    code, out, err = cli(
        "rollout",
        "m",
        "--storage-uri",
        "s3://models/m/2",
        "--steps",
        "10,100",
        "--interval",
        "30s",
        "--prometheus",
        prometheus.url,
        "-o",
        "json",
    )
    assert code == 0 and json.loads(out)["phase"] == "succeeded"


def test_cli_run_once(cli, api: FakeApiServer):
    cli("deploy", "m", "--storage-uri", "s3://models/m/1", "--model-format", "maas-image")
    api.objects[("/apis/serving.kserve.io/v1beta1/inferenceservices", NS, "m")]["metadata"]["annotations"][
        "maas.io/rollout-storage-uri"
    ] = "s3://models/m/2"
    code, _, err = cli("run", "--once", "--interval", "1s")
    assert code == 0 and "started" in err


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["canary", "m", "--storage-uri", "s3://x", "--percent", "101"], "0..100"),
        (["canary", "m", "--storage-uri", "s3:/x", "--percent", "5"], "malformed storage URI"),
        (["rollback", "m", "--to", "v 1"], "invalid version"),
        (["rollout", "m", "--storage-uri", "s3://x", "--steps", "10,50"], "end at 100"),
        (["rollout", "m", "--storage-uri", "s3://x", "--interval", "soon"], "invalid duration"),
        (["status", "Bad_Name"], "invalid InferenceService name"),
    ],
)
def test_bad_arguments_exit_2_before_any_request(
    cli, api: FakeApiServer, argv, message, capsys: pytest.CaptureFixture[str]
):
    with pytest.raises(SystemExit) as info:
        cli(*argv)
    assert info.value.code == 2
    assert message in capsys.readouterr().err
    assert api.requests == []


def test_api_errors_map_to_exit_codes(cli, api: FakeApiServer):
    code, _, err = cli("status", "ghost")
    assert code == 3 and "not found" in err and "(HTTP 404)" in err
    cli("deploy", "m", "--storage-uri", "s3://models/m/1", "--model-format", "maas-image")
    code, _, err = cli("rollback", "m", "--to", "v7")
    assert code == 2 and "unknown version 'v7'" in err
    api.fail_next("PATCH", "/inferenceservices/m", code=409, times=20)
    code, _, err = cli("canary", "m", "--storage-uri", "s3://models/m/2", "--percent", "5")
    assert code == 4 and "HTTP 409" in err


def test_launcher_runs_as_a_script(kubeconfig: str):
    result = subprocess.run(
        [
            sys.executable,
            str(LAUNCHER),
            "deploy",
            "m",
            "--storage-uri",
            "s3://models/m/1",
            "--model-format",
            "maas-image",
            "--kubeconfig",
            kubeconfig,
            "-n",
            NS,
            "--poll",
            "10ms",
            "-o",
            "json",
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["traffic"] == {"v1": 100}


def test_run_loop_stops_cleanly_on_sigterm(kubeconfig: str):
    import signal

    proc = subprocess.Popen(
        [
            sys.executable,
            str(LAUNCHER),
            "run",
            "--all-namespaces",
            "--interval",
            "50ms",
            "--kubeconfig",
            kubeconfig,
            "--prometheus-url",
            "http://127.0.0.1:9",
        ],
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stderr is not None
        assert "reconciling all namespaces every 0.05s" in proc.stderr.readline()
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=10) == 0
    finally:
        proc.kill()
