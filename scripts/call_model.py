"""Call one maas model over V1 REST, V2 REST and V2 gRPC, and fail loudly if any answer is wrong.

Each protocol is checked for readiness, then one inference is sent over each, built from the
model's own V2 metadata, so the same call works for every family:

- a generative model (an input named `latent`) or a model with no inputs: no inputs, and the
  parameters `num_samples: 1, seed: 0` (the model generates from a seed);
- otherwise, with a numeric input: the first one, zeros, its -1 dimensions 1 for the batch and 8
  for the others; a sequence model's `lengths` input comes along with each row's length;
- otherwise the first BYTES input with one text, "hello" (transformers).

On a failure it prints the server's own message (the `error` of a REST answer, a gRPC status's
details) and exits 1. Through an ingress, `--host` sets the Host header that selects the model.
Used by scripts/kind_e2e.sh and the README's "Deploy on Kubernetes":

    python scripts/call_model.py --model NAME --http http://127.0.0.1:8080 --grpc 127.0.0.1:8081

REST needs only the standard library; gRPC needs the `kserve` package (a project dependency).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import sys
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from typing import Any

Json = dict[str, Any]

TEXT = "hello"
FREE_DIM = 8  # the size of a -1 dimension other than the batch's
SAMPLES: Json = {"num_samples": 1, "seed": 0}
NUMPY_TYPES = {
    "BOOL": "bool",
    "UINT8": "uint8",
    "UINT16": "uint16",
    "UINT32": "uint32",
    "UINT64": "uint64",
    "INT8": "int8",
    "INT16": "int16",
    "INT32": "int32",
    "INT64": "int64",
    "FP16": "float16",
    "FP32": "float32",
    "FP64": "float64",
    "BYTES": "object",
}


class CallError(Exception):
    """A failed call, with the server's own message."""


@dataclass
class Tensor:
    """One V2 input: name, datatype, shape and its elements, flat."""

    name: str
    datatype: str
    shape: list[int]
    data: list[Any]

    def v2(self) -> Json:
        return {"name": self.name, "datatype": self.datatype, "shape": self.shape, "data": self.data}

    def rows(self) -> list[Any]:
        """The elements as nested lists, one per batch row (V1 instances)."""

        def nest(flat: list[Any], shape: list[int]) -> list[Any]:
            if len(shape) == 1:
                return list(flat)
            step = math.prod(shape[1:])
            return [nest(flat[i * step : (i + 1) * step], shape[1:]) for i in range(shape[0])]

        return nest(self.data, self.shape) if len(self.shape) > 1 else list(self.data)


@dataclass
class Request:
    """The one inference sent over every protocol."""

    inputs: list[Tensor] = field(default_factory=list)
    parameters: Json = field(default_factory=dict)

    def v2(self) -> Json:
        body: Json = {"inputs": [t.v2() for t in self.inputs]}
        if self.parameters:
            body["parameters"] = self.parameters
        return body

    def v1(self) -> Json:
        body: Json = {}
        if self.inputs:  # the main input's rows; lengths are implicit in V1
            body["instances"] = self.inputs[0].rows()
        if self.parameters:
            body["parameters"] = self.parameters
        return body

    def describe(self) -> str:
        if not self.inputs:
            return "no inputs, " + ", ".join(f"{k}={v}" for k, v in self.parameters.items())
        return ", ".join(f"{t.name} {t.datatype} {t.shape}" for t in self.inputs)


def filler(datatype: str) -> Any:
    if datatype == "BYTES":
        return TEXT
    if datatype == "BOOL":
        return False
    return 0.0 if datatype.startswith(("FP", "BF")) else 0


def build_request(metadata: Json, parameters: Json | None = None) -> Request:
    """The inference request for a model with this V2 metadata (see the module's docstring)."""
    specs = metadata.get("inputs") or []
    extra = parameters or {}
    if not specs or any(s["name"] == "latent" for s in specs):
        return Request([], {**SAMPLES, **extra})
    numeric = [s for s in specs if s["datatype"] != "BYTES" and s["name"] != "lengths"]
    if numeric:
        spec = numeric[0]
        shape = [(1 if i == 0 else FREE_DIM) if dim < 0 else dim for i, dim in enumerate(spec["shape"])]
        tensors = [Tensor(spec["name"], spec["datatype"], shape, [filler(spec["datatype"])] * math.prod(shape))]
        lengths = next((s for s in specs if s["name"] == "lengths" and s["datatype"] != "BYTES"), None)
        if lengths is not None and len(shape) >= 2:
            tensors.append(Tensor("lengths", lengths["datatype"], [shape[0]], [shape[1]] * shape[0]))
        return Request(tensors, dict(extra))
    spec = specs[0]
    return Request([Tensor(spec["name"], spec["datatype"], [1], [TEXT])], dict(extra))


def v2_request(metadata: Json) -> Json:
    """The V2 REST body `build_request` makes for this metadata."""
    return build_request(metadata).v2()


def server_message(body: bytes) -> str:
    """The `error` (or FastAPI's `detail`) of an error answer, else its text."""
    text = body.decode(errors="replace").strip()
    try:
        decoded = json.loads(text)
    except ValueError:
        return text or "(empty answer)"
    if isinstance(decoded, dict):
        for key in ("error", "detail", "message"):
            if decoded.get(key):
                return str(decoded[key])
    return text


