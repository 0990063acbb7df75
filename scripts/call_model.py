"""Call one maas model over V1 REST, V2 REST and V2 gRPC, and fail loudly if any answer is wrong.

Each protocol is checked for readiness, then one V2 inference is sent whose inputs are built
from the model's own V2 metadata (zeros for numbers, "hello" for BYTES, -1 dimensions as 1),
so the same call works for every family. Used by scripts/kind_e2e.sh after a port-forward:

    python scripts/call_model.py --model NAME --http http://127.0.0.1:8080 --grpc 127.0.0.1:8081

REST needs only the standard library; gRPC needs the `kserve` package (a project dependency).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import urllib.request
from typing import Any

Json = dict[str, Any]

FILLERS: dict[str, Any] = {"BYTES": "hello", "BOOL": False}


def v2_request(metadata: Json) -> Json:
    """A V2 inference request with one filler value per element of every input in `metadata`."""
    inputs = []
    for spec in metadata["inputs"]:
        shape = [1 if dim < 0 else dim for dim in spec["shape"]]
        datatype = spec["datatype"]
        filler = FILLERS.get(datatype, 0.0 if datatype.startswith(("FP", "BF")) else 0)
        inputs.append(
            {
                "name": spec["name"],
                "shape": shape,
                "datatype": datatype,
                "data": [filler] * math.prod(shape),
            }
        )
    return {"inputs": inputs}


def http_json(url: str, body: Json | None = None, timeout: float = 60.0) -> Json:
    """GET (or POST `body` as JSON) and decode the JSON answer; any non-2xx status raises."""
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=timeout) as response:
        decoded: Json = json.loads(response.read() or b"{}")
    return decoded


def call_rest(base: str, model: str) -> Json:
    """V1 status, V2 readiness and metadata, one V2 inference; returns the V2 request sent."""
    base = base.rstrip("/")
    status = http_json(f"{base}/v1/models/{model}")
    if status.get("ready") not in (True, "True"):
        raise RuntimeError(f"V1 /v1/models/{model} is not ready: {status}")
    print(f"v1   {model}: ready")
    for path in ("/v2/health/ready", f"/v2/models/{model}/ready"):
        http_json(base + path)
    metadata = http_json(f"{base}/v2/models/{model}")
    request = v2_request(metadata)
    answer = http_json(f"{base}/v2/models/{model}/infer", request)
    outputs = answer.get("outputs") or []
    if not outputs:
        raise RuntimeError(f"V2 inference of {model} returned no outputs: {answer}")
    print(f"v2   {model}: ready, {len(request['inputs'])} input(s) -> {', '.join(o['name'] for o in outputs)}")
    return request


def call_grpc(target: str, model: str, request: Json) -> None:
    """V2 gRPC: server and model readiness, then the same inference as over REST."""
    import grpc
    from kserve import InferInput, InferRequest
    from kserve.protocol.grpc import grpc_predict_v2_pb2 as pb
    from kserve.protocol.grpc.grpc_predict_v2_pb2_grpc import GRPCInferenceServiceStub

    with grpc.insecure_channel(target) as channel:
        stub = GRPCInferenceServiceStub(channel)
        if not stub.ServerReady(pb.ServerReadyRequest(), timeout=30).ready:
            raise RuntimeError(f"gRPC server at {target} is not ready")
        if not stub.ModelReady(pb.ModelReadyRequest(name=model), timeout=30).ready:
            raise RuntimeError(f"gRPC model {model} is not ready")
        inputs = [InferInput(i["name"], i["shape"], i["datatype"], i["data"]) for i in request["inputs"]]
        answer = stub.ModelInfer(InferRequest(model_name=model, infer_inputs=inputs).to_grpc(), timeout=60)
        if not answer.outputs:
            raise RuntimeError(f"gRPC inference of {model} returned no outputs")
        print(f"grpc {model}: ready -> {', '.join(o.name for o in answer.outputs)}")


def build_parser() -> argparse.ArgumentParser:
    """The script's options; building it has no side effects."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", required=True, help="model (InferenceService) name")
    parser.add_argument("--http", required=True, help="base URL of the HTTP port")
    parser.add_argument("--grpc", help="host:port of the gRPC port; omit to skip gRPC")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        request = call_rest(args.http, args.model)
        if args.grpc:
            call_grpc(args.grpc, args.model, request)
    except Exception as error:  # report any failure as one line and a non-zero exit
        print(f"FAILED {args.model}: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
