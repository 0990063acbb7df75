"""The floor under maas's REST serving: a trivial ASGI app on the server maas runs on.

A plain ASGI callable (no framework) that reads a V2 JSON request body, parses it with orjson and
answers a small V2-shaped JSON (one output of ten numbers, a few hundred bytes: about what maas
answers for one digit image), served by uvicorn with httptools and the access log off, on the loop
``--loop`` names. Whatever maas spends above this is maas's own (routing, validation, batching,
the model), not the server's or the loop's.

python -m maas_bench.asgi_trivial --http_port P --loop asyncio|uvloop
"""

from __future__ import annotations

import argparse
from typing import Any

import orjson

HEADERS = [(b"content-type", b"application/json")]


def answer(request: Any) -> bytes:
    """A V2 response for ``request``: its first input's first ten numbers as one output."""
    tensor = request["inputs"][0]
    data = tensor["data"][:10]
    return orjson.dumps(
        {
            "model_name": "trivial",
            "model_version": None,
            "id": request.get("id", "trivial"),
            "parameters": None,
            "outputs": [
                {"name": "output-0", "shape": [1, len(data)], "datatype": "FP32", "parameters": None, "data": data}
            ],
        }
    )


async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """POST: parse the body, answer :func:`answer`; anything else (readiness probes): ``{}``."""
    if scope["type"] != "http":  # served with lifespan off: nothing else comes
        return
    chunks = []
    more = True
    while more:
        message = await receive()
        chunks.append(message.get("body", b""))
        more = message.get("more_body", False)
    body = b"{}"
    status = 200
    if scope["method"] == "POST":
        try:
            body = answer(orjson.loads(b"".join(chunks)))
        except (orjson.JSONDecodeError, KeyError, IndexError, TypeError):
            status, body = 400, b'{"error":"not a V2 request"}'
    headers = [*HEADERS, (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


def main() -> None:
    import uvicorn

    parser = argparse.ArgumentParser()
    parser.add_argument("--http_port", type=int, required=True)
    parser.add_argument("--loop", choices=["asyncio", "uvloop"], required=True)
    args = parser.parse_args()
    uvicorn.run(
        app,
        host="127.0.0.1",
        port=args.http_port,
        loop=args.loop,
        http="httptools",
        access_log=False,
        log_level="warning",
        lifespan="off",
    )


if __name__ == "__main__":
    main()
