"""What the benchmark sends: one prepared request per (workload, transport), built once."""

from __future__ import annotations

import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import orjson

TRANSPORTS = ("v2-json", "v2-binary", "grpc")


@dataclass(frozen=True)
class Workload:
    """A model and one request's worth of input for it."""

    key: str
    model_dir: Path
    model_name: str
    input_name: str
    batch: np.ndarray  # the request's input tensor, first axis = items
    family: str

    @property
    def items(self) -> int:
        return len(self.batch)

    @property
    def datatype(self) -> str:
        return "BYTES" if self.batch.dtype == object else "FP32"


def request(workload: Workload, transport: str) -> tuple[bytes, list[str]]:
    """The request body (and extra HTTP headers) for ``transport``; gRPC bodies are protobuf bytes."""
    array = workload.batch
    shape = list(array.shape)
    if transport == "v2-json":
        data = [s.decode() for s in array.ravel()] if workload.datatype == "BYTES" else array.ravel().tolist()
        tensor = {"name": workload.input_name, "datatype": workload.datatype, "shape": shape, "data": data}
        return orjson.dumps({"inputs": [tensor]}), []
    raw = _raw(array)
    if transport == "v2-binary":
        head = orjson.dumps(
            {
                "inputs": [
                    {
                        "name": workload.input_name,
                        "datatype": workload.datatype,
                        "shape": shape,
                        "parameters": {"binary_data_size": len(raw)},
                    }
                ],
                "parameters": {"binary_data_output": True},
            }
        )
        return head + raw, ["content-type: application/octet-stream", f"inference-header-content-length: {len(head)}"]
    from kserve.protocol.grpc import grpc_predict_v2_pb2 as pb

    message = pb.ModelInferRequest(model_name=workload.model_name)
    message.inputs.add(name=workload.input_name, datatype=workload.datatype, shape=shape)
    message.raw_input_contents.append(raw)
    return message.SerializeToString(), []


def _raw(array: np.ndarray) -> bytes:
    if array.dtype == object:
        return b"".join(struct.pack("<I", len(s)) + s for s in array.ravel())
    return np.ascontiguousarray(array).tobytes()
