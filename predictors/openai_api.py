"""OpenAI-compatible API under ``/openai/v1``: ``completions`` and ``chat/completions`` for
text-generation models, ``embeddings`` for embedding models, ``models``.

A thin adapter, answered in front of kserve's app (``predictors.front``) as V2 inference is: a
request becomes sequences on the model's continuous engine (the one V1, V2 and gRPC use, with its
limits and metrics), and the engine's chunks become OpenAI answers or, with ``"stream": true``,
Server-Sent Events as tokens are produced. (kserve 0.21's own OpenAI data plane imports its types
from vLLM, which a CPU server does not install.)

Every parameter is honoured or refused with a 400 naming it; errors have OpenAI's body
``{"error": {"message", "type", "param", "code"}}``. A client that goes (mid-stream included) ends
its sequences at the next step.
"""

from __future__ import annotations

import asyncio
import base64
import secrets
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import orjson
from kserve.protocol.dataplane import DataPlane
from starlette.types import Message, Receive, Scope, Send

from predictors import metrics
from predictors.errors import InvalidRequest, NotFound, NotReady, PayloadTooLarge, PredictorError, http_status_of
from predictors.inputs import MAX_SEED
from predictors.metrics import CLIENT_CLOSED, UNKNOWN_MODEL

PREFIX = "/openai/v1"
MAX_CHOICES = 16  # the most ``n`` one request may ask for
ROLES = ("system", "developer", "user", "assistant")

# parameters accepted only at the value that means "off" (their default)
_OFF: dict[str, tuple[Any, ...]] = {
    "presence_penalty": (None, 0, 0.0),
    "frequency_penalty": (None, 0, 0.0),
    "logit_bias": (None, {}),
    "logprobs": (None, False, 0),
    "top_logprobs": (None, 0),
    "echo": (None, False),
    "suffix": (None, ""),
    "best_of": (None, 1),
    "tools": (None, []),
    "tool_choice": (None, "none"),
    "functions": (None, []),
    "function_call": (None, "none"),
    "parallel_tool_calls": (None, False, True),
    "response_format": (None, {"type": "text"}),
    "stream_options": (None,),
    "store": (None, False),
    "metadata": (None, {}),
}
_COMMON = {"model", "max_tokens", "temperature", "top_p", "n", "stream", "stream_options", "stop", "seed", "user"}
_COMMON |= {"ignore_eos"}  # (vLLM's extension: generate exactly max_tokens)
COMPLETION_FIELDS = _COMMON | {"prompt", "presence_penalty", "frequency_penalty", "logit_bias", "logprobs", "echo"}
COMPLETION_FIELDS |= {"suffix", "best_of"}
CHAT_FIELDS = _COMMON | {"messages", "max_completion_tokens", "presence_penalty", "frequency_penalty", "logit_bias"}
CHAT_FIELDS |= {"logprobs", "top_logprobs", "tools", "tool_choice", "functions", "function_call"}
CHAT_FIELDS |= {"parallel_tool_calls", "response_format", "metadata", "store"}
EMBEDDING_FIELDS = {"model", "input", "encoding_format", "dimensions", "user"}


class OpenAIRequestError(InvalidRequest):
    """A 400 that names the parameter at fault."""

    def __init__(self, message: str, param: str | None, code: str = "invalid_value") -> None:
        super().__init__(message)
        self.param = param
        self.code = code


def error_body(exc: BaseException) -> tuple[int, dict[str, Any], dict[str, str]]:
    """Status, OpenAI error body and headers for an error."""
    status = http_status_of(exc)
    message = exc.message if isinstance(exc, PredictorError) else str(exc) or type(exc).__name__
    kinds = {400: "invalid_request_error", 404: "invalid_request_error", 413: "invalid_request_error"}
    kinds |= {429: "rate_limit_error", 503: "service_unavailable"}
    param = getattr(exc, "param", None)
    code = getattr(exc, "code", None) or ("model_not_found" if status == 404 else None)
    headers = {}
    if isinstance(exc, PredictorError) and exc.retry_after:
        headers["retry-after"] = str(max(1, round(exc.retry_after)))
    body = {"error": {"message": message, "type": kinds.get(status, "server_error"), "param": param, "code": code}}
    return status, body, headers


