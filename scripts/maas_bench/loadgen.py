"""The load generator: a separate process that sends one prepared request over and over.

Closed loop: ``concurrency`` workers each send a request, wait for its answer, and send the
next, for ``duration`` seconds after a short warm-up; the answers that arrive in that window
count. HTTP uses a minimal keep-alive HTTP/1.1 client on asyncio streams (one connection per
worker; far cheaper than a general client, so the generator is not the bottleneck); gRPC uses
``grpc.aio`` on one channel. Prints one JSON line:
requests, errors, items per second and latency percentiles.

    python -m maas_bench.loadgen --url http://127.0.0.1:8080/v2/models/m/infer --body req.bin \\
        --header 'inference-header-content-length: 123' --concurrency 8 --duration 5 --items 1
    python -m maas_bench.loadgen --grpc-target 127.0.0.1:8081 --body req.pb --concurrency 8 --duration 5
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from dataclasses import dataclass, field
from urllib.parse import urlsplit

import numpy as np


@dataclass
class Tally:
    latencies: list[float] = field(default_factory=list)
    errors: int = 0
    first_error: str = ""


class HTTPConnection:
    """One keep-alive HTTP/1.1 connection that POSTs a fixed request and reads the answer."""

    def __init__(self, url: str, body: bytes, headers: list[str]) -> None:
        parts = urlsplit(url)
        self.host, self.port = parts.hostname or "127.0.0.1", parts.port or 80
        head = [f"POST {parts.path} HTTP/1.1", f"host: {parts.netloc}", f"content-length: {len(body)}"]
        if not any(h.lower().startswith("content-type:") for h in headers):
            head.append("content-type: application/json")
        self.request = ("\r\n".join(head + headers) + "\r\n\r\n").encode() + body
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def send(self) -> int:
        if self.writer is None:
            self.reader, self.writer = await asyncio.open_connection(self.host, self.port)
        assert self.reader is not None
        self.writer.write(self.request)
        status_line = await self.reader.readline()
        if not status_line:
            raise ConnectionError("server closed the connection")
        status = int(status_line.split()[1])
        length, close, chunked = 0, False, False
        while True:
            line = await self.reader.readline()
            if line in (b"\r\n", b""):
                break
            name, _, value = line.decode("latin-1").partition(":")
            name = name.strip().lower()
            if name == "content-length":
                length = int(value)
            elif name == "transfer-encoding" and "chunked" in value.lower():
                chunked = True
            elif name == "connection" and value.strip().lower() == "close":
                close = True
        if chunked:
            while size := int((await self.reader.readline()).split(b";")[0], 16):
                await self.reader.readexactly(size + 2)
            await self.reader.readline()
        else:
            await self.reader.readexactly(length)
        if close:
            self.writer.close()
            self.writer = None
        return status


async def run_http(args: argparse.Namespace, body: bytes) -> Tally:
    tally = Tally()
    connections = [HTTPConnection(args.url, body, args.header) for _ in range(args.concurrency)]
    await _run(args, tally, [c.send for c in connections])
    return tally


async def run_grpc(args: argparse.Namespace, body: bytes) -> Tally:
    import grpc
    from kserve.protocol.grpc import grpc_predict_v2_pb2 as pb
    from kserve.protocol.grpc.grpc_predict_v2_pb2_grpc import GRPCInferenceServiceStub

    request = pb.ModelInferRequest.FromString(body)
    options = [("grpc.max_send_message_length", 1 << 30), ("grpc.max_receive_message_length", 1 << 30)]
    tally = Tally()
    async with grpc.aio.insecure_channel(args.grpc, options=options) as channel:
        stub = GRPCInferenceServiceStub(channel)

        async def send() -> int:
            await stub.ModelInfer(request, timeout=60)
            return 200

        await _run(args, tally, [send] * args.concurrency)
    return tally


async def _run(args: argparse.Namespace, tally: Tally, senders: list) -> None:  # type: ignore[type-arg]
    """Workers send back to back until the window ends. Only answers that arrive inside the window
    [warm-up end, warm-up end + duration] count, so requests still in flight at either edge (as
    many as the concurrency, each as long as the latency) inflate no contender's rate."""
    opens = time.perf_counter() + args.warmup
    closes = opens + args.duration

    async def worker(send) -> None:  # type: ignore[no-untyped-def]
        while time.perf_counter() < closes:
            started = time.perf_counter()
            try:
                status = await send()
                ok = status == 200
            except Exception as exc:
                ok, status = False, 0
                tally.first_error = tally.first_error or repr(exc)
            finished = time.perf_counter()
            if opens <= finished <= closes:
                if ok:
                    tally.latencies.append(finished - started)
                else:
                    tally.errors += 1
                    tally.first_error = tally.first_error or f"HTTP {status}"

    tasks = [asyncio.ensure_future(worker(s)) for s in senders]
    await asyncio.sleep(max(0.0, closes - time.perf_counter()))
    for task in tasks:  # answers after the window do not count: do not wait for them
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    target = parser.add_mutually_exclusive_group(required=True)
    target.add_argument("--url", help="HTTP POST target")
    target.add_argument("--grpc-target", dest="grpc", help="gRPC host:port (ModelInfer)")
    parser.add_argument("--body", required=True, help="file with the request body (HTTP) or ModelInferRequest bytes")
    parser.add_argument("--header", action="append", default=[], help="extra HTTP header line")
    parser.add_argument("--concurrency", type=int, default=1)
    parser.add_argument("--duration", type=float, default=5.0)
    parser.add_argument("--warmup", type=float, default=0.5)
    parser.add_argument("--items", type=int, default=1, help="items per request, for items/s")
    args = parser.parse_args()
    with open(args.body, "rb") as f:
        body = f.read()
    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass
    tally = asyncio.run(run_grpc(args, body) if args.grpc else run_http(args, body))
    lat = np.array(tally.latencies) * 1000
    count = len(lat)
    print(
        json.dumps(
            {
                "requests": count,
                "errors": tally.errors,
                "first_error": tally.first_error,
                "items_per_s": count * args.items / args.duration,
                "requests_per_s": count / args.duration,
                "p50_ms": float(np.percentile(lat, 50)) if count else None,
                "p99_ms": float(np.percentile(lat, 99)) if count else None,
            }
        )
    )


if __name__ == "__main__":
    main()
