"""The OpenAI-compatible API (``/openai/v1``) driven by the official ``openai`` client, sync and
async, streamed and not, over real sockets: tiny-chat for chat, tiny-gpt for completions, MiniLM
for embeddings."""

from __future__ import annotations

import asyncio
import base64
import json
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import openai
import pytest

from tests.serving import Server, start_server

QUESTION = [{"role": "user", "content": "what is three plus four?"}]


@pytest.fixture(scope="session")
def chat_dir(models_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The reference chat model: the built one, else built here (``scripts/reference_chat.py``)."""
    built = models_dir / "tiny-chat"
    if (built / "maas.yaml").is_file():
        return built
    import torch
    from reference_chat import tiny_chat

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        out = tmp_path_factory.mktemp("chat") / "tiny-chat"
        tiny_chat(out)
    finally:
        torch.set_num_threads(threads)
    return out


@pytest.fixture(scope="module")
def chat_server(chat_dir: Path, log_dir: Path) -> Iterator[Server]:
    server = start_server(chat_dir, "tiny-chat", "--max_batch_size", "16", log_dir=log_dir)
    yield server
    server.stop()


def client(server: Server) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{server.url}/openai/v1", api_key="unused", max_retries=0, timeout=60)


def async_client(server: Server) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(base_url=f"{server.url}/openai/v1", api_key="unused", max_retries=0, timeout=60)


def metric(server: Server, name: str, **labels: str) -> float:
    wanted = [f'{k}="{v}"' for k, v in {"model": server.name, **labels}.items()]
    total = 0.0
    for line in server.metrics().splitlines():
        if line.startswith(name + "{") and all(w in line for w in wanted):
            total += float(line.rsplit(" ", 1)[1])
    return total


def wait_for(condition, timeout: float = 10.0) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.01)


# ---- models -------------------------------------------------------------------------------------
def test_models_lists_the_served_model(chat_server: Server) -> None:
    models = client(chat_server).models.list()
    assert [m.id for m in models.data] == ["tiny-chat"]
    assert client(chat_server).models.retrieve("tiny-chat").id == "tiny-chat"


# ---- chat -----------------------------------------------------------------------------------------
def test_chat_answers_with_usage(chat_server: Server) -> None:
    answer = client(chat_server).chat.completions.create(model="tiny-chat", messages=QUESTION, temperature=0)
    assert answer.object == "chat.completion"
    assert answer.choices[0].message.role == "assistant"
    assert answer.choices[0].message.content == "three plus four is seven."
    assert answer.choices[0].finish_reason == "stop"
    usage = answer.usage
    assert usage is not None and usage.completion_tokens > 0 and usage.prompt_tokens > 0
    assert usage.total_tokens == usage.prompt_tokens + usage.completion_tokens


def test_chat_streamed_equals_not_streamed(chat_server: Server) -> None:
    options = {"model": "tiny-chat", "messages": QUESTION, "temperature": 1.5, "seed": 11, "max_tokens": 20}
    whole = client(chat_server).chat.completions.create(**options)  # type: ignore[call-overload]
    chunks = list(
        client(chat_server).chat.completions.create(**options, stream=True, stream_options={"include_usage": True})  # type: ignore[call-overload]
    )
    assert chunks[0].choices[0].delta.role == "assistant"
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == whole.choices[0].message.content
    assert [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason] == [
        whole.choices[0].finish_reason
    ]
    assert chunks[-1].choices == [] and chunks[-1].usage == whole.usage
    assert len([c for c in chunks if c.choices and c.choices[0].delta.content]) > 1, "tokens come one by one"


def test_async_chat_streamed_and_not(chat_server: Server) -> None:
    async def run() -> tuple[str, str]:
        api = async_client(chat_server)
        options = {"model": "tiny-chat", "messages": QUESTION, "temperature": 1.0, "seed": 3, "n": 2}
        whole = await api.chat.completions.create(**options)  # type: ignore[call-overload]
        pieces: dict[int, str] = {0: "", 1: ""}
        async for chunk in await api.chat.completions.create(**options, stream=True):  # type: ignore[call-overload]
            for choice in chunk.choices:
                pieces[choice.index] += choice.delta.content or ""
        await api.close()
        assert [c.message.content for c in whole.choices] == [pieces[0], pieces[1]]
        return pieces[0], pieces[1]

    assert asyncio.run(run()) == asyncio.run(run())


def test_chat_without_a_template_is_400(gpt_server: Server) -> None:
    with pytest.raises(openai.BadRequestError) as caught:
        client(gpt_server).chat.completions.create(model="tiny-gpt", messages=QUESTION)
    assert caught.value.body["param"] == "messages"  # type: ignore[index]
    assert "chat template" in caught.value.body["message"]  # type: ignore[index]


def test_disconnect_mid_stream_frees_the_slot(chat_server: Server) -> None:
    """The client reads the first event and goes: its eight sequences leave at the next step."""
    generated = metric(chat_server, "maas_generated_tokens_total")
    request = {"model": "tiny-chat", "prompt": "what", "max_tokens": 60, "ignore_eos": True, "stream": True, "n": 8}
    body = json.dumps(request).encode()
    head = (
        f"POST /openai/v1/completions HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n"
        f"content-length: {len(body)}\r\n\r\n"
    ).encode()
    with socket.create_connection(("127.0.0.1", chat_server.http_port)) as sock:
        sock.sendall(head + body)
        received = b""
        while b"data: " not in received:  # the first event: the sequences are running
            received += sock.recv(65536)
    wait_for(lambda: metric(chat_server, "maas_sequences_running") == 0)
    assert metric(chat_server, "maas_generated_tokens_total") - generated < 8 * 60 / 2
    wait_for(lambda: metric(chat_server, "maas_requests_total", protocol="openai", status="499") >= 1)


# ---- completions ------------------------------------------------------------------------------------
def test_completions_equal_v1_and_stream(gpt_server: Server) -> None:
    prompts = ["three plus four is", "nine minus"]
    options = {"model": "tiny-gpt", "prompt": prompts, "temperature": 1.2, "seed": 5, "max_tokens": 8}
    whole = client(gpt_server).completions.create(**options)  # type: ignore[call-overload]
    assert [c.index for c in whole.choices] == [0, 1]
    v1 = gpt_server.v1({"instances": prompts, "parameters": {"temperature": 1.2, "seed": 5, "max_new_tokens": 8}})
    assert [c.text for c in whole.choices] == [p["text"] for p in v1.json()["predictions"]]
    assert whole.usage is not None and whole.usage.completion_tokens == sum(
        p["num_tokens"] for p in v1.json()["predictions"]
    )
    texts = ["", ""]
    for chunk in client(gpt_server).completions.create(**options, stream=True):  # type: ignore[call-overload]
        for choice in chunk.choices:
            texts[choice.index] += choice.text
    assert texts == [c.text for c in whole.choices]


def test_completion_stop_strings(gpt_server: Server) -> None:
    whole = client(gpt_server).completions.create(model="tiny-gpt", prompt="three plus four", temperature=0)
    text = whole.choices[0].text
    assert " is" in text
    stopped = client(gpt_server).completions.create(
        model="tiny-gpt", prompt="three plus four", temperature=0, stop=" is"
    )
    assert stopped.choices[0].text == text[: text.index(" is")]
    assert stopped.choices[0].finish_reason == "stop"


def test_openai_requests_are_counted(gpt_server: Server) -> None:
    before = metric(gpt_server, "maas_requests_total", protocol="openai", status="200")
    client(gpt_server).completions.create(model="tiny-gpt", prompt="one plus", max_tokens=2)
    assert metric(gpt_server, "maas_requests_total", protocol="openai", status="200") == before + 1


# ---- bad requests -----------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("route", "body", "status", "param"),
    [
        ("completions", {"model": "nope", "prompt": "x"}, 404, None),
        ("chat/completions", {"model": "tiny-chat", "messages": []}, 400, "messages"),
        (
            "chat/completions",
            {"model": "tiny-chat", "messages": [{"role": "robot", "content": "x"}]},
            400,
            "messages[0].role",
        ),
        (
            "chat/completions",
            {"model": "tiny-chat", "messages": [{"role": "user", "content": 3}]},
            400,
            "messages[0].content",
        ),
        ("completions", {"model": "tiny-chat", "prompt": "x", "max_tokens": 0}, 400, "max_tokens"),
        ("completions", {"model": "tiny-chat", "prompt": "x", "max_tokens": 64}, 400, "max_tokens"),
        ("completions", {"model": "tiny-chat", "prompt": "x", "temperature": "hot"}, 400, "temperature"),
        ("completions", {"model": "tiny-chat", "prompt": "x", "top_p": 0}, 400, "top_p"),
        ("completions", {"model": "tiny-chat", "prompt": "x", "n": 0}, 400, "n"),
        ("completions", {"model": "tiny-chat", "prompt": "x", "seed": -1}, 400, "seed"),
        ("completions", {"model": "tiny-chat", "prompt": 7}, 400, "prompt"),
        ("completions", {"model": "tiny-chat", "prompt": "x", "logprobs": 2}, 400, "logprobs"),
        ("completions", {"model": "tiny-chat", "prompt": "x", "echo": True}, 400, "echo"),
        ("completions", {"model": "tiny-chat", "prompt": "x", "presence_penalty": 0.5}, 400, "presence_penalty"),
        ("completions", {"model": "tiny-chat", "prompt": "x", "frequency_penalty": 1}, 400, "frequency_penalty"),
        ("completions", {"model": "tiny-chat", "prompt": "x", "best_of": 3}, 400, "best_of"),
        ("completions", {"model": "tiny-chat", "prompt": "x", "stop": 5}, 400, "stop"),
        (
            "completions",
            {"model": "tiny-chat", "prompt": "x", "stream_options": {"include_usage": True}},
            400,
            "stream_options",
        ),
        ("completions", {"model": "tiny-chat", "prompt": "x", "temprature": 1}, 400, "temprature"),
        (
            "chat/completions",
            {"model": "tiny-chat", "messages": QUESTION, "tools": [{"type": "function"}]},
            400,
            "tools",
        ),
        ("chat/completions", {"model": "tiny-chat", "messages": QUESTION, "logprobs": True}, 400, "logprobs"),
        ("embeddings", {"model": "tiny-chat", "input": "x"}, 400, "model"),
        ("completions", {"model": 5, "prompt": "x"}, 400, "model"),
        ("chat/completions", {"model": "tiny-chat", "messages": QUESTION, "store": True}, 400, "store"),
    ],
)
def test_bad_requests_get_openai_errors(
    chat_server: Server, route: str, body: dict, status: int, param: str | None
) -> None:  # type: ignore[type-arg]
    response = chat_server.client.post(f"/openai/v1/{route}", json=body)
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert error["param"] == param and error["message"]
    assert chat_server.client.get("/v2/health/ready").status_code == 200


def test_bad_request_through_the_client(chat_server: Server) -> None:
    with pytest.raises(openai.NotFoundError):
        client(chat_server).chat.completions.create(model="gpt-4", messages=QUESTION)
    with pytest.raises(openai.BadRequestError) as caught:
        client(chat_server).chat.completions.create(model="tiny-chat", messages=QUESTION, max_tokens=0)
    assert caught.value.body["param"] == "max_tokens"  # type: ignore[index]
    response = chat_server.client.post(
        "/openai/v1/completions", content=b"{not json", headers={"content-type": "application/json"}
    )
    assert response.status_code == 400 and response.json()["error"]["type"] == "invalid_request_error"


# ---- embeddings ---------------------------------------------------------------------------------------
def test_embeddings_equal_v2(minilm_server: Server) -> None:
    texts = ["A cat sits on the mat.", "héllo ✓ 日本"]
    v2 = minilm_server.v2([{"name": "text", "datatype": "BYTES", "shape": [2], "data": texts}]).json()
    expected = np.asarray(v2["outputs"][0]["data"], dtype=np.float32).reshape(2, -1)
    answer = client(minilm_server).embeddings.create(model=minilm_server.name, input=texts, encoding_format="float")
    assert [d.index for d in answer.data] == [0, 1]
    assert np.array_equal(np.asarray([d.embedding for d in answer.data], dtype=np.float32), expected)
    assert answer.usage.prompt_tokens > 0
    raw = httpx.post(
        f"{minilm_server.url}/openai/v1/embeddings",
        json={"model": minilm_server.name, "input": texts[0], "encoding_format": "base64"},
    ).json()
    decoded = np.frombuffer(base64.b64decode(raw["data"][0]["embedding"]), dtype="<f4")
    assert np.array_equal(decoded, expected[0])
    single = client(minilm_server).embeddings.create(model=minilm_server.name, input=texts[1])
    assert np.allclose(single.data[0].embedding, expected[1], atol=1e-6)


def test_a_stream_is_server_sent_events_that_proxies_pass_through(chat_server: Server) -> None:
    body = {"model": "tiny-chat", "messages": QUESTION, "temperature": 0, "stream": True}
    with chat_server.client.stream("POST", "/openai/v1/chat/completions", json=body) as answer:
        assert answer.status_code == 200
        assert answer.headers["content-type"].startswith("text/event-stream")
        assert answer.headers["x-accel-buffering"] == "no"  # nginx-based ingresses do not buffer it
        events = [line for line in answer.iter_lines() if line]
    assert events[-1] == "data: [DONE]" and all(e.startswith("data: ") for e in events)
