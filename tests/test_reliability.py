"""Reliability: forward failures, overload, deadlines, departed clients and draining on SIGTERM."""

from __future__ import annotations

import signal
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import grpc
import httpx
import numpy as np
import pytest

from tests.conftest import chaos_model
from tests.serving import Server, start_server, tensor_json
from tests.test_server import sample

POISON = np.full((1, 1, 8, 8), 777, dtype=np.float32)


def chaos_server(models_dir: Path, tmp_path: Path, delay: float, *args: str) -> Server:
    return start_server(chaos_model(models_dir, tmp_path / "chaos", delay), "chaos", *args, log_dir=tmp_path)


def test_a_request_larger_than_max_batch_size_runs_in_forwards_of_at_most_that_size(
    models_dir: Path, tmp_path: Path, cnn_heldout
) -> None:
    """``--max_batch_size`` bounds every forward, a single large request's too: this model runs out
    of (simulated) memory above 8 rows."""
    x, _ = cnn_heldout
    server = start_server(
        chaos_model(models_dir, tmp_path / "chaos", 0.0, max_rows=8), "chaos", "--max_batch_size", "8", log_dir=tmp_path
    )
    try:
        singles = np.stack(
            [
                server.v2_binary({"input": x[i : i + 1]}).get_output_by_name("probabilities").as_numpy()[0]
                for i in range(20)
            ]
        )
        whole = server.v2_binary({"input": x[:20]}).get_output_by_name("probabilities").as_numpy()
        over_grpc = server.grpc({"input": x[:20]}).get_output_by_name("probabilities").as_numpy()
        np.testing.assert_allclose(whole, singles, atol=1e-5)
        np.testing.assert_allclose(over_grpc, singles, atol=1e-5)
    finally:
        server.stop()


def test_a_failing_forward_pass_fails_only_its_batch(models_dir: Path, tmp_path: Path, cnn_heldout) -> None:
    x, y = cnn_heldout
    server = chaos_server(models_dir, tmp_path, 0.0)
    try:
        failed = server.v2_tensor("input", POISON)
        assert failed.status_code == 500
        assert "forward pass failed: MemoryError: CUDA out of memory (simulated)" in failed.json()["error"]
        with pytest.raises(grpc.RpcError) as info:
            server.grpc({"input": POISON})
        assert info.value.code() == grpc.StatusCode.INTERNAL and "out of memory" in info.value.details()
        good = server.v2_binary({"input": x[:50]}).get_output_by_name("label").as_numpy()
        assert (good == y[:50]).mean() >= 0.95
        assert server.client.get("/v2/health/ready").status_code == 200
    finally:
        server.stop()


def test_overload_is_refused_fast_with_429_and_retry_after(models_dir: Path, tmp_path: Path, cnn_heldout) -> None:
    x, _ = cnn_heldout
    server = chaos_server(models_dir, tmp_path, 0.2, "--max_batch_size", "1", "--max_queue_size", "3")
    try:

        def call(i: int) -> tuple[int, float, httpx.Response]:
            started = time.perf_counter()
            response = server.v2_tensor("input", x[i : i + 1])
            return i, time.perf_counter() - started, response

        with ThreadPoolExecutor(16) as pool:
            results = list(pool.map(call, range(16)))
        refused = [(t, r) for _, t, r in results if r.status_code == 429]
        served = [(i, r) for i, _, r in results if r.status_code == 200]
        assert len(refused) + len(served) == 16
        assert refused, "a full queue must refuse"
        assert all(r.headers["retry-after"] == "1" and "retry later" in r.json()["error"] for _, r in refused)
        assert all(t < 1.0 for t, _ in refused), "refusals must be quick, not queued"
        assert len(served) >= 4
        with pytest.raises(grpc.RpcError) as info, ThreadPoolExecutor(12) as pool:
            list(pool.map(lambda i: server.grpc({"input": x[i : i + 1]}), range(12)))
        assert info.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    finally:
        server.stop()


def test_requests_past_the_queue_deadline_get_503(models_dir: Path, tmp_path: Path, cnn_heldout) -> None:
    x, _ = cnn_heldout
    server = chaos_server(models_dir, tmp_path, 0.3, "--max_batch_size", "1", "--max_queue_wait_ms", "400")
    try:
        with ThreadPoolExecutor(8) as pool:
            responses = list(pool.map(lambda i: server.v2_tensor("input", x[i : i + 1]), range(8)))
        codes = sorted(r.status_code for r in responses)
        assert set(codes) == {200, 503}, codes
        timed_out = [r for r in responses if r.status_code == 503]
        assert all("waited" in r.json()["error"] and r.headers["retry-after"] for r in timed_out)
    finally:
        server.stop()