class Rest:
    """JSON over HTTP to one base URL, with an optional Host header (an ingress's virtual host)."""

    def __init__(self, base: str, host: str | None, timeout: float) -> None:
        self.base = base.rstrip("/")
        self.headers = {"Content-Type": "application/json", **({"Host": host} if host else {})}
        self.timeout = timeout

    def __call__(self, path: str, body: Json | None = None) -> Json:
        """GET `path` (or POST `body`); a non-2xx answer raises CallError with the server's message."""
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(self.base + path, data=data, headers=self.headers)
        what = f"{'POST' if body is not None else 'GET'} {path}"
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:
                decoded: Json = json.loads(response.read() or b"{}")
        except urllib.error.HTTPError as error:
            raise CallError(f"{what}: HTTP {error.code}: {server_message(error.read())}") from None
        except (urllib.error.URLError, OSError) as error:
            reason = getattr(error, "reason", error)
            raise CallError(f"{what}: cannot reach {self.base}: {reason}") from None
        return decoded


def call_rest(rest: Rest, model: str, parameters: Json | None = None) -> Request:
    """V1 status and predict, V2 readiness, metadata and inference; returns the request sent."""
    status = rest(f"/v1/models/{model}")
    if status.get("ready") not in (True, "True"):
        raise CallError(f"V1 /v1/models/{model} is not ready: {status}")
    rest("/v2/health/ready")
    rest(f"/v2/models/{model}/ready")
    request = build_request(rest(f"/v2/models/{model}"), parameters)
    predictions = rest(f"/v1/models/{model}:predict", request.v1()).get("predictions")
    if not predictions:
        raise CallError(f"V1 predict of {model} returned no predictions")
    print(f"v1   {model}: ready, {len(predictions)} prediction(s)")
    outputs = rest(f"/v2/models/{model}/infer", request.v2()).get("outputs") or []
    if not outputs:
        raise CallError(f"V2 inference of {model} returned no outputs")
    print(f"v2   {model}: ready, {request.describe()} -> {', '.join(o['name'] for o in outputs)}")
    return request


def import_kserve() -> Any:
    """kserve parses the command line when first imported (its model server's flags, which
    `--grpc` would be an ambiguous prefix of): import it with an empty one, and quiet its
    logger, which logs every failed call with a traceback (we print the status instead)."""
    import logging

    argv = sys.argv
    sys.argv = argv[:1]
    try:
        import kserve
    finally:
        sys.argv = argv
    logging.getLogger("kserve").setLevel(logging.CRITICAL)
    return kserve


def call_grpc(target: str, model: str, request: Request, timeout: float) -> None:
    """V2 gRPC with kserve's InferenceGRPCClient: server and model readiness, then the same inference."""
    import grpc
    import numpy as np

    kserve = import_kserve()

    def tensor(t: Tensor) -> Any:
        infer_input = kserve.InferInput(t.name, t.shape, t.datatype)
        if t.datatype == "BYTES":
            array = np.array([str(v).encode() for v in t.data], dtype=np.object_).reshape(t.shape)
        else:
            array = np.array(t.data, dtype=NUMPY_TYPES[t.datatype]).reshape(t.shape)
        infer_input.set_data_from_numpy(array, binary_data=True)
        return infer_input

    async def call() -> list[str]:
        client = kserve.InferenceGRPCClient(target, timeout=timeout, retries=0)
        try:
            if not await client.is_server_ready():
                raise CallError(f"gRPC server at {target} is not ready")
            if not await client.is_model_ready(model):
                raise CallError(f"gRPC model {model} is not ready")
            infer = kserve.InferRequest(
                model, [tensor(t) for t in request.inputs], parameters=request.parameters or None
            )
            answer = await client.infer(infer)
            return [o.name for o in answer.outputs]
        finally:
            await client.close()

    try:
        outputs = asyncio.run(call())
    except grpc.RpcError as error:
        code, details = error.code(), error.details()
        raise CallError(f"gRPC {getattr(code, 'name', code)} from {target}: {details}") from None
    if not outputs:
        raise CallError(f"gRPC inference of {model} returned no outputs")
    print(f"grpc {model}: ready, {request.describe()} -> {', '.join(outputs)}")


def json_object(text: str) -> Json:
    try:
        value = json.loads(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(f"not JSON: {error}") from None
    if not isinstance(value, dict):
        raise argparse.ArgumentTypeError("must be a JSON object")
    return value


def build_parser() -> argparse.ArgumentParser:
    """The script's options; building it has no side effects."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", required=True, help="model (InferenceService) name")
    parser.add_argument("--http", required=True, help="base URL of the HTTP port")
    parser.add_argument("--grpc", help="host:port of the gRPC port; omit to skip gRPC")
    parser.add_argument(
        "--host",
        help="Host header of the REST calls, for an ingress that routes by host (KServe's "
        "status.url host, e.g. NAME-NAMESPACE.example.com); omit to send the URL's",
    )
    parser.add_argument(
        "--parameters",
        type=json_object,
        default={},
        help="extra inference parameters as a JSON object, sent over every protocol, e.g. '{\"top_k\": 3}'",
    )
    parser.add_argument("--timeout", type=float, default=60.0, help="seconds each call may take (default: 60)")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        request = call_rest(Rest(args.http, args.host, args.timeout), args.model, args.parameters)
        if args.grpc:
            call_grpc(args.grpc, args.model, request, args.timeout)
    except CallError as error:
        print(f"FAILED {args.model}: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