@dataclass
class Choice:
    """One sequence of a request: its prompt, seed and answer so far."""

    index: int
    prompt: list[int]
    seed: int
    text: str = ""
    tokens: int = 0
    finish_reason: str | None = None


class OpenAIFront:
    """The ASGI handler of ``/openai/v1/...`` (see the module docstring)."""

    def __init__(self, dataplane: DataPlane, max_body_bytes: int) -> None:
        self.dataplane = dataplane
        self.max_body_bytes = max_body_bytes
        self.started = int(time.time())

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        route = scope["path"][len(PREFIX) :].rstrip("/")
        method = scope["method"]
        handlers: dict[str, Callable[[Any, dict[str, Any]], Awaitable[Any]]] = {
            "/completions": self.completions,
            "/chat/completions": self.chat,
            "/embeddings": self.embeddings,
        }
        try:
            if method == "GET" and route == "/models":
                await _json(send, 200, {"object": "list", "data": [self._card(m) for m in self._models()]})
            elif method == "GET" and route.startswith("/models/"):
                await _json(send, 200, self._card(self._model(route[len("/models/") :], ready=False)))
            elif method == "POST" and route in handlers:
                await self._inference(handlers[route], scope, receive, send)
            else:
                raise NotFound(f"no OpenAI route {method} {scope['path']}")
        except Exception as exc:
            await _error(send, exc)

    # ---- plumbing -------------------------------------------------------------------------
    def _models(self) -> list[Any]:
        return list(self.dataplane.model_registry.get_models().values())

    def _card(self, model: Any) -> dict[str, Any]:
        return {"id": model.name, "object": "model", "created": self.started, "owned_by": "maas"}

    def _model(self, name: Any, ready: bool = True) -> Any:
        if not isinstance(name, str):
            raise OpenAIRequestError("'model' must be a string naming a served model", "model")
        model = self.dataplane.model_registry.get_model(name)
        if model is None:
            raise NotFound(f"the model '{name}' does not exist; GET {PREFIX}/models lists the served ones")
        if ready and not model.ready:
            raise NotReady(f"model {name} is not ready")
        return model

    async def _inference(
        self, handler: Callable[[Any, dict[str, Any]], Awaitable[Any]], scope: Scope, receive: Receive, send: Send
    ) -> None:
        """Read the body, run ``handler``, answer; counted as protocol ``openai``; a client that goes
        cancels its request, streamed or not."""
        started = time.perf_counter()
        label, status = UNKNOWN_MODEL, 500
        task = asyncio.current_task()
        gone = asyncio.Event()

        async def watch() -> None:
            while True:
                message = await receive()
                if message["type"] == "http.disconnect":
                    gone.set()
                    if task is not None:
                        task.cancel()
                    return

        answering = False

        async def recording_send(message: Message) -> None:
            nonlocal status, answering
            if message["type"] == "http.response.start":
                status, answering = message["status"], True
            await send(message)

        watcher: asyncio.Task[None] | None = None
        try:
            body = await self._read(receive)
            watcher = asyncio.ensure_future(watch())
            name = body.get("model")
            if isinstance(name, str) and self.dataplane.model_registry.get_model(name) is not None:
                label = name
            model = self._model(name)
            answer = await handler(model, body)
            if isinstance(answer, dict):
                await _json(recording_send, 200, answer)
            else:
                await _stream(recording_send, answer)
        except asyncio.CancelledError:
            if not gone.is_set():
                raise
            if task is not None and hasattr(task, "uncancel"):
                task.uncancel()
            status = CLIENT_CLOSED
        except Exception as exc:
            if answering:  # (a stream already under way: it ends here)
                raise
            status = http_status_of(exc)
            await _error(send, exc)
        finally:
            if watcher is not None:
                watcher.cancel()
            metrics.observe_request(label, "openai", status, time.perf_counter() - started)

    async def _read(self, receive: Receive) -> dict[str, Any]:
        chunks, size = [], 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                raise asyncio.CancelledError
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_body_bytes:
                raise PayloadTooLarge(f"request body is over the limit of {self.max_body_bytes} bytes")
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        try:
            body = orjson.loads(b"".join(chunks))
        except orjson.JSONDecodeError as exc:
            raise OpenAIRequestError(f"the request body is not valid JSON: {exc}", None) from None
        if not isinstance(body, dict):
            raise OpenAIRequestError("the request body must be a JSON object", None)
        return body

    # ---- text generation --------------------------------------------------------------------
    async def completions(self, model: Any, body: dict[str, Any]) -> Any:
        _known(body, COMPLETION_FIELDS)
        generator = _generator(model, "completions")
        prompt = body.get("prompt")
        if isinstance(prompt, str):
            prompts: list[Any] = [prompt]
        elif isinstance(prompt, list) and prompt and all(isinstance(p, str) for p in prompt):
            prompts = prompt
        elif isinstance(prompt, list) and prompt and all(_is_int(t) for t in prompt):
            prompts = [prompt]
        elif isinstance(prompt, list) and prompt and all(_token_list(p) for p in prompt):
            prompts = prompt
        else:
            raise OpenAIRequestError("'prompt' must be a string, a list of strings or token lists", "prompt")
        return await self._generate(generator, body, prompts, chat=False)

    async def chat(self, model: Any, body: dict[str, Any]) -> Any:
        _known(body, CHAT_FIELDS)
        generator = _generator(model, "chat/completions")
        messages = body.get("messages")
        if not isinstance(messages, list) or not messages:
            raise OpenAIRequestError("'messages' must be a non-empty list of messages", "messages")
        conversation = [_message(m, i) for i, m in enumerate(messages)]
        template = getattr(generator.tokenizer, "chat_template", None)
        if not template:
            raise OpenAIRequestError(
                f"model {generator.name} has no chat template; use {PREFIX}/completions with a prompt",
                "messages",
                "chat_template_missing",
            )
        try:
            text = generator.tokenizer.apply_chat_template(conversation, tokenize=False, add_generation_prompt=True)
        except Exception as exc:  # (the template's own checks, e.g. role order)
            raise OpenAIRequestError(f"the chat template refused the messages: {exc}", "messages") from None
        if "max_completion_tokens" in body and "max_tokens" not in body:
            body = {**body, "max_tokens": body["max_completion_tokens"]}
        return await self._generate(generator, body, [text], chat=True)

    async def _generate(self, model: Any, body: dict[str, Any], prompts: list[Any], *, chat: bool) -> Any:
        for name, allowed in _OFF.items():
            if name in body and body[name] not in allowed and name != "stream_options":
                raise OpenAIRequestError(f"'{name}' is not supported by this server", name, "unsupported_parameter")
        sampling = model.sampling(_sampling_parameters(body, model.limit))
        n = _int(body, "n", 1, MAX_CHOICES, None) or 1
        stream = body.get("stream", False)
        if not isinstance(stream, bool):
            raise OpenAIRequestError("'stream' must be true or false", "stream")
        usage_in_stream = _stream_options(body, stream)
        stop = _stop(body)
        encoded = []
        for prompt in prompts:
            if isinstance(prompt, str):
                encoded.append(
                    model.encode([prompt], {"max_new_tokens": sampling.max_new_tokens}).inputs[0]["input_ids"]
                )
            else:
                _check_tokens(prompt, model)
                encoded.append(list(prompt[-(model.max_length - sampling.max_new_tokens) :]))
        for ids in encoded:
            model.continuous.check(len(ids), sampling.max_new_tokens)
        seeds = sampling.row_seeds(len(encoded) * n)
        choices = [Choice(i, encoded[i // n], seeds[i]) for i in range(len(encoded) * n)]
        created = int(time.time())
        answer_id = ("chatcmpl-" if chat else "cmpl-") + secrets.token_hex(12)
        head = {"id": answer_id, "created": created, "model": model.name}
        events = _merged(model, choices, sampling, stop)
        if stream:
            return _sse(head, choices, events, chat=chat, usage=usage_in_stream, n=n)
        async for _ in events:
            pass
        if chat:
            out = [
                {
                    "index": c.index,
                    "message": {"role": "assistant", "content": c.text},
                    "logprobs": None,
                    "finish_reason": c.finish_reason,
                }
                for c in choices
            ]
            return {**head, "object": "chat.completion", "choices": out, "usage": _usage(choices, n)}
        out = [{"index": c.index, "text": c.text, "logprobs": None, "finish_reason": c.finish_reason} for c in choices]
        return {**head, "object": "text_completion", "choices": out, "usage": _usage(choices, n)}

    # ---- embeddings ---------------------------------------------------------------------------
    async def embeddings(self, model: Any, body: dict[str, Any]) -> dict[str, Any]:
        _known(body, EMBEDDING_FIELDS)
        if getattr(model.config, "task", None) != "embedding":
            raise OpenAIRequestError(f"model {model.name} does not serve embeddings", "model", "model_not_supported")
        texts = body.get("input")
        if isinstance(texts, str):
            texts = [texts]
        if not isinstance(texts, list) or not texts or not all(isinstance(t, str) for t in texts):
            raise OpenAIRequestError("'input' must be a string or a non-empty list of strings", "input")
        encoding = body.get("encoding_format", "float")
        if encoding not in ("float", "base64"):
            raise OpenAIRequestError("'encoding_format' must be 'float' or 'base64'", "encoding_format")
        answer, _ = await model({"instances": texts}, {"content-type": "application/json"})
        vectors = answer["predictions"]
        dimensions = body.get("dimensions")
        if dimensions is not None and dimensions != len(vectors[0]):
            raise OpenAIRequestError(
                f"'dimensions' must be this model's {len(vectors[0])} (vectors are not shortened)", "dimensions"
            )
        tokens = sum(len(row["input_ids"]) for row in model.tokenize(texts, model.max_length).inputs)
        data = [
            {
                "object": "embedding",
                "index": i,
                "embedding": base64.b64encode(np.asarray(v, dtype="<f4").tobytes()).decode()
                if encoding == "base64"
                else v,
            }
            for i, v in enumerate(vectors)
        ]
        return {
            "object": "list",
            "data": data,
            "model": model.name,
            "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
        }


# ---- request parsing ------------------------------------------------------------------------------
def _known(body: dict[str, Any], fields: set[str]) -> None:
    for name in body:
        if name not in fields:
            raise OpenAIRequestError(f"unrecognized request argument supplied: {name}", name, "unsupported_parameter")


def _generator(model: Any, route: str) -> Any:
    if getattr(model.config, "task", None) != "text-generation":
        raise OpenAIRequestError(f"model {model.name} does not serve {route}", "model", "model_not_supported")
    if getattr(model, "continuous", None) is None:
        raise OpenAIRequestError(
            f"model {model.name} runs the static engine; the OpenAI API needs transformer.generation.engine: "
            "continuous",
            "model",
            "model_not_supported",
        )
    return model


def _is_int(value: Any) -> bool:
    return type(value) is int


def _token_list(value: Any) -> bool:
    return isinstance(value, list) and bool(value) and all(_is_int(t) for t in value)


def _check_tokens(ids: list[int], model: Any) -> None:
    vocabulary = len(model.tokenizer)
    if any(not 0 <= t < vocabulary for t in ids):
        raise OpenAIRequestError(f"'prompt' holds token ids outside this model's vocabulary of {vocabulary}", "prompt")


def _int(body: dict[str, Any], name: str, low: int, high: int, default: int | None) -> int | None:
    value = body.get(name)
    if value is None:
        return default
    if not _is_int(value) or not low <= value <= high:
        raise OpenAIRequestError(f"'{name}' must be an integer from {low} to {high}, got {value!r}", name)
    return int(value)


def _number(body: dict[str, Any], name: str, low: float, high: float, above: bool = False) -> float | None:
    value = body.get(name)
    if value is None:
        return None
    if (
        isinstance(value, bool)
        or not isinstance(value, (int, float))
        or value > high
        or (value <= low if above else value < low)
    ):
        bounds = f"above {low}" if above else f"from {low}"
        raise OpenAIRequestError(f"'{name}' must be a number {bounds} to {high}, got {value!r}", name)
    return float(value)


def _sampling_parameters(body: dict[str, Any], limit: int) -> dict[str, Any]:
    """The request's sampling settings in the model's own parameter names, checked under OpenAI's."""
    parameters: dict[str, Any] = {
        "max_new_tokens": _int(body, "max_tokens", 1, limit, None),
        "temperature": _number(body, "temperature", 0, 2),
        "top_p": _number(body, "top_p", 0, 1, above=True),
        "seed": _int(body, "seed", 0, MAX_SEED, None),
    }
    ignore_eos = body.get("ignore_eos")
    if ignore_eos is not None and not isinstance(ignore_eos, bool):
        raise OpenAIRequestError("'ignore_eos' must be true or false", "ignore_eos")
    parameters["ignore_eos"] = bool(ignore_eos)
    return {name: value for name, value in parameters.items() if value is not None}


def _stream_options(body: dict[str, Any], stream: bool) -> bool:
    options = body.get("stream_options")
    if options is None:
        return False
    if not stream:
        raise OpenAIRequestError("'stream_options' is only allowed with 'stream': true", "stream_options")
    if not isinstance(options, dict) or any(key != "include_usage" for key in options):
        raise OpenAIRequestError("'stream_options' supports only 'include_usage'", "stream_options")
    include = options.get("include_usage", False)
    if not isinstance(include, bool):
        raise OpenAIRequestError("'stream_options.include_usage' must be true or false", "stream_options")
    return include


def _stop(body: dict[str, Any]) -> list[str]:
    stop = body.get("stop")
    if stop is None:
        return []
    if isinstance(stop, str):
        stop = [stop]
    if not isinstance(stop, list) or len(stop) > 4 or not all(isinstance(s, str) and s for s in stop):
        raise OpenAIRequestError("'stop' must be a non-empty string or a list of at most 4", "stop")
    return stop


def _message(message: Any, index: int) -> dict[str, str]:
    where = f"messages[{index}]"
    if not isinstance(message, dict):
        raise OpenAIRequestError(f"{where} must be an object with 'role' and 'content'", where)
    role, content = message.get("role"), message.get("content")
    if role not in ROLES:
        raise OpenAIRequestError(f"{where}.role must be one of {list(ROLES)}, got {role!r}", f"{where}.role")
    if isinstance(content, list):
        parts = [p.get("text") if isinstance(p, dict) and p.get("type") == "text" else None for p in content]
        if any(not isinstance(p, str) for p in parts):
            raise OpenAIRequestError(f"{where}.content: only text parts are supported", f"{where}.content")
        content = "".join(parts)  # type: ignore[arg-type]
    if not isinstance(content, str):
        raise OpenAIRequestError(f"{where}.content must be a string or a list of text parts", f"{where}.content")
    extra = set(message) - {"role", "content", "name"}
    if extra:
        name = sorted(extra)[0]
        raise OpenAIRequestError(f"{where}.{name} is not supported", f"{where}.{name}", "unsupported_parameter")
    return {"role": "system" if role == "developer" else role, "content": content}


# ---- answers ----------------------------------------------------------------------------------------
def _usage(choices: list[Choice], n: int) -> dict[str, int]:
    prompt = sum(len(c.prompt) for c in choices[::n])
    completion = sum(c.tokens for c in choices)
    return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}


async def _merged(
    model: Any, choices: list[Choice], sampling: Any, stop: list[str]
) -> AsyncIterator[tuple[Choice, Any]]:
    """Every choice's chunks as they come, ``(choice, chunk)``; closing it ends every sequence."""
    queue: asyncio.Queue[tuple[Choice, Any] | BaseException | None] = asyncio.Queue()

    async def pump(choice: Choice) -> None:
        chunks = model.stream(choice.prompt, sampling, choice.seed, stop)
        try:
            async for chunk in chunks:
                choice.text += chunk.text
                choice.tokens = chunk.num_tokens
                choice.finish_reason = chunk.finish_reason
                await queue.put((choice, chunk))
            await queue.put(None)
        except Exception as exc:
            await queue.put(exc)
        finally:
            await chunks.aclose()

    tasks = [asyncio.ensure_future(pump(c)) for c in choices]
    try:
        remaining = len(tasks)
        while remaining:
            item = await queue.get()
            if item is None:
                remaining -= 1
            elif isinstance(item, BaseException):
                raise item
            else:
                yield item
    finally:
        for task in tasks:
            task.cancel()


async def _sse(
    head: dict[str, Any],
    choices: list[Choice],
    events: AsyncIterator[tuple[Choice, Any]],
    *,
    chat: bool,
    usage: bool,
    n: int,
) -> AsyncIterator[bytes]:
    """Server-Sent Events: a chunk per new text (chat: a first one with the role), the finish
    reasons, the usage when asked, then ``[DONE]``."""
    kind = "chat.completion.chunk" if chat else "text_completion"
    extra = {"usage": None} if usage else {}

    def event(index: int, text: str | None, finish: str | None, role: bool = False) -> bytes:
        if chat:
            delta: dict[str, Any] = (
                {"role": "assistant", "content": ""} if role else ({"content": text} if text else {})
            )
            choice = {"index": index, "delta": delta, "logprobs": None, "finish_reason": finish}
        else:
            choice = {"index": index, "text": text or "", "logprobs": None, "finish_reason": finish}
        return b"data: " + orjson.dumps({**head, "object": kind, "choices": [choice], **extra}) + b"\n\n"

    if chat:
        for c in choices:
            yield event(c.index, None, None, role=True)
    try:
        async for choice, chunk in events:
            if chunk.text or chunk.finish_reason:
                yield event(choice.index, chunk.text, chunk.finish_reason)
    except PredictorError as exc:  # the answer has started: the error goes in the stream
        yield b"data: " + orjson.dumps(error_body(exc)[1]) + b"\n\n"
    else:
        if usage:
            yield (
                b"data: " + orjson.dumps({**head, "object": kind, "choices": [], "usage": _usage(choices, n)}) + b"\n\n"
            )
    yield b"data: [DONE]\n\n"


async def _json(send: Send, status: int, body: dict[str, Any], headers: dict[str, str] | None = None) -> None:
    payload = orjson.dumps(body)
    head = [(b"content-type", b"application/json"), (b"content-length", str(len(payload)).encode())]
    head += [(k.encode(), v.encode()) for k, v in (headers or {}).items()]
    await send({"type": "http.response.start", "status": status, "headers": head})
    await send({"type": "http.response.body", "body": payload})


async def _stream(send: Send, chunks: AsyncIterator[bytes]) -> None:
    # x-accel-buffering: nginx-based ingresses pass the stream through unbuffered
    head = [(b"content-type", b"text/event-stream"), (b"cache-control", b"no-cache"), (b"x-accel-buffering", b"no")]
    await send({"type": "http.response.start", "status": 200, "headers": head})
    try:
        async for chunk in chunks:
            await send({"type": "http.response.body", "body": chunk, "more_body": True})
    finally:
        await chunks.aclose()  # type: ignore[attr-defined]
    await send({"type": "http.response.body", "body": b""})


async def _error(send: Send, exc: Exception) -> None:
    from predictors.front import error_response

    error_response(exc)  # (logged as maas's other refusals are)
    status, body, headers = error_body(exc)
    await _json(send, status, body, headers)