def test_departed_clients_are_dropped_from_the_queue(models_dir: Path, tmp_path: Path, cnn_heldout) -> None:
    x, _ = cnn_heldout
    server = chaos_server(models_dir, tmp_path, 0.3, "--max_batch_size", "1")
    try:
        blocker = threading.Thread(target=server.v2_tensor, args=("input", x[:1]))
        blocker.start()
        time.sleep(0.1)

        def impatient(i: int) -> None:
            with pytest.raises(httpx.ReadTimeout):
                httpx.post(
                    f"{server.url}/v2/models/chaos/infer",
                    json={"inputs": [tensor_json("input", x[i : i + 1])]},
                    timeout=httpx.Timeout(5, read=0.1),
                )

        with ThreadPoolExecutor(10) as pool:
            list(pool.map(impatient, range(1, 11)))

        from kserve.protocol.grpc import grpc_predict_v2_pb2 as pb
        from kserve.protocol.grpc.grpc_predict_v2_pb2_grpc import GRPCInferenceServiceStub

        request = pb.ModelInferRequest(model_name="chaos")
        request.inputs.add(name="input", datatype="FP32", shape=[1, 1, 8, 8])
        request.raw_input_contents.append(x[:1].tobytes())
        with grpc.insecure_channel(server.grpc_url) as channel, pytest.raises(grpc.RpcError) as info:
            GRPCInferenceServiceStub(channel).ModelInfer(request, timeout=0.1)
        assert info.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
        blocker.join()
        time.sleep(0.8)
        text = server.metrics()
        ran = sample(text, "maas_batch_size_sum", model="chaos")
        assert ran <= 3, f"{ran} items ran; departed clients' requests should have been dropped"
        assert sample(text, "maas_requests_total", model="chaos", protocol="v2", status="499") >= 8
        assert server.v2_tensor("input", x[:2]).status_code == 200
    finally:
        server.stop()


def test_sigterm_drains_without_losing_accepted_requests(models_dir: Path, tmp_path: Path, cnn_heldout) -> None:
    """Twelve clients behave as a load balancer's connections would: they send back to back until
    the server answers ``connection: close`` (it is draining), then send no more to it. Every
    request sent, those in flight at SIGTERM included, must get its correct answer."""
    x, _ = cnn_heldout
    server = chaos_server(models_dir, tmp_path, 0.05, "--drain_delay_s", "1.0")
    expected = server.v2_binary({"input": x[:64]}).get_output_by_name("label").as_numpy()
    outcomes: dict[str, int] = {"ok": 0, "wrong": 0, "lost": 0, "told_to_close": 0}
    lost: list[str] = []
    lock = threading.Lock()

    def worker(seed: int) -> None:
        rng = np.random.default_rng(seed)
        with httpx.Client(base_url=server.url, timeout=30) as client:
            while True:
                i = int(rng.integers(64))
                try:
                    r = client.post("/v2/models/chaos/infer", json={"inputs": [tensor_json("input", x[i : i + 1])]})
                except httpx.TransportError as exc:
                    with lock:
                        outcomes["lost"] += 1
                        lost.append(repr(exc))
                    return
                label = (
                    next(o for o in r.json()["outputs"] if o["name"] == "label")["data"][0] if r.is_success else None
                )
                with lock:
                    outcomes["ok" if label == expected[i] else "wrong"] += 1
                    if r.status_code != 200:
                        lost.append(f"{r.status_code} {r.text[:200]}")
                if r.headers.get("connection", "").lower() == "close":
                    with lock:
                        outcomes["told_to_close"] += 1
                    return  # out of rotation, as a load balancer would take it

    threads = [threading.Thread(target=worker, args=(seed,)) for seed in range(12)]
    for t in threads:
        t.start()
    time.sleep(1.0)
    before = outcomes["ok"]
    server.proc.send_signal(signal.SIGTERM)
    signalled = time.monotonic()
    time.sleep(0.2)
    assert httpx.get(f"{server.url}/v2/health/ready", timeout=5).status_code == 503, "not ready at once"
    assert httpx.get(f"{server.url}/v2/models/chaos/ready", timeout=5).status_code == 503
    for t in threads:
        t.join(30)
    code = server.proc.wait(30)
    assert code == 0 and time.monotonic() - signalled < 30
    assert outcomes["lost"] == 0 and outcomes["wrong"] == 0, lost[:5]
    assert outcomes["told_to_close"] == 12, outcomes
    assert outcomes["ok"] > before, "requests in flight at SIGTERM were answered"
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"{server.url}/v2/health/live", timeout=5)
