"""The benchmark's own parts. The load generator counts what it should: the answers that arrive
inside its window. And servers get the batch size a user would read off raw's throughput curve.

A server that answers every request after exactly ``DELAY`` seconds serves ``concurrency / DELAY``
requests per second under a closed loop; the generator must say so however the window's edges
fall (it once also counted the answers that arrived after the window, overstating slow servers).
"""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[1]
DELAY = 0.25


class SlowHandler(BaseHTTPRequestHandler):
    """Answers each POST after ``DELAY`` seconds, on a keep-alive HTTP/1.1 connection."""

    protocol_version = "HTTP/1.1"

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers["content-length"]))
        time.sleep(DELAY)
        self.wfile.write(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n{}")  # one write: no Nagle wait

    def log_message(self, format: str, *args: object) -> None:
        pass


class SlowServer(ThreadingHTTPServer):
    request_queue_size = 64  # the default backlog of 5 drops connection attempts, which retry after 1 s


@pytest.fixture
def slow_server() -> Iterator[int]:
    server = SlowServer(("127.0.0.1", 0), SlowHandler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server.server_address[1]
    server.shutdown()
    server.server_close()


def test_only_answers_inside_the_window_count(slow_server: int, tmp_path: Path) -> None:
    body = tmp_path / "body.json"
    body.write_text("{}")
    concurrency, duration = 8, 1.2
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "maas_bench.loadgen",
            "--url",
            f"http://127.0.0.1:{slow_server}/infer",
            "--body",
            str(body),
            "--concurrency",
            str(concurrency),
            "--duration",
            str(duration),
            "--warmup",
            "0.1",
        ],
        cwd=ROOT / "scripts",
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    stats = json.loads(out.stdout.strip().splitlines()[-1])
    assert stats["errors"] == 0
    assert abs(stats["p50_ms"] - 1000 * DELAY) < 50, stats
    # Little's law: a closed loop of 8 workers at this latency serves 8 / latency requests per second;
    # counting the answers that arrive after the window too read 25% more here (40 for 32)
    expected = concurrency / (stats["p50_ms"] / 1000)
    assert abs(stats["requests_per_s"] - expected) <= 0.12 * expected, json.dumps(stats)


def test_servers_take_the_largest_batch_that_runs_as_fast_as_the_best() -> None:
    from maas_bench.raw import serving_batch

    flat = {1: 28_000.0, 8: 50_500.0, 32: 53_000.0, 64: 52_900.0, 128: 52_500.0, 256: 52_800.0}
    assert serving_batch(flat) == 256  # within 5% of the best: a server amortises more per batch
    falling = {1: 7_000.0, 32: 33_000.0, 64: 36_000.0, 128: 39_000.0, 256: 41_000.0, 512: 33_000.0}
    assert serving_batch(falling) == 256
    assert serving_batch({8: 100.0, 16: 90.0}) == 8


def test_the_grpc_floor_is_what_a_do_nothing_server_leaves_of_raw() -> None:
    from maas_bench.report import grpc_floor

    x64 = {"workload": "digits-cnn-x64", "transport": "grpc", "concurrency": 64, "items_per_request": 64}
    trivial = {**x64, "contender": "trivial", "items_per_s": 320_000.0}
    served = {**x64, "contender": "maas", "items_per_s": 40_000.0}
    one_image = {**served, "workload": "digits-cnn", "items_per_s": 4_000.0}
    summary = {
        "load_generator_capacity": [trivial],
        "raw": {"digits-cnn": {"items_per_s": 64_000.0}},
        "extras": [one_image, served],
    }
    floor = grpc_floor(summary)
    assert floor is not None
    assert floor["ms_per_request"] == pytest.approx(0.2)  # 5,000 requests/s
    assert floor["raw_forward_ms"] == pytest.approx(1.0)
    assert floor["max_maas_over_raw"] == pytest.approx(1.0 / 1.2)
    assert floor["maas_over_raw"] == pytest.approx(0.625)
    assert floor["share_of_max"] == pytest.approx(0.625 * 1.2)
    assert grpc_floor({**summary, "extras": []})["share_of_max"] is None  # type: ignore[index]
    assert grpc_floor({"load_generator_capacity": [], "raw": {}}) is None


def _row(contender: str, transport: str, concurrency: int, items_per_s: float) -> dict[str, Any]:
    """One synthetic one-image digits-cnn result, p50 and p99 following from the rate."""
    return {
        "workload": "digits-cnn",
        "contender": contender,
        "transport": transport,
        "concurrency": concurrency,
        "items_per_request": 1,
        "items_per_s": items_per_s,
        "p50_ms": 1000 * concurrency / items_per_s,
        "p99_ms": 2000 * concurrency / items_per_s,
        "requests": int(items_per_s),
        "errors": 0,
        "first_error": "",
    }


def test_maas_as_a_user_runs_it_sits_beside_the_tuned_maas() -> None:
    """The defaults and the access log, each against what it is compared with: the defaults against
    the tuned maas (what the tuning buys), the access log against the defaults (what it costs)."""
    from maas_bench.report import as_a_user

    rows = [
        _row("maas", "v2-binary", 64, 6_000.0),
        _row("maas-defaults", "v2-binary", 64, 5_400.0),
        _row("maas-access-log", "v2-binary", 64, 4_860.0),
        _row("noop", "v2-binary", 64, 7_000.0),
        _row("maas", "grpc", 64, 3_000.0),
        _row("maas-defaults", "grpc", 64, 3_000.0),  # no access-log run: no entry
    ]
    [entry] = as_a_user(rows)
    assert {k: entry[k] for k in ("workload", "transport", "concurrency")} == {
        "workload": "digits-cnn",
        "transport": "v2-binary",
        "concurrency": 64,
    }
    assert entry["defaults_over_maas"] == pytest.approx(0.9)
    assert entry["access_log_over_defaults"] == pytest.approx(0.9)
    assert entry["maas-access-log"] == {
        "items_per_s": 4_860.0,
        "p50_ms": pytest.approx(64_000 / 4_860),
        "p99_ms": pytest.approx(128_000 / 4_860),
    }
    assert set(entry) >= {"maas", "maas-defaults", "maas-access-log"}
    assert as_a_user([_row("maas", "grpc", 1, 1_000.0)]) == []


def test_the_report_prints_and_keeps_the_defaults_and_the_access_logs_cost() -> None:
    from maas_bench.cli import Plan, Result
    from maas_bench.report import build, table

    plan = Plan([1, 64], 0.8, 0.2, 1, 0, 1, "cpu")
    results = [
        Result(**_row(kind, transport, c, rate * (1 if c == 64 else 0.25)))
        for transport in ("v2-json", "v2-binary", "grpc")
        for c in (1, 64)
        for kind, rate in (("maas", 6_000.0), ("maas-defaults", 5_700.0), ("maas-access-log", 5_130.0))
    ]
    machine = {
        "cores": 2,
        "cpu": "test",
        "python": "3",
        "versions": {},
        "placement": {"server_and_raw_core": 0, "load_generator_core": 1},
        "loop": "closed",
        "device": "cpu",
    }
    summary = build(machine, plan, results, [], [], {}, {}, 1.0)
    assert len(summary["as_a_user"]) == 6
    assert summary["ratios"] and all(r["transport"] for r in summary["ratios"])  # the tuned maas, as before
    top = [e for e in summary["as_a_user"] if e["concurrency"] == 64]
    assert [e["defaults_over_maas"] for e in top] == pytest.approx([0.95] * 3)
    assert [e["access_log_over_defaults"] for e in top] == pytest.approx([0.9] * 3)
    json.dumps(summary, default=str)  # it goes to the JSON file as it is
    printed = table(summary)
    assert "maas as a user runs it" in printed
    assert "the access log's cost at c=64 (1 - log on/defaults): v2-json 10.0%, v2-binary 10.0%, grpc 10.0%" in printed
    below = printed.split("maas as a user runs it", 1)[1].splitlines()
    line = next(x for x in below if x.split()[:3] == ["digits-cnn", "grpc", "64"])
    assert line.split()[3::3][:3] == ["6000", "5700", "5130"]  # tuned, defaults, log on: items/s
    assert line.split()[-2:] == ["0.95", "0.90"]


def test_the_floor_sets_maas_and_noop_over_a_trivial_asgi_app_on_uvloop() -> None:
    """The trivial ASGI app on uvicorn + httptools (asyncio and uvloop) is the floor; maas, its
    defaults and noop are each reported over the uvloop one, at every concurrency both ran."""
    from maas_bench.report import floor

    rows = [
        _row("trivial-asyncio", "v2-json", 64, 8_000.0),
        _row("trivial-uvloop", "v2-json", 64, 10_000.0),
        _row("maas", "v2-json", 64, 5_500.0),
        _row("maas-defaults", "v2-json", 64, 4_500.0),
        _row("noop", "v2-json", 64, 6_500.0),
        _row("trivial-uvloop", "v2-json", 1, 4_000.0),  # nothing else at c=1: ratios are None
        _row("maas", "v2-binary", 64, 9_000.0),  # another transport: no floor
    ]
    top, one = floor(rows)
    assert (top["concurrency"], one["concurrency"]) == (64, 1)
    assert top["maas_over_trivial_uvloop"] == pytest.approx(0.55)
    assert top["maas_defaults_over_trivial_uvloop"] == pytest.approx(0.45)
    assert top["noop_over_trivial_uvloop"] == pytest.approx(0.65)
    assert top["trivial-asyncio"] == {
        "items_per_s": 8_000.0,
        "p50_ms": pytest.approx(8.0),
        "p99_ms": pytest.approx(16.0),
    }
    assert one["maas"] is None and one["maas_over_trivial_uvloop"] is None
    assert one["trivial-uvloop"]["p50_ms"] == pytest.approx(0.25)
    assert floor([_row("maas", "v2-json", 64, 5_500.0)]) == []  # no trivial-uvloop run: no floor


def test_the_floors_bars_hold_or_miss_on_maas_defaults_and_noop_at_the_top_concurrency() -> None:
    from maas_bench.cli import Plan, Result
    from maas_bench.report import build, table

    plan = Plan([1, 64], 0.8, 0.2, 1, 0, 1, "cpu")
    rates = {
        "trivial-asyncio": 8_000.0,
        "trivial-uvloop": 10_000.0,
        "maas": 5_500.0,
        "maas-defaults": 4_500.0,  # misses 0.5
        "noop": 6_500.0,  # holds 0.6
    }
    results = [
        Result(**_row(kind, "v2-json", c, rate / (4 if c == 1 else 1))) for c in (1, 64) for kind, rate in rates.items()
    ]
    machine = {
        "cores": 2,
        "cpu": "test",
        "python": "3",
        "versions": {},
        "placement": {"server_and_raw_core": 0, "load_generator_core": 1},
        "loop": "closed",
        "device": "cpu",
    }
    summary = build(machine, plan, results, [], [], {}, {}, 1.0)
    assert len(summary["floor"]) == 2
    bars = {b["bar"]: b for b in summary["bars"]}
    defaults = bars["digits-cnn v2-json c=64: maas-defaults/trivial-uvloop >= 0.5"]
    noop = bars["digits-cnn v2-json c=64: noop/trivial-uvloop >= 0.6"]
    assert (defaults["value"], defaults["holds"]) == (pytest.approx(0.45), False)
    assert (noop["value"], noop["holds"]) == (pytest.approx(0.65), True)
    assert not any("c=1" in name and "trivial" in name for name in bars)  # the bars are at the top concurrency
    json.dumps(summary, default=str)
    printed = table(summary)
    assert "MISSES  digits-cnn v2-json c=64: maas-defaults/trivial-uvloop >= 0.5  (measured 0.450)" in printed
    assert "HOLDS  digits-cnn v2-json c=64: noop/trivial-uvloop >= 0.6  (measured 0.650)" in printed
    below = printed.split("the floor: a trivial ASGI app", 1)[1].splitlines()
    line = next(x for x in below if x.split()[:2] == ["digits-cnn", "64"])
    cells = line.split()
    assert cells[2::3][:5] == ["8000", "10000", "5500", "4500", "6500"]  # asyncio, uvloop, maas, defaults, noop
    assert cells[-3:] == ["0.55", "0.45", "0.65"]  # maas, defaults, noop over trivial-uvloop


def test_the_trivial_asgi_app_parses_the_v2_json_body_and_answers_a_small_json() -> None:
    import asyncio

    import numpy as np
    import orjson
    from maas_bench.asgi_trivial import app
    from maas_bench.workloads import Workload, request

    image = np.arange(64, dtype=np.float32).reshape(1, 8, 8) / 64
    body, _ = request(Workload("digits-cnn", ROOT, "digits-cnn", "input", image, "image"), "v2-json")

    def call(method: str, payload: bytes) -> tuple[int, bytes]:
        chunks = [payload[:100], payload[100:]]  # the body in two messages, as a server may send it
        sent: list[dict[str, Any]] = []

        async def receive() -> dict[str, Any]:
            return {"type": "http.request", "body": chunks.pop(0), "more_body": bool(chunks)}

        async def send(message: dict[str, Any]) -> None:
            sent.append(message)

        asyncio.run(app({"type": "http", "method": method}, receive, send))
        head, answer = sent
        assert dict(head["headers"])[b"content-length"] == str(len(answer["body"])).encode()
        return head["status"], answer["body"]

    status, answer = call("POST", body)
    assert status == 200 and 100 < len(answer) < 1000  # about what maas answers for one image
    [output] = orjson.loads(answer)["outputs"]
    assert output["shape"] == [1, 10] and output["data"] == pytest.approx(image.ravel()[:10].tolist())
    assert call("POST", b'{"inputs": []}')[0] == 400
    assert call("GET", b"") == (200, b"{}")  # the readiness probe
