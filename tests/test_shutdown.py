"""SIGTERM with clients that connect straight to the pod (no load balancer) and open a new
connection for every request: each request is answered, correctly, or its connection is refused;
none is reset after it was sent (a listener closed with connections in its accept queue resets
them)."""

from __future__ import annotations

import collections
import json
import signal
import socket
import sys
import threading
import time
from pathlib import Path

import grpc
import pytest

from predictors.listen import accept_queue_length, listen, listening_sockets, refuse_new_connections
from tests.serving import start_server, tensor_json

HTTP_CLIENTS = 16
GRPC_CLIENTS = 4


def http_request(port: int, request: bytes) -> tuple[str, bytes]:
    """One HTTP request on a new connection: ``("refused", b"")``, ``("answered <status>", body)``
    or, after the connection was made, ``("reset: ...", b"")``."""
    with socket.socket() as sock:
        sock.settimeout(30)
        try:
            sock.connect(("127.0.0.1", port))
        except ConnectionRefusedError:
            return "refused", b""
        try:
            sock.sendall(request)
            data = b""
            while chunk := sock.recv(65536):
                data += chunk
        except OSError as exc:  # reset, broken pipe, timeout
            return f"reset: {exc!r}", b""
    head, _, body = data.partition(b"\r\n\r\n")
    if not head.startswith(b"HTTP/1.1 "):
        return f"reset: {len(data)} bytes, no answer", b""
    return f"answered {int(head.split()[1])}", body


def grpc_request(url: str, request: object) -> tuple[str, list[bytes]]:
    """One V2 gRPC ``ModelInfer`` on a new connection (a channel of its own, not sharing gRPC's
    process-wide connections): ``("refused", [])``, ``("answered OK", outputs)`` or the failure."""
    from kserve.protocol.grpc.grpc_predict_v2_pb2_grpc import GRPCInferenceServiceStub

    with grpc.insecure_channel(url, options=[("grpc.use_local_subchannel_pool", 1)]) as channel:
        try:
            response = GRPCInferenceServiceStub(channel).ModelInfer(request, timeout=30)
        except grpc.RpcError as exc:
            if exc.code() == grpc.StatusCode.UNAVAILABLE and "Connection refused" in (exc.details() or ""):
                return "refused", []
            return f"{exc.code().name}: {exc.details()}", []
    return "answered OK", [bytes(b) for b in response.raw_output_contents]


@pytest.mark.skipif(sys.platform != "linux", reason="socket filters and TCP_INFO are Linux's")
def test_a_listener_refusing_new_connections_keeps_its_queue() -> None:
    """What draining relies on: with the filter on, new connection attempts go unanswered (not
    reset), the queue can still be accepted and counted, and once the listener closes new attempts
    are refused."""
    listener = listen("127.0.0.1", 0, "--http_port")
    port = listener.getsockname()[1]
    queued = [socket.create_connection(("127.0.0.1", port), timeout=5) for _ in range(3)]
    late = socket.socket()
    try:
        for i, client in enumerate(queued):
            client.sendall(b"request %d" % i)
        assert accept_queue_length(listener) == 3
        assert refuse_new_connections(listener)
        (found,) = listening_sockets(port)  # (a duplicate, as gRPC's are found)
        with found:
            assert accept_queue_length(found) == 3
        late.settimeout(0.3)
        with pytest.raises(TimeoutError):
            late.connect(("127.0.0.1", port))  # its SYN dropped: retried later, not reset
        accepted = [listener.accept()[0] for _ in queued]
        assert sorted(conn.recv(64) for conn in accepted) == [b"request 0", b"request 1", b"request 2"]
        assert accept_queue_length(listener) == 0
        for conn in accepted:
            conn.close()
    finally:
        listener.close()
        late.close()
        for client in queued:
            client.close()
    with pytest.raises(ConnectionRefusedError), socket.socket() as after:
        after.connect(("127.0.0.1", port))


@pytest.mark.parametrize("drain_delay", ["0", "1"])
def test_sigterm_with_clients_connecting_anew_resets_none(
    models_dir: Path, tmp_path: Path, cnn_heldout, drain_delay: str
) -> None:
    """16 HTTP and 4 gRPC clients send back to back, each request on a new connection, through
    SIGTERM, the drain delay (the chart's 5 s stands as 1 s) and the server's exit."""
    from kserve.protocol.grpc import grpc_predict_v2_pb2 as pb

    x, _ = cnn_heldout
    server = start_server(
        models_dir / "digits-cnn",
        "digits-cnn",
        "--drain_delay_s",
        drain_delay,
        log_dir=tmp_path,
        env={"MAAS_CACHE_DIR": str(tmp_path / "cache")},
    )
    body = json.dumps({"inputs": [tensor_json("input", x[:4])]}).encode()
    http = (
        f"POST /v2/models/digits-cnn/infer HTTP/1.1\r\nhost: 127.0.0.1\r\ncontent-type: application/json\r\n"
        f"content-length: {len(body)}\r\nconnection: close\r\n\r\n"
    ).encode() + body
    infer = pb.ModelInferRequest(model_name="digits-cnn")
    infer.inputs.add(name="input", datatype="FP32", shape=[4, 1, 8, 8])
    infer.raw_input_contents.append(x[:4].tobytes())
    outcome, answer = http_request(server.http_port, http)
    assert outcome == "answered 200", answer
    expected_http = json.loads(answer)["outputs"]
    outcome, expected_grpc = grpc_request(server.grpc_url, infer)
    assert outcome == "answered OK", outcome

    tally: collections.Counter[str] = collections.Counter()
    failures: list[str] = []
    lock = threading.Lock()
    done = threading.Event()
    signalled = [float("inf")]

    def record(kind: str, outcome: str, correct: bool) -> None:
        with lock:
            if outcome == "refused":
                tally[f"{kind} refused"] += 1
            elif outcome.startswith("answered") and correct:
                tally[f"{kind} answered"] += 1
                if time.monotonic() > signalled[0]:
                    tally[f"{kind} answered after SIGTERM"] += 1
            else:
                failures.append(f"{kind}: {outcome}")

    def http_client() -> None:
        while not done.is_set():
            outcome, answer = http_request(server.http_port, http)
            correct = outcome == "answered 200" and json.loads(answer)["outputs"] == expected_http
            record("http", outcome, correct)
            if outcome == "refused":
                time.sleep(0.05)

    def grpc_client() -> None:
        while not done.is_set():
            outcome, outputs = grpc_request(server.grpc_url, infer)
            record("grpc", outcome, outputs == expected_grpc)
            if outcome == "refused":
                time.sleep(0.05)

    clients = [threading.Thread(target=http_client) for _ in range(HTTP_CLIENTS)]
    clients += [threading.Thread(target=grpc_client) for _ in range(GRPC_CLIENTS)]
    try:
        for client in clients:
            client.start()
        time.sleep(0.7)
        signalled[0] = time.monotonic()
        server.proc.send_signal(signal.SIGTERM)
        code = server.proc.wait(30)
        time.sleep(0.2)  # clients meet the closed ports
    finally:
        done.set()
        for client in clients:
            client.join(40)
        server.stop()
    assert code == 0, server.logs()[-3000:]
    assert not failures, (collections.Counter(failures).most_common(5), tally)
    for kind in ("http", "grpc"):
        assert tally[f"{kind} answered after SIGTERM"] > 0, tally
        assert tally[f"{kind} refused"] > 0, tally
