"""Start and stop the served contenders, each pinned to the server core."""

from __future__ import annotations

import copy
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[2]
SCRIPTS = ROOT / "scripts"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def pinned(core: int | None):  # type: ignore[no-untyped-def]
    """A ``preexec_fn`` placing the child on one core (None: no placement)."""
    if core is None:
        return None
    return lambda: os.sched_setaffinity(0, {core})


def env(kind: str = "") -> dict[str, str]:
    """The children's environment; maas as a user runs it gets no ``MAAS_*`` setting from ours."""
    base = {k: v for k, v in os.environ.items() if not (kind in AS_A_USER and k.startswith("MAAS_"))}
    return {**base, "PYTHONPATH": f"{ROOT}{os.pathsep}{SCRIPTS}", "PYTHONUNBUFFERED": "1"}


# the floor: a trivial ASGI app (maas_bench.asgi_trivial) on uvicorn + httptools, on each loop
TRIVIAL_ASGI = {"trivial-asyncio": "asyncio", "trivial-uvloop": "uvloop"}

# maas as a user runs it: ``python -m predictors --model_dir DIR --http_port P --grpc_port G`` and
# nothing else (maas's own log config, threads, batch size and latency logging), then the same with
# the access log on. Each is still pinned to the server core: placement is the harness's, the same
# for every contender, not a maas setting (on one core maas's default torch threads come to 1).
AS_A_USER: dict[str, list[str]] = {
    "maas-defaults": [],
    "maas-access-log": ["--access_log", "true"],
}


def quiet_log_config(folder: Path) -> Path:
    """kserve's logging config with per-request lines (access log, timing trace) off, the same
    for every contender: the benchmark measures serving, not log I/O."""
    from kserve.logging import KSERVE_LOG_CONFIG

    config = copy.deepcopy(KSERVE_LOG_CONFIG)
    config["loggers"]["uvicorn.access"]["level"] = "WARNING"
    config["loggers"]["kserve.trace"]["level"] = "WARNING"
    path = folder / "log-config.json"
    path.write_text(json.dumps(config))
    return path


@dataclass
class Served:
    """A running server process."""

    kind: str
    proc: subprocess.Popen[bytes]
    name: str
    http_port: int
    grpc_port: int
    started: float
    ready_after: float = 0.0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def command(
    kind: str,
    model_dir: Path,
    name: str,
    http_port: int,
    grpc_port: int,
    log_config: Path,
    device: str = "cpu",
    max_batch_size: int = 64,
) -> list[str]:
    common = [
        "--model_name",
        name,
        "--http_port",
        str(http_port),
        "--grpc_port",
        str(grpc_port),
        "--enable_latency_logging",
        "false",
        "--log_config_file",
        str(log_config),
    ]
    if kind in AS_A_USER:
        ports = ["--http_port", str(http_port), "--grpc_port", str(grpc_port)]
        return [sys.executable, "-m", "predictors", "--model_dir", str(model_dir), *ports, *AS_A_USER[kind]]
    if kind == "naive":
        return [sys.executable, "-m", "maas_bench.naive", "--model_dir", str(model_dir), *common]
    if kind in TRIVIAL_ASGI:
        loop = ["--loop", TRIVIAL_ASGI[kind]]
        return [sys.executable, "-m", "maas_bench.asgi_trivial", "--http_port", str(http_port), *loop]
    if kind == "trivial":
        return [
            sys.executable,
            "-m",
            "maas_bench.trivial",
            "--http_port",
            str(http_port),
            "--grpc_port",
            str(grpc_port),
        ]
    return [
        sys.executable,
        "-m",
        "predictors",
        "--model_dir",
        str(model_dir),
        "--host",
        "127.0.0.1",
        "--torch_threads",
        "1",
        "--max_batch_size",
        str(max_batch_size),
        "--device",
        device,
        *common,
    ]


def start(
    kind: str,
    model_dir: Path,
    name: str,
    *,
    core: int | None,
    log_config: Path,
    timeout: float = 180,
    **options: object,
) -> Served:
    """Start a contender and wait until its model (or, for trivial, its port) is ready; ``name`` is
    the model's endpoint name (maas as a user runs it takes its model config's)."""
    http_port, grpc_port = free_port(), free_port()
    log = tempfile.NamedTemporaryFile(prefix=f"bench-{kind}-", suffix=".log", delete=False)  # noqa: SIM115
    started = time.perf_counter()
    proc = subprocess.Popen(
        command(kind, model_dir, name, http_port, grpc_port, log_config, **options),  # type: ignore[arg-type]
        cwd=ROOT,
        env=env(kind),
        stdout=log,
        stderr=subprocess.STDOUT,
        preexec_fn=pinned(core),
    )
    served = Served(kind, proc, name, http_port, grpc_port, started)
    probe = "/" if kind == "trivial" else f"/v2/models/{name}/ready"
    deadline = started + timeout
    while time.perf_counter() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{kind} server exited {proc.returncode}; log: {log.name}")
        try:
            if kind == "trivial":
                socket.create_connection(("127.0.0.1", http_port), timeout=1).close()
                ok = True
            else:
                ok = httpx.get(served.url + probe, timeout=2).status_code == 200
        except (httpx.TransportError, OSError):
            ok = False
        if ok:
            served.ready_after = time.perf_counter() - started
            return served
        time.sleep(0.02)
    served.stop()
    raise RuntimeError(f"{kind} server not ready in {timeout}s; log: {log.name}")
