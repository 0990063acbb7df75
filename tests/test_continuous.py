"""The continuous-batching engine for text generation (tiny GPT), over real sockets: sequences join
and leave the running batch at every step, answers do not depend on the batch, the KV-cache bound
makes a burst wait (never fail), and a departed client frees its place."""

from __future__ import annotations

import json
import shutil
import socket
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import yaml

from tests.serving import Server, start_server

PROMPTS = ["three plus", "nine minus two is", "", "héllo ✓ 日本", "one plus one is two. four minus", "eight"]
KV_BOUND = 256  # the bounded server's --max_kv_tokens: five sequences of 50 tokens


def with_engine(source: Path, target: Path, engine: str) -> Path:
    """A copy of ``source`` whose maas.yaml sets ``transformer.generation.engine``."""
    shutil.copytree(source, target)
    path = target / "maas.yaml"
    config = yaml.safe_load(path.read_text())
    config.setdefault("transformer", {}).setdefault("generation", {})["engine"] = engine
    path.write_text(yaml.safe_dump(config))
    return target


@pytest.fixture(scope="module")
def static_server(models_dir: Path, log_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    model = with_engine(models_dir / "tiny-gpt", tmp_path_factory.mktemp("static") / "tiny-gpt", "static")
    server = start_server(model, "tiny-gpt", "--max_batch_size", "64", log_dir=log_dir)
    yield server
    server.stop()


@pytest.fixture(scope="module")
def bounded_server(models_dir: Path, log_dir: Path) -> Iterator[Server]:
    """Continuous engine with a KV cache of ``KV_BOUND`` tokens."""
    server = start_server(
        models_dir / "tiny-gpt", "tiny-gpt", "--max_kv_tokens", str(KV_BOUND), "--max_batch_size", "64", log_dir=log_dir
    )
    yield server
    server.stop()


def generate(server: Server, prompts: list[str], **parameters: object) -> list[dict]:  # type: ignore[type-arg]
    response = server.v1({"instances": prompts, "parameters": parameters})
    assert response.status_code == 200, response.text
    return response.json()["predictions"]  # type: ignore[no-any-return]


def metric(server: Server, name: str) -> float:
    """The value of one of the model's series (0 when absent)."""
    for line in server.metrics().splitlines():
        if line.startswith(name + "{") and f'model="{server.name}"' in line:
            return float(line.rsplit(" ", 1)[1])
    return 0.0


def wait_for(condition, timeout: float = 10.0) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.005)


@pytest.mark.parametrize(
    "parameters",
    [{"temperature": 0, "max_new_tokens": 12}, {"temperature": 1.5, "top_p": 0.9, "seed": 7, "max_new_tokens": 12}],
    ids=["greedy", "sampled"],
)
def test_continuous_equals_static(gpt_server: Server, static_server: Server, parameters: dict) -> None:  # type: ignore[type-arg]
    """The same request and seed give the same texts with either engine (same per-row streams)."""
    assert generate(gpt_server, PROMPTS, **parameters) == generate(static_server, PROMPTS, **parameters)


def test_same_seed_same_text_batched_or_alone(gpt_server: Server) -> None:
    """A request's texts do not depend on the sequences running beside it."""
    cases = [
        ([p], {"seed": i, "temperature": 1.0 + (i % 2) / 2, "max_new_tokens": 3 + 3 * (i % 4)})
        for i, p in enumerate(PROMPTS * 3)
    ]
    alone = [generate(gpt_server, prompts, **parameters) for prompts, parameters in cases]
    with ThreadPoolExecutor(8) as pool:
        together = list(pool.map(lambda case: generate(gpt_server, case[0], **case[1]), cases))
    assert together == alone


def test_a_short_request_beside_a_long_one_returns_first(gpt_server: Server) -> None:
    """The long request is running when the short one arrives; the short one leaves as soon as it is done."""
    done: dict[str, float] = {}

    def long() -> None:
        answers = generate(gpt_server, ["one plus"] * 48, max_new_tokens=60, ignore_eos=True, temperature=1.0, seed=1)
        assert all(a["num_tokens"] == 60 and a["finish_reason"] == "length" for a in answers)
        done["long"] = time.monotonic()

    thread = threading.Thread(target=long)
    thread.start()
    wait_for(lambda: metric(gpt_server, "maas_sequences_running") >= 48)
    short = generate(gpt_server, ["two plus"], max_new_tokens=2, temperature=0)
    done["short"] = time.monotonic()
    thread.join()
    assert short[0]["num_tokens"] <= 2
    assert done["short"] < done["long"]


