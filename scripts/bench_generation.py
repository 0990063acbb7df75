#!/usr/bin/env python
"""Text-generation benchmark: output tokens/s, time to first token and time per output token
(p50, p99) at several concurrencies, for three contenders serving the same model:

- ``continuous``: maas's continuous-batching engine, answers streamed (``/openai/v1/completions``);
- ``continuous-v1``: the same engine, V1 answers (not streamed: the engine's effect alone);
- ``static``: maas's static engine (``transformer.generation.engine: static``), V1 answers;
- ``one-at-a-time``: the static engine without batching (``--max_batch_size 1``), V1 answers: the
  naive way to serve ``generate`` (``maas_bench.naive`` has no text-generation model).

    python scripts/bench_generation.py --model_dir .models/tiny-gpt            # c = 1, 8, 32
    python scripts/bench_generation.py --model_dir .models/tiny-gpt --quick    # c = 1, 8

Every request asks for exactly ``max_tokens`` new tokens (``ignore_eos``), half of them SHORT and
half LONG, so that every contender does the same work. Without streaming a client sees its first
token with the whole answer: TTFT is then the request's latency and TPOT its latency over its tokens.
Results go to ``bench-results/generation.json``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

import httpx
import numpy as np
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from maas_bench.servers import quiet_log_config, start

SHORT, LONG = 8, 56  # new tokens (tiny-gpt holds 64 positions: LONG stands in for 128 there)
PROMPT = "three plus four is"


def engine_copy(model_dir: Path, engine: str, folder: Path) -> Path:
    """``model_dir`` with ``transformer.generation.engine`` set (its files linked, not copied)."""
    target = folder / f"{model_dir.name}-{engine}"
    target.mkdir()
    for item in model_dir.iterdir():
        if item.name != "maas.yaml":
            (target / item.name).symlink_to(item.resolve())
    config = yaml.safe_load((model_dir / "maas.yaml").read_text())
    config.setdefault("transformer", {}).setdefault("generation", {})["engine"] = engine
    (target / "maas.yaml").write_text(yaml.safe_dump(config))
    return target


async def one_streamed(client: httpx.AsyncClient, name: str, tokens: int) -> tuple[float, float, int]:
    """(TTFT, TPOT, tokens) of one streamed completion."""
    body = {"model": name, "prompt": PROMPT, "max_tokens": tokens, "ignore_eos": True, "stream": True}
    started = time.perf_counter()
    first = None
    async with client.stream("POST", "/openai/v1/completions", json=body) as response:
        response.raise_for_status()
        async for line in response.aiter_lines():
            if first is None and line.startswith("data: {"):
                first = time.perf_counter()
    end = time.perf_counter()
    assert first is not None
    return first - started, (end - first) / max(1, tokens - 1), tokens


async def one_v1(client: httpx.AsyncClient, name: str, tokens: int) -> tuple[float, float, int]:
    """(TTFT, TPOT, tokens) of one V1 request: the whole answer comes at once."""
    body = {"instances": [PROMPT], "parameters": {"max_new_tokens": tokens, "ignore_eos": True}}
    started = time.perf_counter()
    response = await client.post(f"/v1/models/{name}:predict", json=body)
    response.raise_for_status()
    latency = time.perf_counter() - started
    count = int(response.json()["predictions"][0]["num_tokens"])
    return latency, latency / count, count


async def load(url: str, name: str, streamed: bool, concurrency: int, requests: int) -> dict[str, float]:
    """``requests`` requests from ``concurrency`` clients, alternating SHORT and LONG."""
    results: list[tuple[int, tuple[float, float, int]]] = []
    queue: asyncio.Queue[int] = asyncio.Queue()
    for i in range(requests):
        queue.put_nowait(SHORT if i % 2 else LONG)
    call = one_streamed if streamed else one_v1

    async def client_loop(client: httpx.AsyncClient) -> None:
        while not queue.empty():
            tokens = queue.get_nowait()
            results.append((tokens, await call(client, name, tokens)))

    limits = httpx.Limits(max_connections=concurrency)
    async with httpx.AsyncClient(base_url=url, timeout=600, limits=limits) as client:
        await asyncio.gather(*(call(client, name, SHORT) for _ in range(2)))  # warm
        started = time.perf_counter()
        await asyncio.gather(*(client_loop(client) for _ in range(concurrency)))
        wall = time.perf_counter() - started
    ttft = np.array([r[0] for _, r in results])
    tpot = np.array([r[1] for _, r in results])
    short_ttft = np.array([r[0] for t, r in results if t == SHORT])
    return {
        "output_tokens_per_s": round(sum(r[2] for _, r in results) / wall, 1),
        "ttft_p50_ms": round(float(np.percentile(ttft, 50)) * 1000, 2),
        "ttft_p99_ms": round(float(np.percentile(ttft, 99)) * 1000, 2),
        "tpot_p50_ms": round(float(np.percentile(tpot, 50)) * 1000, 3),
        "tpot_p99_ms": round(float(np.percentile(tpot, 99)) * 1000, 3),
        "short_ttft_p50_ms": round(float(np.percentile(short_ttft, 50)) * 1000, 2),
        "requests": len(results),
        "wall_s": round(wall, 2),
    }


def build_parser() -> argparse.ArgumentParser:
    """The benchmark's options; building it has no side effects."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model_dir", type=Path, required=True, help="a text-generation model directory")
    parser.add_argument("--quick", action="store_true", help="concurrency 1 and 8 only, fewer requests")
    parser.add_argument("--core", type=int, default=None, help="pin every server to this core")
    parser.add_argument(
        "--out", type=Path, default=Path("bench-results/generation.json"), help="where the JSON results go"
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    levels = [1, 8] if args.quick else [1, 8, 32]
    report: dict[str, dict[str, dict[str, float]]] = {}
    folder = Path(tempfile.mkdtemp(prefix="bench-generation-"))
    try:
        log_config = quiet_log_config(folder)
        static = engine_copy(args.model_dir, "static", folder)
        continuous = engine_copy(args.model_dir, "continuous", folder)
        contenders = {
            "continuous": (continuous, True, 64),
            "continuous-v1": (continuous, False, 64),
            "static": (static, False, 64),
            "one-at-a-time": (static, False, 1),
        }
        name = yaml.safe_load((args.model_dir / "maas.yaml").read_text()).get("name") or args.model_dir.name
        for kind, (model_dir, streamed, batch) in contenders.items():
            served = start(kind, model_dir, name, core=args.core, log_config=log_config, max_batch_size=batch)
            try:
                report[kind] = {}
                for concurrency in levels:
                    requests = max(16, concurrency * (4 if args.quick else 8))
                    figures = asyncio.run(load(served.url, name, streamed, concurrency, requests))
                    report[kind][f"c={concurrency}"] = figures
                    print(kind, f"c={concurrency}", json.dumps(figures), flush=True)
            finally:
                served.stop()
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"short": SHORT, "long": LONG, "results": report}, indent=2))
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
