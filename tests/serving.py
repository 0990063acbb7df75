"""Test helpers: run ``python -m predictors`` as a real subprocess on free 127.0.0.1 ports and talk
to it over real sockets (V1/V2 REST with httpx, V2 gRPC with ``kserve.InferenceGRPCClient``)."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import numpy as np

ROOT = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Server:
    """A running predictor server process."""

    proc: subprocess.Popen[bytes]
    name: str
    http_port: int
    grpc_port: int
    log: Path
    client: httpx.Client = field(init=False)

    def __post_init__(self) -> None:
        self.client = httpx.Client(base_url=self.url, timeout=60)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    @property
    def grpc_url(self) -> str:
        return f"127.0.0.1:{self.grpc_port}"

    def logs(self) -> str:
        return self.log.read_text(errors="replace")

    def v1(self, body: Any, **kwargs: Any) -> httpx.Response:
        return self.client.post(f"/v1/models/{self.name}:predict", json=body, **kwargs)

    def v2(
        self, inputs: list[dict[str, Any]], parameters: dict[str, Any] | None = None, **kwargs: Any
    ) -> httpx.Response:
        body: dict[str, Any] = {"inputs": inputs}
        if parameters:
            body["parameters"] = parameters
        return self.client.post(f"/v2/models/{self.name}/infer", json=body, **kwargs)

    def v2_tensor(self, name: str, array: np.ndarray, **kwargs: Any) -> httpx.Response:
        return self.v2([tensor_json(name, array)], **kwargs)

    def v2_binary(self, inputs: dict[str, np.ndarray], parameters: dict[str, Any] | None = None) -> Any:
        """A request in the V2 binary tensor extension, built and parsed by kserve's own types."""
        from kserve import InferInput, InferRequest, InferResponse

        infer_inputs = []
        for name, array in inputs.items():
            tensor = InferInput(name, list(array.shape), datatype_of(array))
            tensor.set_data_from_numpy(array, binary_data=True)
            infer_inputs.append(tensor)
        params = {"binary_data_output": True, **(parameters or {})}
        request = InferRequest(self.name, infer_inputs, parameters=params)
        body, json_length = request.to_rest()
        if json_length is None:  # no binary inputs at all (a generative request from parameters): plain JSON
            response = self.client.post(f"/v2/models/{self.name}/infer", json=body)
        else:
            response = self.client.post(
                f"/v2/models/{self.name}/infer",
                content=body,
                headers={
                    "content-type": "application/octet-stream",
                    "inference-header-content-length": str(json_length),
                },
            )
        if response.status_code != 200:
            return response
        header_length = response.headers.get("inference-header-content-length")
        if header_length is None:
            return InferResponse.from_rest(response.json())
        return InferResponse.from_bytes(response.content, int(header_length))

    def grpc(self, inputs: dict[str, np.ndarray], parameters: dict[str, Any] | None = None, raw: bool = True) -> Any:
        """One V2 gRPC inference with ``kserve.InferenceGRPCClient``."""
        from kserve import InferenceGRPCClient, InferInput, InferRequest

        async def call() -> Any:
            client = InferenceGRPCClient(self.grpc_url, timeout=60, retries=0)
            try:
                infer_inputs = []
                for name, array in inputs.items():
                    tensor = InferInput(name, list(array.shape), datatype_of(array))
                    tensor.set_data_from_numpy(array, binary_data=raw)
                    infer_inputs.append(tensor)
                request = InferRequest(self.name, infer_inputs, parameters=parameters)
                return await client.infer(request)
            finally:
                await client.close()

        return asyncio.run(call())

    def metrics(self) -> str:
        return self.client.get("/metrics").text

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 30) -> int:
        self.client.close()
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return self.proc.returncode


def datatype_of(array: np.ndarray) -> str:
    if array.dtype == np.object_:
        return "BYTES"
    return {
        np.float32: "FP32",
        np.float64: "FP64",
        np.float16: "FP16",
        np.int64: "INT64",
        np.int32: "INT32",
        np.uint8: "UINT8",
        np.bool_: "BOOL",
    }[array.dtype.type]


def tensor_json(name: str, array: np.ndarray) -> dict[str, Any]:
    return {"name": name, "datatype": datatype_of(array), "shape": list(array.shape), "data": array.ravel().tolist()}


def spawn(
    model_dir: Path | str, *args: str, log_dir: Path, env: dict[str, str] | None = None
) -> tuple[subprocess.Popen[bytes], int, int, Path]:
    http_port, grpc_port = free_port(), free_port()
    log = log_dir / f"server-{http_port}.log"
    cmd = [
        sys.executable,
        "-m",
        "predictors",
        "--model_dir",
        str(model_dir),
        "--host",
        "127.0.0.1",
        "--http_port",
        str(http_port),
        "--grpc_port",
        str(grpc_port),
        "--torch_threads",
        "1",
        "--enable_latency_logging",
        "false",
        *args,
    ]
    full_env = {**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}
    with log.open("wb") as out:
        proc = subprocess.Popen(cmd, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT, env=full_env)
    return proc, http_port, grpc_port, log


def start_server(
    model_dir: Path | str, name: str, *args: str, log_dir: Path, timeout: float = 90, env: dict[str, str] | None = None
) -> Server:
    """Start a server and wait until its model is ready (fails with the server's log)."""
    proc, http_port, grpc_port, log = spawn(model_dir, *args, log_dir=log_dir, env=env)
    server = Server(proc, name, http_port, grpc_port, log)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode}:\n{server.logs()[-4000:]}")
        try:
            if server.client.get(f"/v2/models/{name}/ready").status_code == 200:
                return server
        except httpx.TransportError:
            pass
        time.sleep(0.1)
    server.stop(signal.SIGKILL)
    raise RuntimeError(f"server not ready in {timeout}s:\n{server.logs()[-4000:]}")
