"""Every command in the README runs, as written, against real servers (see ``tests/readme_blocks.py``
for what runs which block).

The only changes made to a command before it runs: the ports 8080 and 8081 become free ones (they
may be taken on a busy machine), and ``.models/`` becomes the folder the tests' reference models
are in when that is not the checkout's ``.models`` (``MAAS_TEST_MODELS``).
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from tests.conftest import OFFLINE
from tests.readme_blocks import KINDS, ROOT, Block, blocks
from tests.serving import free_port

VENV_BIN = str(Path(sys.executable).parent)
READY_TIMEOUT_S = 240  # the quick start's server may build the digits CNN first, on a busy machine


def shell_env(**extra: str) -> dict[str, str]:
    """The environment a user's shell has once the venv is active (its ``pip``, ``python``)."""
    return {**os.environ, **OFFLINE, "PATH": f"{VENV_BIN}{os.pathsep}{os.environ['PATH']}", **extra}


def sessions() -> list[tuple[Block, list[Block]]]:
    """Each ``quickstart``/``serve`` block with the ``call`` blocks that follow it."""
    found: list[tuple[Block, list[Block]]] = []
    for block in blocks():
        if block.kind in {"quickstart", "serve"}:
            found.append((block, []))
        elif block.kind == "call":
            assert found, f"README line {block.line}: a call block before any server block"
            found[-1][1].append(block)
    return found


def session_id(session: tuple[Block, list[Block]]) -> str:
    server = session[0]
    model = re.search(r"\.models/([\w-]+)", server.code)
    return f"{server.kind}-{model.group(1) if model else 'digits-cnn'}-line{server.line}"


def localise(code: str, http_port: int, grpc_port: int, models: Path | None) -> str:
    code = re.sub(r"\b8080\b", str(http_port), code)
    code = re.sub(r"\b8081\b", str(grpc_port), code)
    if models is not None and models != ROOT / ".models":
        code = code.replace(".models/", f"{models}/")
    return code


def test_every_command_block_says_what_runs_it() -> None:
    unmarked = [b.line for b in blocks() if b.is_command and b.kind is None]
    unknown = [(b.line, b.kind) for b in blocks() if b.kind is not None and b.kind not in KINDS]
    assert not unmarked, f"README command blocks without a '<!-- readme: KIND -->' marker, at lines {unmarked}"
    assert not unknown, f"unknown README markers: {unknown}; known: {sorted(KINDS)}"
    assert all(b.note for b in blocks() if b.kind == "not-run"), "a not-run block says why"


def test_ci_blocks_are_what_ci_runs() -> None:
    ci = (ROOT / ".ci" / "run").read_text()
    for block in (b for b in blocks() if b.kind == "ci"):
        for command in block.commands():
            assert command in ci, f"README line {block.line}: {command!r} is not what .ci/run runs"


def test_local_blocks_run_as_written() -> None:
    for block in (b for b in blocks() if b.kind == "local"):
        done = subprocess.run(["bash", "-euo", "pipefail", "-c", block.code], cwd=ROOT, env=shell_env(),
                              capture_output=True, text=True, timeout=600)  # fmt: skip
        assert done.returncode == 0, f"README line {block.line}:\n{done.stdout}\n{done.stderr}"


def test_install_commands_resolve_without_warnings() -> None:
    """Each ``pip install`` line, with ``--dry-run``: it resolves from this checkout, installs
    maas-serving under that name, and says nothing deprecated."""
    commands = [c for b in blocks() if b.kind == "pip" for c in b.commands()]
    assert any("-e ." in c for c in commands)
    for command in commands:
        done = subprocess.run(f"{command} --dry-run", shell=True, cwd=ROOT, env=shell_env(),
                              capture_output=True, text=True, timeout=600)  # fmt: skip
        said = done.stdout + done.stderr
        assert done.returncode == 0, f"{command}:\n{said}"
        assert not re.search(r"deprecated|deprecationwarning", said, re.IGNORECASE), f"{command}:\n{said}"
        if "-e ." in command:
            assert "Would install maas-serving-" in said, f"{command}:\n{said}"


def start(command: str, env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    with log.open("wb") as out:
        return subprocess.Popen(["bash", "-c", f"exec {command}"], cwd=ROOT, env=env, stdout=out,
                                stderr=subprocess.STDOUT, start_new_session=True)  # fmt: skip


def wait_ready(proc: subprocess.Popen[bytes], port: int, log: Path) -> None:
    deadline = time.monotonic() + READY_TIMEOUT_S
    while time.monotonic() < deadline:
        assert proc.poll() is None, f"the server exited ({proc.returncode}):\n{log.read_text()}"
        try:
            if httpx.get(f"http://127.0.0.1:{port}/v2/health/ready", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.25)
    raise AssertionError(f"not ready after {READY_TIMEOUT_S}s:\n{log.read_text()}")


def stop(proc: subprocess.Popen[bytes]) -> int:
    os.killpg(proc.pid, signal.SIGTERM)
    try:
        return proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        return proc.wait()


@pytest.fixture
def ports() -> tuple[int, int]:
    return free_port(), free_port()


@pytest.mark.parametrize("session", sessions(), ids=session_id)
def test_server_and_its_calls_run_as_written(
    session: tuple[Block, list[Block]], models_dir: Path, ports: tuple[int, int], tmp_path: Path
) -> None:
    server, calls = session
    http_port, grpc_port = ports
    env = shell_env(MAAS_CACHE_DIR=str(tmp_path / "cache"))
    if server.kind == "quickstart":
        if Path(sys.prefix).resolve() != (ROOT / ".venv").resolve():
            pytest.skip("scripts/quickstart.sh serve sets up and uses .venv; this run's Python is elsewhere")
        command, models = server.commands()[0], None  # as written; it builds into the checkout's .models
        env |= {"HTTP_PORT": str(http_port), "GRPC_PORT": str(grpc_port)}
    else:
        command, models = localise(server.commands()[0], http_port, grpc_port, models_dir), models_dir
    proc = start(command, env, tmp_path / "server.log")
    try:
        wait_ready(proc, http_port, tmp_path / "server.log")
        for call in calls:
            run_call(call, http_port, grpc_port, models, env)
    finally:
        code = stop(proc)
    assert code == 0, (tmp_path / "server.log").read_text()


def run_call(call: Block, http_port: int, grpc_port: int, models: Path | None, env: dict[str, str]) -> None:
    """Run one call block; it must succeed and print answers, none of them an error."""
    code = localise(call.code, http_port, grpc_port, models)
    argv = [sys.executable, "-c", code] if call.language == "python" else ["bash", "-euo", "pipefail", "-c", code]
    done = subprocess.run(argv, cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    where = f"README line {call.line}:\n{done.stdout}\n{done.stderr}"
    assert done.returncode == 0 and done.stdout.strip(), where
    assert '"error"' not in done.stdout, where
