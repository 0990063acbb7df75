#!/usr/bin/env python
"""V2 binary tensor codec: kserve's stock path against maas's, side by side, in one run.

    python scripts/bench_codec.py [--repeat 50]

Decode = request bytes to a numpy array the model can use; encode = output array to response
bytes. The stock path is kserve 0.21's ``InferRequest.from_bytes`` + ``as_numpy`` and
``InferResponse.to_rest``; maas's is ``predictors.v2.decode_binary`` / ``encode_rest``.
Prints medians and the stock/maas ratio (higher = maas faster).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

SHAPES = [(1, 1, 8, 8), (64, 1, 8, 8), (1, 3, 224, 224), (16, 3, 224, 224)]


def median_ms(fn: Callable[[], object], repeat: int) -> float:
    fn()
    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        fn()
        times.append(time.perf_counter() - started)
    return statistics.median(times) * 1000


def build_parser() -> argparse.ArgumentParser:
    """The benchmark's options; building it has no side effects."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--repeat", type=int, default=50, help="timed runs per shape and path; the median is reported (default 50)"
    )
    return parser


def main() -> None:
    args = build_parser().parse_args()
    print(f"{'shape':>18} {'op':>7} {'kserve ms':>10} {'maas ms':>9} {'ratio':>7}")
    for shape in SHAPES:
        for op, stock, ours in contenders(shape):
            a, b = median_ms(stock, args.repeat), median_ms(ours, args.repeat)
            print(f"{'x'.join(map(str, shape)):>18} {op:>7} {a:10.3f} {b:9.3f} {a / b:7.1f}")


def contenders(shape: tuple[int, ...]) -> list[tuple[str, Callable[[], object], Callable[[], object]]]:
    """(op, stock, maas) callables for one tensor shape, checked to agree."""
    from kserve import InferInput, InferOutput, InferRequest, InferResponse

    from predictors.tensors import Limits
    from predictors.v2 import V2Request, decode_binary, encode_rest

    array = np.random.default_rng(0).random(shape, dtype=np.float32)
    tensor = InferInput("input", list(shape), "FP32")
    tensor.set_data_from_numpy(array, binary_data=True)
    body, json_length = InferRequest("m", [tensor], parameters={"binary_data_output": True}).to_rest()

    def stock_decode() -> np.ndarray:
        return InferRequest.from_bytes(body, json_length, "m").inputs[0].as_numpy()

    def maas_decode() -> np.ndarray:
        return decode_binary(body, str(json_length), Limits(max_elements=1 << 30)).inputs["input"]

    assert np.array_equal(stock_decode(), maas_decode())

    def stock_encode() -> bytes:
        out = InferOutput("probabilities", list(shape), "FP32")
        out.set_data_from_numpy(array, binary_data=True)
        return InferResponse("r", "m", [out], use_binary_outputs=True).to_rest()[0]

    request = V2Request("v2", {}, {}, id="r", binary_output=True)

    def maas_encode() -> bytes:
        return encode_rest("m", request, {"probabilities": array})[0]

    return [("decode", stock_decode, maas_decode), ("encode", stock_encode, maas_encode)]


if __name__ == "__main__":
    main()
