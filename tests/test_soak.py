"""Soak: many requests at concurrency 64 across V1, V2 REST (JSON and binary) and gRPC; every answer
is checked and the server's resident memory must not grow. The default run sends 3,000 requests;
``pytest -m slow tests/test_soak.py`` sends 20,000."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from pathlib import Path

import grpc
import httpx
import numpy as np
import orjson
import pytest

from tests.serving import Server, start_server, tensor_json


@dataclass
class SoakReport:
    sent: int = 0
    correct: int = 0
    errors: list[str] = field(default_factory=list)
    rss_kib: list[int] = field(default_factory=list)
    seconds: float = 0.0

    def growth(self) -> float:
        """Mean RSS of the last quarter of samples over the first quarter's, minus one."""
        quarter = max(1, len(self.rss_kib) // 4)
        first, last = np.mean(self.rss_kib[:quarter]), np.mean(self.rss_kib[-quarter:])
        return float(last / first - 1)


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError("no VmRSS")


async def soak(server: Server, x: np.ndarray, expected: np.ndarray, total: int, concurrency: int = 64) -> SoakReport:
    from kserve.protocol.grpc import grpc_predict_v2_pb2 as pb
    from kserve.protocol.grpc.grpc_predict_v2_pb2_grpc import GRPCInferenceServiceStub

    report = SoakReport()
    counter = iter(range(total))
    rng = np.random.default_rng(7)
    picks = rng.integers(len(x), size=total)
    sample_every = max(1, total // 80)
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)

    async with (
        httpx.AsyncClient(base_url=server.url, limits=limits, timeout=60) as client,
        grpc.aio.insecure_channel(server.grpc_url) as channel,
    ):
        stub = GRPCInferenceServiceStub(channel)

        async def one(n: int) -> None:
            i = int(picks[n])
            sample = x[i : i + 1]
            kind = n % 4
            if kind == 0:
                r = await client.post(f"/v1/models/{server.name}:predict", json={"instances": sample.tolist()})
                label = r.json()["predictions"][0]["label"] if r.status_code == 200 else None
            elif kind == 1:
                r = await client.post(
                    f"/v2/models/{server.name}/infer", json={"inputs": [tensor_json("input", sample)]}
                )
                body = r.json() if r.status_code == 200 else {"outputs": []}
                label = next((o["data"][0] for o in body["outputs"] if o["name"] == "label"), None)
            elif kind == 2:
                head = (
                    b'{"inputs":[{"name":"input","datatype":"FP32","shape":[1,1,8,8],'
                    b'"parameters":{"binary_data_size":256}}],"parameters":{"binary_data_output":true}}'
                )
                r = await client.post(
                    f"/v2/models/{server.name}/infer",
                    content=head + sample.tobytes(),
                    headers={"inference-header-content-length": str(len(head))},
                )
                label = None
                if r.status_code == 200:
                    json_length = int(r.headers["inference-header-content-length"])
                    outputs = orjson.loads(r.content[:json_length])["outputs"]
                    offset = json_length
                    for o in outputs:
                        size = o["parameters"]["binary_data_size"]
                        if o["name"] == "label":
                            label = int(np.frombuffer(r.content[offset : offset + size], dtype=np.int64)[0])
                        offset += size
            else:
                request = pb.ModelInferRequest(model_name=server.name)
                request.inputs.add(name="input", datatype="FP32", shape=[1, 1, 8, 8])
                request.raw_input_contents.append(sample.tobytes())
                response = await stub.ModelInfer(request, timeout=60)
                names = [o.name for o in response.outputs]
                raw = response.raw_output_contents[names.index("label")]
                label = int(np.frombuffer(raw, dtype=np.int64)[0])
            if label == expected[i]:
                report.correct += 1
            else:
                report.errors.append(f"request {n} kind {kind}: got {label}, expected {expected[i]}")

        async def worker() -> None:
            for n in counter:
                report.sent += 1
                try:
                    await one(n)
                except Exception as exc:  # every failure is recorded and fails the test
                    report.errors.append(f"request {n}: {exc!r}")
                if n % sample_every == 0:
                    report.rss_kib.append(rss_kib(server.proc.pid))

        started = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        report.seconds = time.perf_counter() - started
    return report


def run_soak(models_dir: Path, log_dir: Path, cnn_heldout, total: int) -> SoakReport:
    x, _ = cnn_heldout
    server = start_server(models_dir / "digits-cnn", "digits-cnn", "--max_batch_size", "64", log_dir=log_dir)
    try:
        expected = server.v2_binary({"input": x}).get_output_by_name("label").as_numpy()
        asyncio.run(soak(server, x, expected, total=min(total, 400)))  # warm the process up first
        report = asyncio.run(soak(server, x, expected, total=total))
        print(
            f"\nsoak: {report.sent} requests at concurrency 64 in {report.seconds:.1f}s "
            f"({report.sent / report.seconds:.0f}/s), {report.correct} correct, {len(report.errors)} errors, "
            f"RSS {report.rss_kib[0] / 1024:.0f} -> {report.rss_kib[-1] / 1024:.0f} MiB "
            f"(last/first quarter {report.growth():+.1%})"
        )
        assert report.errors == [], report.errors[:5]
        assert report.correct == report.sent == total
        assert report.growth() < 0.10
        assert server.client.get("/v2/health/ready").status_code == 200
        return report
    finally:
        server.stop()


def test_soak_short(models_dir: Path, log_dir: Path, cnn_heldout) -> None:
    run_soak(models_dir, log_dir, cnn_heldout, total=3000)


@pytest.mark.slow
def test_soak_20000(models_dir: Path, log_dir: Path, cnn_heldout) -> None:
    run_soak(models_dir, log_dir, cnn_heldout, total=20000)