def test_ignore_eos_generates_exactly_max_new_tokens(gpt_server: Server, static_server: Server) -> None:
    for server in (gpt_server, static_server):
        answers = generate(server, PROMPTS, max_new_tokens=20, ignore_eos=True, temperature=0)
        assert [a["num_tokens"] for a in answers] == [20] * len(PROMPTS)


def test_kv_bound_holds_under_a_burst(bounded_server: Server) -> None:
    """A burst larger than the KV cache waits for room: the waiting gauge rises, the cache stays within
    its bound, and every request is answered."""
    seen = {"waiting": 0.0, "kv": 0.0}
    stop = threading.Event()

    def watch() -> None:
        while not stop.is_set():
            seen["waiting"] = max(seen["waiting"], metric(bounded_server, "maas_sequences_waiting"))
            seen["kv"] = max(seen["kv"], metric(bounded_server, "maas_kv_cache_tokens"))

    watcher = threading.Thread(target=watch)
    watcher.start()
    try:
        with ThreadPoolExecutor(24) as pool:
            responses = list(
                pool.map(
                    lambda i: bounded_server.v1(
                        {"instances": ["two plus"], "parameters": {"max_new_tokens": 40, "ignore_eos": True, "seed": i}}
                    ),
                    range(48),
                )
            )
    finally:
        stop.set()
        watcher.join()
    assert [r.status_code for r in responses] == [200] * 48
    assert all(r.json()["predictions"][0]["num_tokens"] == 40 for r in responses)
    assert seen["waiting"] > 0
    assert 0 < seen["kv"] <= KV_BOUND
    assert metric(bounded_server, "maas_kv_cache_capacity_tokens") == KV_BOUND


def test_a_sequence_that_can_never_fit_is_refused(models_dir: Path, log_dir: Path) -> None:
    server = start_server(models_dir / "tiny-gpt", "tiny-gpt", "--max_kv_tokens", "40", log_dir=log_dir)
    try:
        response = server.v1({"instances": ["one plus"], "parameters": {"max_new_tokens": 40}})
        assert response.status_code == 400
        assert "--max_kv_tokens" in response.json()["error"]
        assert generate(server, ["one plus"], max_new_tokens=8, temperature=0)[0]["num_tokens"] <= 8
    finally:
        server.stop()


def test_a_departed_client_frees_its_place(bounded_server: Server) -> None:
    """The client goes while its texts generate (four at a time in this KV cache): they leave the
    batch at the next step, the waiting ones with them."""
    texts, tokens = 32, 60
    generated = metric(bounded_server, "maas_generated_tokens_total")
    body = json.dumps({"instances": ["one plus"] * texts, "parameters": {"max_new_tokens": tokens, "ignore_eos": True}})
    request = (
        f"POST /v1/models/{bounded_server.name}:predict HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n"
        f"content-length: {len(body)}\r\n\r\n{body}"
    ).encode()
    with socket.create_connection(("127.0.0.1", bounded_server.http_port)) as sock:
        sock.sendall(request)
        wait_for(lambda: metric(bounded_server, "maas_sequences_running") > 0)
    wait_for(
        lambda: metric(bounded_server, "maas_sequences_running") + metric(bounded_server, "maas_sequences_waiting") == 0
    )
    assert metric(bounded_server, "maas_generated_tokens_total") - generated < texts * tokens / 2
    assert generate(bounded_server, ["two plus"], max_new_tokens=3, temperature=0)[0]["num_tokens"] <= 3


def test_a_sequence_waiting_past_the_deadline_gets_503(models_dir: Path, log_dir: Path) -> None:
    """One sequence at a time fits this KV cache: the request's later texts wait past
    --max_queue_wait_ms and the request gets 503 with Retry-After; the engine goes on serving."""
    server = start_server(
        models_dir / "tiny-gpt", "tiny-gpt", "--max_kv_tokens", "64", "--max_queue_wait_ms", "20", log_dir=log_dir
    )
    try:
        body = {"instances": ["one plus"] * 4, "parameters": {"max_new_tokens": 60, "ignore_eos": True}}
        response = server.v1(body)
        assert response.status_code == 503, response.text
        assert response.headers["retry-after"] == "1"
        assert "--max_queue_wait_ms" in response.json()["error"]
        wait_for(lambda: metric(server, "maas_sequences_running") + metric(server, "maas_sequences_waiting") == 0)
        assert generate(server, ["one plus"], max_new_tokens=4, temperature=0)[0]["num_tokens"] <= 4
    finally:
        server.stop()
